"""The login page's two ways to learn that a sign-in was verified, raced in a real browser.

The page learns it from its ``/status`` poll (the agent's direct callback verified
the transaction) and from the reply to its own ``POST .../response``. With
latency injected by Playwright routing -- the answers to ``/response`` held 1 s,
to ``/continue`` 2.5 s -- both arrive while the first ``/continue``'s answer (the
issued Response) is still on its way. The page must go to ``/continue`` once, and
the demo SP (python3-saml, strict, single-use request IDs) must receive exactly one
valid Response and sign the user in. Before the fix the page went twice, the second
``/continue`` showed ``saml_login_finished``, and the SP got nothing.

Real IdP under gunicorn, real agent, real demo SP, Debian's Chromium.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from playwright.sync_api import Error as PlaywrightError
from sqlalchemy import create_engine, func, select

from idp_service.platform.models import AuditEvent
from tests.browser.test_saml_browser import browser, stack

pytestmark = pytest.mark.browser
__all__ = ["browser", "stack"]  # fixtures shared with tests/browser/test_saml_browser.py

LATENCY_MS = {"/response": 1000, "/continue": 2500}


def _ok_responses(svc) -> int:
    engine = create_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "saml.response", AuditEvent.outcome == "ok")
            ).scalar_one()
    finally:
        engine.dispose()


def test_slow_response_and_continue_still_give_the_sp_one_response(
    stack, browser, artifacts, request
):
    svc, agent, sp_url = stack
    db = request.node.callspec.params["database_url"]
    page = browser.new_page()
    continues: list[str] = []
    acs_posts: list[dict[str, list[str]]] = []

    def slow(route):
        # The service answers at once (a /continue has issued its Response) and the
        # answer takes its time to reach the page. Waiting here lets the page's other
        # requests go on meanwhile.
        path = "/" + route.request.url.rsplit("/", 1)[-1].split("?", 1)[0]
        answer = route.fetch(max_redirects=0)
        page.wait_for_timeout(LATENCY_MS[path])
        try:
            route.fulfill(response=answer)
        except PlaywrightError:
            pass  # the page navigated away meanwhile: this answer has nowhere to go

    def seen(req):
        if req.url.startswith(svc.url + "/login/") and req.url.endswith("/continue"):
            continues.append(req.method)
        if req.url == sp_url + "/acs" and req.method == "POST":
            acs_posts.append(parse_qs(req.post_data or ""))

    page.route(svc.url + "/login/*/response", slow)
    page.route(svc.url + "/login/*/continue", slow)
    page.on("request", seen)
    try:
        page.goto(sp_url + "/")
        page.click("#sign-in")
        page.wait_for_selector("#signed-in", timeout=20000)
        page.screenshot(path=str(artifacts / f"saml-continue-{db}-signed-in.png"), full_page=True)
        assert page.text_content("#nameid") == "alice@example.com"
        assert page.query_selector("#error") is None
        # One navigation to /continue, one Response at the SP's ACS, one Response issued.
        assert continues == ["GET"]
        assert len(acs_posts) == 1 and len(acs_posts[0]["SAMLResponse"]) == 1
        assert _ok_responses(svc) == 1
        # The Response is a bearer credential: it is in no log.
        saml_response = acs_posts[0]["SAMLResponse"][0]
        assert saml_response[:60] not in svc.log()
    except Exception:
        page.screenshot(path=str(artifacts / f"saml-continue-{db}-failure.png"), full_page=True)
        print("URL:", page.url, "\nPAGE:", page.content()[:3000])
        print("CONTINUES:", continues, "ACS POSTS:", len(acs_posts))
        print("SERVICE LOG:", svc.log()[-3000:], "\nAGENT LOG:", agent.log()[-2000:])
        raise
