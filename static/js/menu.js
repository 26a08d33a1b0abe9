// On a narrow window the navigation folds behind a menu button.
(function () {
  "use strict";
  const button = document.querySelector("[data-menu]");
  const nav = document.getElementById("main-nav");
  if (!button || !nav) return;
  button.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    button.setAttribute("aria-expanded", open ? "true" : "false");
  });
})();
