// Every <time data-local> the server rendered (in UTC or a given zone, with the zone named)
// is shown again in the reader's own zone, in the same format: "5 Dec 2026, 08:44 CET".
// See connector/datetimes.py. A file, not an inline script, for the Content-Security-Policy.
(function () {
  "use strict";
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function parts(date, options) {
    var out = {};
    new Intl.DateTimeFormat("en-GB", options).formatToParts(date).forEach(function (p) { out[p.type] = p.value; });
    return out;
  }

  function zoneName(date) {
    // The reader's own way of naming their zone (EST, CET, GMT+4).
    var names = [undefined, "en-US", "en-GB"];
    for (var i = 0; i < names.length; i++) {
      try {
        var found = new Intl.DateTimeFormat(names[i], {timeZoneName: "short"}).formatToParts(date)
          .filter(function (p) { return p.type === "timeZoneName"; })[0];
        if (found && !/^GMT[+-]/.test(found.value)) { return found.value; }
        if (i === names.length - 1 && found) { return found.value.replace(/^GMT/, "UTC"); }
      } catch (e) { /* an old browser: try the next */ }
    }
    return "";
  }

  function show(element) {
    var date = new Date(element.getAttribute("datetime"));
    if (isNaN(date.getTime())) { return; }
    var p = parts(date, {day: "numeric", month: "numeric", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
    var text = Number(p.day) + " " + MONTHS[Number(p.month) - 1] + " " + p.year;
    if (element.dataset.local !== "date") { text += ", " + p.hour + ":" + p.minute + " " + zoneName(date); }
    if (!element.title) { element.title = element.textContent; }
    element.textContent = text;
    element.dataset.shown = "local";
  }

  function start() { document.querySelectorAll("time[data-local]").forEach(show); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
