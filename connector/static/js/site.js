// Behaviour shared by every page of the portal (loaded by connector/base.html).
// The Content-Security-Policy refuses inline event handlers, so they are attached here.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  // The organization switcher: choosing one submits its form (a button shows without JavaScript).
  document.querySelectorAll("select[data-submit-on-change]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  // A button that asks first (data-confirm="Question?"): cancelling stops the form.
  document.querySelectorAll("[data-confirm]").forEach(function (element) {
    element.addEventListener("click", function (event) {
      if (!window.confirm(element.dataset.confirm)) { event.preventDefault(); }
    });
  });
});
