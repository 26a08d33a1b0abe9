// A search box above a long multiple select: typing hides the options that do not match (ticked ones stay).
(function () {
  "use strict";
  document.querySelectorAll("select[data-searchable]").forEach((select) => {
    const box = document.createElement("input");
    box.type = "search";
    box.placeholder = "Search machines…";
    box.className = "select-search";
    box.setAttribute("aria-label", "Search the list");
    select.parentNode.insertBefore(box, select);
    box.addEventListener("input", () => {
      const wanted = box.value.trim().toLowerCase();
      Array.from(select.options).forEach((option) => {
        option.hidden = Boolean(wanted) && !option.selected && !option.text.toLowerCase().includes(wanted);
      });
    });
  });
})();
