"""A verified sign-in continues only in the browser that fetched the answered challenge.

In process, with a SAML sign-in (the same rule holds for every kind): a copy
of the session cookie in another client is refused with ``login_elsewhere``
and audited, while the browser that fetched the challenge continues, even
after a retry fetched a newer challenge than the one the device answered.
"""

from __future__ import annotations

from sqlalchemy import select

from idp_service.platform.models import AuditEvent
from tests.saml.test_saml_login import SP, enroll
from tests.saml.test_saml_login import idp as idp  # noqa: F401 - the fixture
from tests.saml_support import FlaskClient, authn_request_xml, posted_form, redirect_query

COOKIE = "devicetrust_session"


def _start(app, email: str):
    client = FlaskClient(app)
    device = enroll(app, client, email)
    r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP)))
    return client, device, r.headers["Location"].rsplit("/", 1)[-1]


def test_a_copied_session_cookie_cannot_continue(idp):
    client, device, txn = _start(idp, "dora@example.com")
    thief = FlaskClient(idp)
    thief.c.set_cookie(COOKIE, client.c.get_cookie(COOKIE).value, domain="localhost")
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    answered = client.post(f"/login/{txn}/response", content=device.answer(token))
    assert answered.json()["status"] == "verified"
    stolen = thief.get(f"/login/{txn}/continue")
    assert stolen.status_code == 403 and "login_elsewhere" in stolen.text
    assert "SAMLResponse" not in stolen.text
    mine = client.get(f"/login/{txn}/continue")
    assert mine.status_code == 200 and posted_form(mine.text).xml
    again = thief.get(f"/login/{txn}/continue")  # the completed sign-in is not re-delivered
    assert again.status_code == 403 and "SAMLResponse" not in again.text
    with idp.extensions["devicetrust"].db.session() as s:
        codes = s.scalars(
            select(AuditEvent.code).where(
                AuditEvent.action == "login.continue", AuditEvent.outcome == "rejected"
            )
        ).all()
    assert codes == ["login_elsewhere", "login_elsewhere"]


def test_a_retry_keeps_the_holder_of_the_older_challenge(idp):
    client, device, txn = _start(idp, "erin@example.com")
    older = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/challenge", json={})  # the page retried
    answered = client.post(f"/login/{txn}/response", content=device.answer(older))
    assert answered.json()["status"] == "verified"
    mine = client.get(f"/login/{txn}/continue")
    assert mine.status_code == 200 and posted_form(mine.text).xml


def test_the_holder_cookie_stays_bounded(idp):
    client, _, txn = _start(idp, "fay@example.com")
    client.post(f"/login/{txn}/challenge", json={})
    for _ in range(20):  # many sign-ins in one browser
        r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP)))
        other = r.headers["Location"].rsplit("/", 1)[-1]
        client.post(f"/login/{other}/challenge", json={})
    holders = client.c.get_cookie("devicetrust_holder").value.split(".")
    assert len(holders) == 8 and all(len(h) == 32 for h in holders)
