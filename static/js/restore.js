// A restore's page: progress, rate and time left from the WebSocket (restore.progress / restore.state for this
// restore), and the page's panel fetched again when its state changes (an approval, a refusal, the end). When
// the socket is down, the panel is fetched every three seconds while the restore is still under way.
(function () {
  "use strict";
  const { size, duration } = window.bulwarkFormat;
  const restoreId = Number(document.getElementById("restore").dataset.restore);
  let lastEvent = 0, first = null;

  function panel() { return document.getElementById("restore"); }
  function field(name, text) {
    const element = panel().querySelector('[data-field="' + name + '"]');
    if (element) element.textContent = text;
  }
  function refresh() {
    fetch(location.href, { headers: { "X-Requested-With": "live" } })
      .then((response) => response.text())
      .then((html) => {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("restore");
        if (fresh) panel().replaceWith(fresh);
      });
  }
  function progress(data) {
    const now = Date.now();
    lastEvent = now;
    if (!data.total) return;
    const bar = document.getElementById("restore-progress");
    if (bar) bar.value = Math.round(1000 * data.done / data.total);
    field("done", size(data.done) + " of " + size(data.total));
    if (first === null) { first = { at: now, done: data.done }; return; }
    const seconds = (now - first.at) / 1000, rate = (data.done - first.done) / Math.max(seconds, 0.001);
    if (seconds > 1 && rate > 0) {
      field("rate", size(rate) + "/s");
      field("eta", duration((data.total - data.done) / rate));
    }
  }
  document.addEventListener("bulwark:event", (event) => {
    const payload = event.detail;
    if (!payload.data || payload.data.restore !== restoreId) return;
    if (payload.type === "restore.progress") progress(payload.data);
    if (payload.type === "restore.state") { lastEvent = Date.now(); refresh(); }
  });
  function poll() {
    if (panel().dataset.active !== "true") return;
    const live = document.querySelector('#live-status[data-state="live"]');
    if (!live || Date.now() - lastEvent > 5000) refresh();
    setTimeout(poll, 3000);
  }
  setTimeout(poll, 3000);
})();
