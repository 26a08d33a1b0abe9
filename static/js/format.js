// Figures in the pages' own words, for scripts that update a page live: sizes (1.5 MB) and durations (the same
// words as the "duration" template filter: 45 s, 3 min, 1 h 12 min, 2 days 4 h).
window.bulwarkFormat = (function () {
  "use strict";
  function size(bytes) {
    if (bytes == null) return "—";
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit ? value.toFixed(1) : value) + " " + units[unit];
  }
  function duration(seconds) {
    const total = Math.max(0, Math.round(seconds));
    if (total < 60) return total + " s";
    let minutes = Math.floor(total / 60);
    if (minutes < 60) return minutes + " min";
    let hours = Math.floor(minutes / 60);
    minutes %= 60;
    if (hours < 48) return minutes ? hours + " h " + minutes + " min" : hours + " h";
    const days = Math.floor(hours / 24);
    hours %= 24;
    return hours ? days + " days " + hours + " h" : days + " days";
  }
  return { size: size, duration: duration };
})();
