// The source form: Hyper-V's own fields show only for a Hyper-V source, and "Trust and continue" pins the
// fingerprint the server presented, then tests again.
(function () {
  "use strict";
  const form = document.getElementById("source-form");
  if (!form) return;
  const kind = form.querySelector('[name="kind"]');
  const hypervOnly = ["transport", "https"];
  const vsphereOnly = ["watch"];
  function fitKind() {
    const hyperv = kind && kind.value === "hyperv";
    hypervOnly.forEach((name) => { const row = form.querySelector('[data-field-name="' + name + '"]'); if (row) row.hidden = !hyperv; });
    vsphereOnly.forEach((name) => { const row = form.querySelector('[data-field-name="' + name + '"]'); if (row) row.hidden = hyperv; });
  }
  if (kind) { kind.addEventListener("change", fitKind); fitKind(); }
  document.addEventListener("click", (event) => {
    const trust = event.target.closest("[data-trust]");
    const dismiss = event.target.closest("[data-dismiss]");
    if (dismiss) { document.getElementById("test-result").textContent = ""; return; }
    if (!trust) return;
    const dialog = trust.closest("[data-fingerprint]");
    form.querySelector('[name="thumbprint"]').value = dialog.dataset.fingerprint;
    document.getElementById("try-connection").click();
  });
})();
