(function () {
  "use strict";
  function person(entry) {
    var li = document.createElement("li");
    li.dataset.participant = entry.participant_id;
    var name = document.createElement("span");
    name.textContent = entry.label;
    var pid = document.createElement("span");
    pid.className = "pid";
    pid.textContent = "…" + entry.participant_id.slice(-4);
    name.appendChild(pid);
    li.appendChild(name);
    return li;
  }

  function fill(list, entries, emptyText, withAdmit, panel) {
    list.replaceChildren();
    if (!entries.length) {
      var empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = emptyText;
      list.appendChild(empty);
      return;
    }
    entries.forEach(function (entry) {
      var li = person(entry);
      if (withAdmit) {
        var button = document.createElement("button");
        button.type = "button";
        button.textContent = "Admit";
        button.addEventListener("click", function () { admit(panel, entry.participant_id, button); });
        li.appendChild(button);
      }
      list.appendChild(li);
    });
  }

  async function admit(panel, participantId, button) {
    button.disabled = true;
    button.textContent = "Admitting…";
    var problem = panel.querySelector("[data-problem]");
    try {
      var response = await fetch(panel.dataset.admitUrl, {
        method: "POST",
        headers: {"Accept": "application/json"},
        body: new URLSearchParams({participant_id: participantId}),
        credentials: "omit"
      });
      if (!response.ok) {
        var body = await response.json().catch(function () { return null; });
        problem.textContent = (body && body.error && body.error.message) || ("Could not admit (HTTP " + response.status + ").");
        problem.dataset.kind = "admit";
        problem.hidden = false;
      } else {
        problem.hidden = true;
      }
    } catch (error) {
      problem.textContent = "Could not reach the connector. Try again.";
      problem.dataset.kind = "admit";
      problem.hidden = false;
    }
    refresh(panel);
  }

  async function refresh(panel) {
    var problem = panel.querySelector("[data-problem]");
    try {
      var response = await fetch(panel.dataset.statusUrl, {cache: "no-store", credentials: "omit", headers: {"Accept": "application/json"}});
      var body = await response.json();
      if (!response.ok) {
        problem.textContent = (body.error && body.error.message) || "This status page no longer works.";
        problem.dataset.kind = "refused";
        problem.hidden = false;
        return false;
      }
      fill(panel.querySelector('[data-list="in_lobby"]'), body.in_lobby, "Nobody is waiting.", true, panel);
      fill(panel.querySelector('[data-list="connected"]'), body.connected, "Nobody is connected.", false, panel);
      panel.querySelector("[data-visit-state]").textContent = body.visit_state_label;
      panel.querySelector("[data-summary]").textContent = body.summary;
      panel.querySelector("[data-updated]").textContent = "· updated " + new Date().toLocaleTimeString();
      if (problem.dataset.kind === "connection") { problem.hidden = true; }
    } catch (error) {
      problem.textContent = "Connection lost. Trying again…";
      problem.dataset.kind = "connection";
      problem.hidden = false;
    }
    return true;
  }

  document.querySelectorAll(".live-panel").forEach(function (panel) {
    var pollMs = parseInt(panel.dataset.pollMs, 10) || 3000;
    async function loop() {
      if (await refresh(panel)) { window.setTimeout(loop, pollMs); }
    }
    loop();
  });
})();
