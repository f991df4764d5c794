(function () {
  "use strict";
  var root = document.getElementById("lobby");
  var statusUrl = root.dataset.statusUrl;
  var pollMs = parseInt(root.dataset.pollMs, 10) || 3000;
  var message = document.getElementById("lobby-message");
  var dot = document.getElementById("lobby-state");
  var visitState = document.getElementById("lobby-visit-state");

  async function poll() {
    try {
      var response = await fetch(statusUrl, {cache: "no-store", credentials: "omit", headers: {"Accept": "application/json"}});
      var body = await response.json();
      if (!response.ok) {
        // Expired or withdrawn link: say so and stop asking.
        message.textContent = (body.error && body.error.message) || "This link no longer works.";
        dot.dataset.state = "refused";
        return;
      }
      message.textContent = body.message;
      dot.dataset.state = body.state;
      visitState.textContent = body.visit_state_label;
      visitState.dataset.state = body.visit_state;
      if (body.state === "admitted" && body.join_url) {
        window.location.assign(body.join_url);  // same window: no pop-up to block
        return;
      }
    } catch (error) {
      message.textContent = "Connection lost. Trying again…";
    }
    window.setTimeout(poll, pollMs);
  }
  window.setTimeout(poll, dot.dataset.state === "admitted" ? 0 : pollMs);
})();
