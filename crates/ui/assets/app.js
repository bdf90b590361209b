// snap ui: the only script. It follows a running job's progress over
// server-sent events and reloads the page when the job ends (the server
// renders the result). Every page works without it, save the live bar.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var job = document.getElementById("job");
  if (!job || !window.EventSource) { return; }
  var bar = document.getElementById("job-bar");
  var counts = document.getElementById("job-counts");
  var current = document.getElementById("job-current");
  var state = document.getElementById("job-state");
  var events = new EventSource(job.getAttribute("data-events"));
  function size(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }
  function show(p) {
    if (p.total_bytes > 0) {
      bar.value = Math.min(100, Math.floor(100 * p.bytes / p.total_bytes));
    } else if (p.total_items > 0) {
      bar.value = Math.min(100, Math.floor(100 * p.items / p.total_items));
    }
    counts.textContent = p.items + (p.total_items ? " of " + p.total_items : "") + " items, " +
      size(p.bytes) + (p.total_bytes ? " of " + size(p.total_bytes) : "") +
      (p.warnings ? ", " + p.warnings + " warnings" : "");
    current.textContent = p.current || "";
  }
  events.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
  events.addEventListener("done", function (e) {
    show(JSON.parse(e.data));
    events.close();
    state.textContent = "Finished; loading the result…";
    window.location.reload();
  });
  events.onerror = function () {
    state.textContent = "Lost the connection to snap ui; reload to see how far it is.";
    events.close();
  };
});
