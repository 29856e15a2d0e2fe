"""An AuthnRequest on the HTTP-POST binding must not replace the browser's session cookie.

An SP's auto-POST form is a cross-site POST: the browser sends no ``SameSite=Lax``
cookie with it, but stores a cookie the answer sets. If that answer set the session
cookie, it would hold only the new sign-in, and the browser would lose every other
sign-in it had open (another tab: 404 ``login_unknown``) and its console session.
The Flask test client sends every cookie, so the cross-site POST is sent here from a
client without cookies, and what it sets is stored in the browser, as a browser does.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64

from tests.saml.test_saml_login import SP, enroll
from tests.saml.test_saml_login import idp as idp  # noqa: F401 - the fixture
from tests.saml_support import FlaskClient, authn_request_xml, posted_form, redirect_query

COOKIE = "devicetrust_session"


def _cross_site_post(app, browser: FlaskClient, data: dict[str, str]):
    """POST /saml/sso as a browser does from another site: no Lax cookie goes, any set stays."""
    resp = FlaskClient(app).c.post("/saml/sso", data=data)
    for header in resp.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        browser.c.set_cookie(name, rest.split(";", 1)[0], domain="localhost")
    return resp


def test_a_post_binding_request_keeps_the_other_tabs_sign_in(idp):
    browser = FlaskClient(idp)
    device = enroll(idp, browser, "tabs@example.com")
    first = browser.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP), "one"))
    first_txn = first.headers["Location"].rsplit("/", 1)[-1]
    assert browser.get(f"/login/{first_txn}/status").status_code == 200

    xml = authn_request_xml(issuer=SP)
    posted = _cross_site_post(
        idp, browser, {"SAMLRequest": base64.b64encode(xml).decode(), "RelayState": "two"}
    )
    assert posted.status_code == 303
    location = posted.headers["Location"]
    second_txn = location.split("?", 1)[0].rsplit("/", 1)[-1]
    landed = browser.get(location)  # a same-site GET: the cookie goes
    if landed.status_code == 303:
        assert landed.headers["Location"] == f"/login/{second_txn}"  # no claim left in view
        landed = browser.get(landed.headers["Location"])
    assert landed.status_code == 200

    # The first tab's sign-in is still this browser's, and both finish.
    for txn, relay_state in ((first_txn, "one"), (second_txn, "two")):
        assert browser.get(f"/login/{txn}/status").status_code == 200
        token = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
        answered = browser.post(f"/login/{txn}/response", content=device.answer(token))
        assert answered.json()["status"] == "verified"
        done = browser.get(f"/login/{txn}/continue")
        assert done.status_code == 200 and posted_form(done.text).relay_state == relay_state


def test_the_claim_link_works_only_for_its_own_sign_in(idp):
    browser = FlaskClient(idp)
    xml = authn_request_xml(issuer=SP)
    posted = _cross_site_post(idp, browser, {"SAMLRequest": base64.b64encode(xml).decode()})
    location = posted.headers["Location"]
    txn = location.split("?", 1)[0].rsplit("/", 1)[-1]
    other = FlaskClient(idp)
    forged = other.get(location.replace(txn, txn[:-1] + ("A" if txn[-1] != "A" else "B")))
    assert forged.status_code == 404
    assert other.get(f"/login/{txn}?claim=" + "0" * 32).status_code == 404
    assert other.get(f"/login/{txn}").status_code == 404
