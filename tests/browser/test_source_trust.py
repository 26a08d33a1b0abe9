"""In Chromium: an admin tests a new vCenter before saving it; its self-signed certificate opens a trust dialog
with the SHA-256 fingerprint, "Trust and continue" pins it and connects, and the saved source keeps the pin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.tls import pretty
from inventory.models import Source
from tests.browser.test_roles import sign_in
from tests.conftest import Estate
from tests.peers import Vcsim


def test_an_untrusted_certificate_opens_a_trust_dialog(
    browser: Any, live_server_url: str, estate: Estate, artifacts: Path, vcsim: Vcsim
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    sign_in(page, live_server_url, "alice")
    page.goto(live_server_url + "/sources/new/")
    assert page.is_hidden("[data-field-name=transport]")  # Hyper-V's fields are not a vCenter's
    page.select_option("#id_kind", "hyperv")
    assert page.is_visible("[data-field-name=transport]")
    page.select_option("#id_kind", "vcenter")
    page.fill("#id_name", "vcenter-lab")
    page.fill("#id_address", "127.0.0.1")
    page.fill("#id_port", str(vcsim.port))
    page.fill("#id_username", vcsim.username)
    page.fill("#id_password", vcsim.password)
    page.click("#try-connection")
    dialog = page.wait_for_selector("[role=alertdialog]")
    assert pretty(vcsim.thumbprint()) in dialog.inner_text()
    assert not Source.objects.exists()  # testing saves nothing
    page.screenshot(path=str(artifacts / "admin-source-trust-dialog.png"), full_page=True)
    page.click("text=Trust and continue")
    page.wait_for_selector("#test-result .notice.ok")
    assert page.input_value("#id_thumbprint") == vcsim.thumbprint()
    page.click("form#source-form button[type=submit]")
    page.wait_for_url("**/sources/*/")
    assert Source.objects.get(name="vcenter-lab").thumbprint == vcsim.thumbprint()
    context.close()
