// Visit pages say they are still open: every element with data-heartbeat-url POSTs to it every
// data-heartbeat-ms (~15 s). The server marks as left whoever stops (connector/services/presence.py).
// A meeting page (data-event-url, data-sig) that hears it was marked as left joins again, unless the
// visit was ended (reply.ended): then it stops and fires a `visit-ended` event for the page to say so.
// A click on [data-heartbeat-stop] (the Leave button) stops it.
(function () {
  "use strict";

  function uuid() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  document.querySelectorAll("[data-heartbeat-url]").forEach(function (el) {
    var every = parseInt(el.dataset.heartbeatMs, 10) || 15000;
    var stopped = false;
    var seat = el.dataset.sig ? {role: el.dataset.role, participant_id: el.dataset.participant, sig: el.dataset.sig} : null;

    function rejoin() {
      var body = Object.assign({kind: "joined", event_id: uuid()}, seat);
      fetch(el.dataset.eventUrl, {method: "POST", body: JSON.stringify(body), credentials: "omit"}).catch(function () {});
    }

    async function beat() {
      if (stopped) { return; }
      try {
        var response = await fetch(el.dataset.heartbeatUrl, {
          method: "POST",
          body: seat ? JSON.stringify(seat) : "",
          credentials: "omit",
          headers: {"Accept": "application/json"}
        });
        if (response.ok) {
          var reply = await response.json();
          el.dataset.present = reply.present ? "yes" : "no";
          if (reply.ended) {
            // The visit was ended for everyone: joining again would start it anew.
            stopped = true;
            el.dataset.ended = "yes";
            el.dispatchEvent(new CustomEvent("visit-ended", {bubbles: true}));
            return;
          }
          if (!reply.present && seat && el.dataset.eventUrl && !stopped) { rejoin(); }
        } else if (response.status === 403 || response.status === 404 || response.status === 410) {
          return;  // the link no longer works: the page says so through its status poll
        }
      } catch (error) { /* offline for a moment: the next beat tries again */ }
      window.setTimeout(beat, every);
    }

    document.querySelectorAll("[data-heartbeat-stop]").forEach(function (button) {
      button.addEventListener("click", function () { stopped = true; });
    });
    // Loading the page counted as the first heartbeat.
    window.setTimeout(beat, every);
  });
})();
