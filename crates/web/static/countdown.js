// The order page's countdown. The server renders the seconds left by its own clock; this counts
// down from that number with the browser's monotonic clock, so a wrong wall clock does no harm.
(function () {
  "use strict";
  var el = document.getElementById("countdown");
  if (!el) return;
  var total = parseInt(el.getAttribute("data-seconds"), 10);
  if (!(total >= 0)) return;
  var start = performance.now();
  function show(left) {
    var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    var ss = (s < 10 ? "0" : "") + s;
    el.textContent = h > 0 ? h + ":" + (m < 10 ? "0" : "") + m + ":" + ss : m + ":" + ss;
  }
  function tick() {
    var left = Math.max(0, total - Math.floor((performance.now() - start) / 1000));
    show(left);
    if (left > 0) {
      setTimeout(tick, 250);
      return;
    }
    var pay = document.getElementById("pay");
    if (pay) pay.disabled = true;
    var note = document.getElementById("expired-now");
    if (note) note.classList.remove("hidden");
    // Let the server say what became of the order.
    if (total > 0) setTimeout(function () { window.location.reload(); }, 1500);
  }
  tick();
})();
