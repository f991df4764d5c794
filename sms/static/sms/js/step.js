(function () {
  const rows = Array.from(document.querySelectorAll("#sms-numbers tr[data-number]"));
  function poll() {
    let pending = 0;
    rows.forEach(function (row) {
      const state = row.querySelector(".number-state");
      if (!/state-(requested|provisioning)/.test(state.className)) return;
      pending++;
      fetch(row.dataset.statusUrl, {credentials: "same-origin"}).then(r => r.json()).then(function (data) {
        state.className = "number-state state-" + data.state;
        state.textContent = data.state_display;
        row.querySelector(".number").textContent = data.number || "—";
        row.querySelector(".failure").textContent = data.failure_reason || "";
        if (data.state === "active") window.location.reload();
      });
    });
    if (pending) setTimeout(poll, 2000);
  }
  setTimeout(poll, 1000);
})();
