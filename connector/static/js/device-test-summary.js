// The device test's summary: once the camera, microphone and speaker each have an outcome,
// the start button and the summary line say how it went, instead of "Checking your devices".
// Watches the outcome the page's checks write (data-outcome), so it works with any version
// of the checks' own script. A file, not an inline script, for the Content-Security-Policy.
(function () {
  "use strict";
  var CHECKS = ["camera", "microphone", "speaker"];
  var list = document.getElementById("dt-checks");
  if (!list) { return; }

  function outcome(check) {
    var item = list.querySelector('[data-check="' + check + '"]');
    return item ? item.dataset.outcome || "" : "";
  }

  function update() {
    var outcomes = CHECKS.map(outcome);
    if (outcomes.some(function (o) { return !o; })) { return; }
    var failed = CHECKS.filter(function (c, i) { return outcomes[i] === "failed"; });
    var skipped = CHECKS.filter(function (c, i) { return outcomes[i] === "skipped"; });
    var text;
    if (!failed.length && !skipped.length) {
      text = "All checks passed: you are ready for your visit.";
    } else if (!failed.length) {
      text = "Done. You skipped: " + skipped.join(", ") + ".";
    } else {
      text = "Not working: " + failed.join(", ") + ". See the hints above; you can still join the visit.";
    }
    var button = document.getElementById("dt-start");
    var label = failed.length ? "Checks done" : "All checks passed";
    if (button && button.textContent !== label) {
      button.textContent = label;
      button.dataset.done = "1";
    }
    var summary = document.getElementById("dt-summary");
    if (summary && summary.textContent !== text) {
      summary.textContent = text;
      summary.dataset.summary = failed.length ? "failed" : "ok";
    }
  }

  new MutationObserver(update).observe(list, {attributes: true, subtree: true, attributeFilter: ["data-outcome"]});
  // The checks' script may relabel the button after the last outcome ("Checking your devices").
  var start = document.getElementById("dt-start");
  if (start) { new MutationObserver(update).observe(start, {childList: true, characterData: true, subtree: true}); }
  update();
})();
