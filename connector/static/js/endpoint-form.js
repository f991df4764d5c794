// Portal forms (configure, members): for a new endpoint of an organization with none yet, the browser's
// time zone proposed instead of UTC. (The confirmation before a [data-confirm] button is site.js's, on every page.)
(function () {
  "use strict";
  document.querySelectorAll('select[data-browser-default="true"]').forEach(function (select) {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (error) { return; }
    if (zone && Array.prototype.some.call(select.options, function (o) { return o.value === zone; })) {
      select.value = zone;
    }
  });
})();
