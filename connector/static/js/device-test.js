(function () {
  "use strict";
  var root = document.getElementById("device-test");
  var resultsUrl = root.dataset.resultsUrl || "";
  var continueUrl = root.dataset.continueUrl || "";
  var pingUrl = root.dataset.pingUrl;
  var LABELS = {ok: "Works", failed: "Not working", skipped: "Skipped"};
  var results = {camera: null, microphone: null, speaker: null};
  var connectionMs = null;
  var streams = [];
  var audioContext = null;
  // One ID per visit to this page: a retried POST is the same event on the server.
  var eventId = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : uuid4();

  function uuid4() {
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function item(check) { return document.querySelector('#dt-checks [data-check="' + check + '"]'); }

  function mark(check, outcome, hint) {
    results[check] = outcome;
    var li = item(check);
    var badge = li.querySelector("[data-result]");
    badge.textContent = LABELS[outcome];
    badge.className = "badge " + (outcome === "ok" ? "ok" : outcome === "failed" ? "bad" : "warn");
    li.dataset.outcome = outcome;
    if (hint) { li.querySelector("[data-hint]").textContent = hint; }
  }

  function audio() {
    if (!audioContext) {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) { return null; }
      audioContext = new Ctx();
    }
    if (audioContext.state === "suspended") { audioContext.resume(); }
    return audioContext;
  }

  function problemText(error) {
    var name = error && error.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "Your browser did not allow this page to use it. Allow the camera and microphone in the address bar, then press Start again.";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") { return "No such device was found."; }
    if (name === "NotReadableError") { return "Another program is using it. Close that program and press Start again."; }
    return "It could not be started (" + (name || "unknown error") + ").";
  }

  function startCamera(stream) {
    var video = document.getElementById("dt-video");
    video.srcObject = stream;
    var done = false;
    function ready() {
      if (!done && video.videoWidth > 0) { done = true; if (!results.camera) { mark("camera", "ok", "We can see your camera's picture."); } }
    }
    video.addEventListener("loadeddata", ready);
    video.addEventListener("playing", ready);
    var play = video.play();
    if (play && play.catch) { play.catch(function () {}); }
  }

  function startMicrophone(stream) {
    var ctx = audio();
    if (!ctx) { mark("microphone", "failed", "This browser cannot measure sound."); return; }
    var analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    ctx.createMediaStreamSource(stream).connect(analyser);
    var samples = new Float32Array(analyser.fftSize);
    var meter = document.getElementById("dt-level");
    var loudFrames = 0;
    function tick() {
      analyser.getFloatTimeDomainData(samples);
      var sum = 0;
      for (var i = 0; i < samples.length; i++) { sum += samples[i] * samples[i]; }
      var rms = Math.sqrt(sum / samples.length);
      meter.value = Math.min(1, rms * 5);
      if (rms > 0.02) { loudFrames++; }
      if (loudFrames === 5 && !results.microphone) { mark("microphone", "ok", "We can hear your microphone."); }
      if (streams.length) { requestAnimationFrame(tick); }
    }
    tick();
  }

  async function media(constraints) {
    var stream = await navigator.mediaDevices.getUserMedia(constraints);
    streams.push(stream);
    return stream;
  }

  async function start() {
    var button = document.getElementById("dt-start");
    button.disabled = true;
    button.textContent = "Checking…";
    audio();  // created during the click, so the browser lets it make and hear sound
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      var why = "This browser (or a page not served over HTTPS) cannot use a camera or microphone.";
      mark("camera", "failed", why); mark("microphone", "failed", why);
      return;
    }
    try {
      var both = await media({video: true, audio: true});
      startCamera(new MediaStream(both.getVideoTracks()));
      startMicrophone(new MediaStream(both.getAudioTracks()));
    } catch (error) {
      // Try each device on its own, so one missing device does not fail the other.
      try { startCamera(await media({video: true})); } catch (e) { mark("camera", "failed", "Camera: " + problemText(e)); }
      try { startMicrophone(await media({audio: true})); } catch (e) { mark("microphone", "failed", "Microphone: " + problemText(e)); }
    }
    button.textContent = "Checking your devices";
  }

  function playTone() {
    var ctx = audio();
    if (!ctx) { mark("speaker", "failed", "This browser cannot play sound."); return; }
    var t = ctx.currentTime;
    var osc = ctx.createOscillator();
    var gain = ctx.createGain();
    osc.type = "sine";
    osc.frequency.setValueAtTime(660, t);
    osc.frequency.setValueAtTime(880, t + 0.4);
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.3, t + 0.05);
    gain.gain.setValueAtTime(0.3, t + 0.75);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.9);
    osc.connect(gain);
    gain.connect(ctx.destination);
    osc.start(t);
    osc.stop(t + 0.95);
  }

  async function measureConnection() {
    var times = [];
    for (var i = 0; i < 5; i++) {
      var started = performance.now();
      var response = await fetch(pingUrl + "?n=" + i + "-" + Date.now(), {cache: "no-store", credentials: "omit"});
      if (response.status !== 204) { throw new Error("HTTP " + response.status); }
      times.push(performance.now() - started);
    }
    times.sort(function (a, b) { return a - b; });
    connectionMs = Math.max(0, Math.round(times[Math.floor(times.length / 2)]));
    var li = item("connection");
    var badge = li.querySelector("[data-result]");
    var good = connectionMs < 300;
    badge.textContent = good ? "Good" : "Slow";
    badge.className = "badge " + (good ? "ok" : "warn");
    li.dataset.outcome = good ? "ok" : "slow";
    document.getElementById("dt-connection").textContent = "Round trip " + connectionMs + " ms" +
      (good ? "." : ": video may stutter. A stronger Wi-Fi signal or a wired connection helps.");
    return connectionMs;
  }

  var connection = measureConnection().catch(function () {
    var li = item("connection");
    li.querySelector("[data-result]").textContent = "Failed";
    li.querySelector("[data-result]").className = "badge bad";
    li.dataset.outcome = "failed";
    document.getElementById("dt-connection").textContent = "The visit service could not be reached. Check your internet connection.";
    return null;
  });

  function stopMedia() {
    streams.forEach(function (s) { s.getTracks().forEach(function (t) { t.stop(); }); });
    streams = [];
  }

  async function submitAndContinue() {
    var button = document.getElementById("dt-continue");
    var saving = document.getElementById("dt-saving");
    button.disabled = true;
    saving.textContent = "Saving your results…";
    var ms = await connection;
    if (ms !== null) {
      var body = {
        event_id: eventId,
        camera: results.camera || "skipped",
        microphone: results.microphone || "skipped",
        speaker: results.speaker || "skipped",
        connection_ms: ms
      };
      try {
        var response = await fetch(resultsUrl, {
          method: "POST",
          headers: {"Content-Type": "application/json", "Accept": "application/json"},
          body: JSON.stringify(body),
          credentials: "omit"
        });
        // Not saved (an expired or withdrawn link): the waiting room explains what to do.
        if (!response.ok) { saving.textContent = "Your results could not be saved; continuing anyway."; }
      } catch (error) {
        saving.textContent = "Your results could not be saved; continuing anyway.";
      }
    }
    stopMedia();
    window.location.assign(continueUrl);
  }

  document.getElementById("dt-start").addEventListener("click", start);
  document.getElementById("dt-tone").addEventListener("click", playTone);
  document.querySelectorAll("#dt-checks [data-mark]").forEach(function (button) {
    button.addEventListener("click", function () {
      mark(button.closest("[data-check]").dataset.check, button.dataset.mark);
    });
  });
  if (resultsUrl) { document.getElementById("dt-continue").addEventListener("click", submitAndContinue); }
  window.addEventListener("pagehide", stopMedia);
})();
