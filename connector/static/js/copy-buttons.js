// Copy buttons: <button type="button" class="copy" data-copy="text to copy">Copy</button>.
// A file, not an inline script, for the Content-Security-Policy. EHR frames often lack
// clipboard permission, so a hidden textarea is the fallback.
(function () {
  "use strict";
  function copied(button) {
    var label = button.textContent;
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = label; }, 1500);
  }
  function fallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } finally { area.remove(); }
  }
  function bind(button) {
    if (button.dataset.copyBound) { return; }
    button.dataset.copyBound = "1";
    button.addEventListener("click", function () {
      var text = button.dataset.copy;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { copied(button); }, function () { fallback(text); copied(button); });
      } else {
        fallback(text);
        copied(button);
      }
    });
  }
  function start() { document.querySelectorAll("button.copy[data-copy]").forEach(bind); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
