// Poll the status of endpoints being validated, so the page shows progress without reloads.
(function () {
  const rows = Array.from(document.querySelectorAll("#endpoints tr[data-endpoint]"));
  function poll() {
    let pending = 0;
    rows.forEach(function (row) {
      const status = row.querySelector(".status");
      if (!status.classList.contains("status-validating")) return;
      pending++;
      fetch(row.dataset.statusUrl, {credentials: "same-origin"}).then(r => r.json()).then(function (data) {
        status.className = "status status-" + data.status;
        status.textContent = data.status_display;
        row.querySelector(".step").textContent = data.status === "validating" ? (data.step || "") : "";
        const msg = row.querySelector(".validation-message");
        msg.textContent = data.message || "";
        msg.className = "validation-message " + (data.ok === false ? "errorlist" : (data.code === "ok_with_gaps" ? "warning" : "muted"));
      });
    });
    if (pending) setTimeout(poll, 1500);
  }
  setTimeout(poll, 800);
})();
