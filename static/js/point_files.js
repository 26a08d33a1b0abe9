// The host restore takes the same ticked boxes as the download form.
(function () {
  const restore = document.getElementById("restore-to-host");
  if (!restore) return;
  restore.addEventListener("submit", function () {
    for (const box of document.querySelectorAll("#choose input[name=path]:checked")) {
      const field = document.createElement("input");
      field.type = "hidden";
      field.name = "path";
      field.value = box.value;
      restore.appendChild(field);
    }
  });
})();
