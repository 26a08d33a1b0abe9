// The machine list: "tick all" and a live count of the ticked machines for the bulk actions.
(function () {
  "use strict";
  const form = document.getElementById("bulk");
  if (!form) return;
  const boxes = () => Array.from(document.querySelectorAll('input[name="machines"]'));
  const count = document.getElementById("bulk-count");
  function update() {
    const ticked = boxes().filter((box) => box.checked).length;
    count.textContent = ticked ? ticked + " ticked:" : "Tick machines, then:";
  }
  const all = document.getElementById("tick-all");
  if (all) all.addEventListener("change", () => { boxes().forEach((box) => { box.checked = all.checked; }); update(); });
  document.addEventListener("change", (event) => { if (event.target.name === "machines") update(); });
})();
