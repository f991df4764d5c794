(function () {
  "use strict";
  var root = document.getElementById("demo-meeting");
  var me = {role: root.dataset.role, participant_id: root.dataset.participant, sig: root.dataset.sig};
  var pollMs = parseInt(root.dataset.pollMs, 10) || 3000;
  var status = document.getElementById("meeting-status");
  var stream = null;
  var left = false;

  function uuid() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }
  // One ID per event of this page load: a beacon sent twice is stored once.
  var joinedId = uuid();
  var leftId = uuid();

  function send(kind, eventId) {
    var body = JSON.stringify({kind: kind, event_id: eventId, role: me.role, participant_id: me.participant_id, sig: me.sig});
    // A string body goes as text/plain, which sendBeacon may send without a preflight.
    if (navigator.sendBeacon && navigator.sendBeacon(root.dataset.eventUrl, body)) { return; }
    fetch(root.dataset.eventUrl, {method: "POST", body: body, keepalive: true, credentials: "omit"}).catch(function () {});
  }

  function leave() {
    if (left) { return; }
    left = true;
    send("left", leftId);
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); }
  }

  async function participants() {
    try {
      var response = await fetch(root.dataset.statusUrl, {cache: "no-store", credentials: "omit", headers: {"Accept": "application/json"}});
      if (!response.ok) { return; }
      var body = await response.json();
      var list = document.getElementById("meeting-participants");
      list.replaceChildren();
      // The status line comes from the same list, so the two never disagree.
      if (!left) {
        status.textContent = body.participants.some(function (entry) { return entry.you; }) ? "You are connected." : "Joining…";
      }
      if (!body.participants.length) {
        var empty = document.createElement("li");
        empty.className = "empty";
        empty.textContent = "Nobody is connected.";
        list.appendChild(empty);
      }
      body.participants.forEach(function (entry) {
        var li = document.createElement("li");
        li.dataset.participant = entry.participant_id;
        li.dataset.role = entry.role;
        li.textContent = entry.label + (entry.you ? " (you)" : "");
        list.appendChild(li);
      });
    } catch (error) { /* next round */ }
  }

  async function loop() { await participants(); window.setTimeout(loop, pollMs); }

  async function camera() {
    var note = document.getElementById("meeting-camera");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { note.textContent = "No camera available in this browser."; return; }
    try {
      stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
      if (left) { stream.getTracks().forEach(function (t) { t.stop(); }); return; }
      document.getElementById("meeting-video").srcObject = stream;
      note.textContent = "This is your camera (only you see it in the demo).";
    } catch (error) {
      note.textContent = "Camera off (" + (error.name || "not available") + "). You are still in the meeting.";
    }
  }

  send("joined", joinedId);
  status.textContent = "Joining…";
  loop();
  camera();
  document.getElementById("meeting-leave").addEventListener("click", function () {
    leave();
    status.textContent = "You left the meeting.";
    document.getElementById("meeting-leave").hidden = true;
    var rejoin = document.getElementById("meeting-rejoin");
    rejoin.href = window.location.href;
    rejoin.hidden = false;
    window.setTimeout(participants, 500);
  });
  window.addEventListener("pagehide", leave);
  // The visit was ended for everyone (heartbeat.js hears it): say so, and do not join again.
  root.addEventListener("visit-ended", function () {
    left = true;
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); }
    status.textContent = "The visit has ended. You can close this page.";
    document.getElementById("meeting-leave").hidden = true;
  });
})();
