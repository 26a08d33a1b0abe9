// Live updates over /ws/events/: keeps a status dot honest, feeds the activity list and shows toasts.
// The server decides what this socket may receive; this script only displays it.
(function () {
  "use strict";
  const status = document.getElementById("live-status");
  let delay = 1000;

  function setState(state, title) {
    if (!status) return;
    status.dataset.state = state;
    status.title = "Live updates: " + title;
    status.querySelector(".live-label").textContent = state === "live" ? "live" : title;
  }

  function toast(text) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = "toast";
    item.textContent = text;
    box.appendChild(item);
    setTimeout(() => item.remove(), 6000);
  }

  function onAudit(data) {
    const list = document.getElementById("activity");
    if (!list) return;
    const empty = list.querySelector("[data-empty]");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.className = "fresh";
    const action = document.createElement("span");
    action.className = "action";
    action.textContent = data.action;
    const who = document.createElement("span");
    who.className = "muted";
    who.textContent = " by " + (data.actor || "system") + " · just now";
    item.append(action, " " + (data.target || "") + " ", who);
    list.prepend(item);
    while (list.children.length > 8) list.lastElementChild.remove();
  }

  // A source's page: the running discovery's phase live; the run table refreshes when a run ends.
  function onDiscovery(data, finished) {
    const panel = document.getElementById("discovery-runs");
    if (!panel || String(data.source) !== panel.dataset.source) return;
    const badge = panel.querySelector('tr[data-run="' + data.run + '"] [data-phase]');
    if (badge && data.phase) {
      const total = data.total ? " (" + data.done + "/" + data.total + ")" : "";
      badge.textContent = data.phase + total;
    }
    if (finished || !badge) {
      fetch(location.href, { headers: { "X-Requested-With": "live" } })
        .then((response) => response.text())
        .then((html) => {
          const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("discovery-runs");
          if (fresh) panel.replaceWith(fresh);
        });
      if (finished) toast("Discovery " + data.state + (data.error ? ": " + data.error : ""));
    }
  }

  const handlers = {
    "welcome": () => setState("live", "live"),
    "audit.recorded": onAudit,
    "machine.changed": (data) => toast("Machine " + (data.name || data.machine) + " changed"),
    "machine.discovered": (data) => toast("New machine " + (data.name || data.machine)),
    "alert.raised": (data) => toast((data.severity === "critical" ? "Alert: " : "") + data.message),
    "discovery.progress": (data) => onDiscovery(data, false),
    "discovery.state": (data) => onDiscovery(data, data.state === "succeeded" || data.state === "failed"),
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/events/");
    socket.addEventListener("open", () => { delay = 1000; });
    socket.addEventListener("message", (message) => {
      let payload;
      try { payload = JSON.parse(message.data); } catch (error) { return; }
      const handler = handlers[payload.type];
      if (handler) handler(payload.data || {});
      document.dispatchEvent(new CustomEvent("bulwark:event", { detail: payload }));
    });
    socket.addEventListener("close", () => {
      setState("offline", "reconnecting");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }

  window.addEventListener("DOMContentLoaded", connect);
})();
