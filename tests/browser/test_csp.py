"""The Content-Security-Policy: an injected inline script never runs, while the console's own scripts do."""

from __future__ import annotations

from typing import Any

from tests.browser.test_roles import sign_in
from tests.conftest import Estate

INJECTED = b"<script>window.injected = true;</script><img src=x onerror='window.injectedAttr = true'>"


def test_an_injected_inline_script_is_blocked(browser: Any, live_server_url: str, estate: Estate) -> None:
    context = browser.new_context()
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    sign_in(page, live_server_url, estate.admin.username)

    def inject(route: Any) -> None:
        response = route.fetch()  # the console's real answer, with its real headers
        body = response.body().replace(b"</body>", INJECTED + b"</body>")
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        route.fulfill(status=response.status, headers=headers, body=body)

    page.route(live_server_url + "/machines/", inject)
    page.goto(live_server_url + "/machines/")
    page.wait_for_function("typeof htmx !== 'undefined'")  # our own scripts still run
    assert page.evaluate("window.injected === undefined && window.injectedAttr === undefined")
    assert violations, "the browser reported no blocked inline script"
    context.close()


def test_every_page_sends_the_policy(client_for, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    for path in ("/login/", "/", "/machines/", "/api/machines/", "/api/docs/"):
        answer = client_for("admin").get(path)
        policy = answer["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
