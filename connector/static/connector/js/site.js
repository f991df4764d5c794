// Behaviour shared by every page of the portal (loaded by connector/base.html).
// The Content-Security-Policy refuses inline event handlers, so they are attached here.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  // The organization switcher: choosing one submits its form (a button shows without JavaScript).
  document.querySelectorAll("select[data-submit-on-change]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
});
