// A run's page: progress from the WebSocket (run.progress / run.state for this run); when the socket is down,
// the same figures by polling the run's status URL every two seconds.
(function () {
  "use strict";
  const panel = document.getElementById("run");
  if (!panel) return;
  const runId = Number(panel.dataset.run);
  let lastEvent = 0;

  const { size, duration } = window.bulwarkFormat;
  function field(name, text) {
    const element = panel.querySelector('[data-field="' + name + '"]');
    if (element) element.textContent = text;
    return element;
  }
  function show(data) {
    lastEvent = Date.now();
    if (data.total) {
      document.getElementById("run-progress").value = Math.round(1000 * data.done / data.total);
      field("done", size(data.done) + " of " + size(data.total));
    }
    if (data.phase) field("phase", data.phase);
    if (data.rate != null) field("rate", data.rate ? size(data.rate) + "/s" : "—");
    if ("eta" in data) field("eta", data.eta != null ? duration(data.eta) : "—");
    if (data.disk) field("disk", data.disk);
    if (data.new != null) field("new", size(data.new));
    if (data.stored != null) field("stored", size(data.stored));
    if (data.state) {
      const badge = field("state", data.state);
      if (badge) badge.className = "badge " + ({ committed: "ok", failed: "bad", cancelled: "" }[data.state] ?? "live");
      panel.dataset.state = data.state;
      if (["committed", "failed", "cancelled"].includes(data.state)) {
        panel.dataset.active = "false";
        if (data.state === "committed") document.getElementById("run-progress").value = 1000;
        refresh();
      }
    }
    if (data.error) { const error = field("error", data.error); if (error) error.hidden = false; }
  }
  // Once the run ends, the page's server-rendered parts (times, totals, the cancel button) are fetched again.
  function refresh() {
    fetch(location.href, { headers: { "X-Requested-With": "live" } })
      .then((response) => response.text())
      .then((html) => {
        const fresh = new DOMParser().parseFromString(html, "text/html");
        for (const selector of [".page-head", "#run"]) {
          const now = document.querySelector(selector), then = fresh.querySelector(selector);
          if (now && then) now.replaceWith(then);
        }
      });
  }

  document.addEventListener("bulwark:event", (event) => {
    const payload = event.detail;
    if ((payload.type === "run.progress" || payload.type === "run.state") && payload.data && payload.data.run === runId) {
      show(payload.data);
    }
  });
  function poll() {
    if (panel.dataset.active !== "true") return;
    const live = document.querySelector('#live-status[data-state="live"]');
    if (!live || Date.now() - lastEvent > 5000) {
      fetch(panel.dataset.statusUrl, { headers: { Accept: "application/json" } })
        .then((response) => response.ok ? response.json() : null)
        .then((data) => { if (data) show(data); });
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
})();
