"""A repeated ``/login/<id>/continue`` on SQLite and PostgreSQL: the same Response again.

The login page may reach ``/continue`` twice for one sign-in (its ``/status`` poll
and the reply to its own ``POST .../response``), and people reload. A SAML
transaction that already issued its Response delivers that same signed Response,
RelayState and auto-POST form again, to the browser that owns the transaction,
while the Response is valid; after that, a page that says the sign-in is
finished. Nothing new is ever signed. The admin console's completer never opens a
second session. The real browser race is in ``tests/browser/test_saml_continue_browser.py``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree
from sqlalchemy import select, update

from idp_service.devices import registry
from idp_service.platform.models import AuditEvent, LoginTransaction, utcnow
from idp_service.saml.tables import IssuedResponse
from tests.admin_helpers import make_admin_group, make_device, make_user
from tests.saml.test_saml_login import ACS, SP, cert, enroll, idp, signed_post, status_codes
from tests.saml_support import (
    FlaskClient,
    authn_request_xml,
    device_login,
    posted_form,
    redirect_query,
    sso_post,
    strict_check,
)

__all__ = ["idp"]  # the fixture, shared with tests/saml/test_saml_login.py


def _db(app):
    return app.extensions["devicetrust"].db


def _events(app, outcome: str) -> list[AuditEvent]:
    with _db(app).session() as s:
        return list(
            s.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "saml.response", AuditEvent.outcome == outcome
                )
            )
        )


def _expire(app, txn: str) -> None:
    """Time passes: the stored Response's validity ends (as its NotOnOrAfter would)."""
    with _db(app).session() as s:
        s.execute(
            update(IssuedResponse)
            .where(IssuedResponse.txn_id == txn)
            .values(valid_until=utcnow() - dt.timedelta(seconds=1))
        )


def test_a_second_continue_delivers_the_identical_response_until_it_expires(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "alice@example.com")
    r = sso_post(client, signed_post(SP, request_id="_again-1"))
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    first = device_login(client, device, r.headers["Location"])
    assert first.status_code == 200
    posted = posted_form(first.text)
    assertion = strict_check(
        posted.xml, idp_cert=cert(idp), sp_entity_id=SP, acs_url=ACS, request_id="_again-1"
    )

    again = client.get(f"/login/{txn}/continue")
    assert again.status_code == 200 and again.headers["Cache-Control"] == "no-store"
    # The same document, byte for byte, to the same ACS with the same RelayState,
    # on the same auto-POST page.
    assert posted_form(again.text) == posted
    assert again.text == first.text
    # A POST (the no-JavaScript button of the posture page posts) is the same.
    assert posted_form(client.post(f"/login/{txn}/continue", data={}).text) == posted

    # Stored with the claim, valid no longer than the assertion.
    ns = {"saml": "urn:oasis:names:tc:SAML:2.0:assertion"}
    not_on_or_after = dt.datetime.fromisoformat(
        assertion.find("saml:Conditions", ns).get("NotOnOrAfter")
    )
    with _db(idp).session() as s:
        row = s.get(IssuedResponse, txn)
        assert row.saml_response == posted.saml_response and row.code is None
        assert row.valid_until <= not_on_or_after
        assert row.valid_until <= s.get(LoginTransaction, txn).expires_at

    # One Response was issued; the repeats are audited as such, without the Response.
    assert len(_events(idp, "ok")) == 1
    redelivered = _events(idp, "redelivered")
    assert len(redelivered) == 2 and {e.device_id for e in redelivered} == {device.id}
    with _db(idp).session() as s:
        for e in s.scalars(select(AuditEvent)):
            assert posted.saml_response[:40] not in repr(e.details)

    # Another browser (no cookie for this transaction) gets nothing.
    assert FlaskClient(idp).get(f"/login/{txn}/continue").status_code == 404

    # After its validity: a page that says so, no Response, and the stored one is gone.
    _expire(idp, txn)
    late = client.get(f"/login/{txn}/continue")
    assert late.status_code == 409 and '<code id="code">saml_login_finished</code>' in late.text
    assert "SAMLResponse" not in late.text and "no longer" in late.text
    with _db(idp).session() as s:
        assert s.get(IssuedResponse, txn) is None
    assert len(_events(idp, "ok")) == 1
    assert [e.code for e in _events(idp, "rejected")] == ["saml_login_finished"]


def test_expired_responses_are_purged_and_valid_ones_kept(idp):
    from idp_service.expiry import clean_up

    client = FlaskClient(idp)
    device = enroll(idp, client, "erin@example.com")
    txns = []
    for _ in range(2):
        r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP)))
        assert device_login(client, device, r.headers["Location"]).status_code == 200
        txns.append(r.headers["Location"].rsplit("/", 1)[-1])
    _expire(idp, txns[0])
    assert clean_up(_db(idp)).get("saml_issued_responses") == 1  # the one clean-up path
    with _db(idp).session() as s:
        assert s.get(IssuedResponse, txns[0]) is None
        assert s.get(IssuedResponse, txns[1]) is not None
    assert client.get(f"/login/{txns[0]}/continue").status_code == 409
    assert client.get(f"/login/{txns[1]}/continue").status_code == 200


def test_a_refusal_is_delivered_again_as_it_was(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "bob@example.com")
    with _db(idp).session() as s:
        registry.change_state(s, device.id, "revoke", reason="stolen", actor="test")
    r = client.get(
        "/saml/sso?" + redirect_query(authn_request_xml(issuer=SP, request_id="_rf"), "rs")
    )
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    first = device_login(client, device, r.headers["Location"])
    assert first.status_code == 403
    again = client.get(f"/login/{txn}/continue")
    assert again.status_code == 403 and again.text == first.text
    assert '<code id="code">device_revoked</code>' in again.text
    assert status_codes(posted_form(again.text).xml) == ["Responder", "AuthnFailed"]
    assert len(_events(idp, "denied")) == 1 and len(_events(idp, "redelivered")) == 1


def test_a_success_is_not_delivered_again_once_the_device_is_revoked(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "carol@example.com")
    r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP)))
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    assert device_login(client, device, r.headers["Location"]).status_code == 200
    with _db(idp).session() as s:
        registry.change_state(s, device.id, "revoke", reason="lost", actor="test")
    again = client.get(f"/login/{txn}/continue")
    assert again.status_code == 409 and "saml_login_finished" in again.text
    assert "SAMLResponse" not in again.text
    assert len(_events(idp, "ok")) == 1 and _events(idp, "redelivered") == []


def test_a_repeat_never_signs_anything_new(idp, monkeypatch):
    client = FlaskClient(idp)
    device = enroll(idp, client, "dave@example.com")
    r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP)))
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    first = posted_form(device_login(client, device, r.headers["Location"]).text)
    from idp_service.saml.protocol import assertion, response

    def refuse(*a, **kw):
        raise AssertionError("a repeat must not build or sign a Response")

    monkeypatch.setattr(assertion, "build", refuse)
    monkeypatch.setattr(response, "success", refuse)
    monkeypatch.setattr(response, "failure", refuse)
    assert posted_form(client.get(f"/login/{txn}/continue").text) == first
    root = etree.fromstring(first.xml)
    assert root.get("InResponseTo") is not None


# ---- the admin console's completer -----------------------------------------------------


@pytest.fixture
def admin_world(service_ctx):
    db = _db(service_ctx)
    with db.session() as s:
        alice = make_user(s, "alice@example.com")
        make_admin_group(s, alice)
        laptop = make_device(s, alice, state="trusted", hostname="alice-mbp")
        return service_ctx, alice.id, laptop.id


COOKIE = "devicetrust_session"


def _admin_txn(app, client, user_id: str, device_id: str) -> str:
    with _db(app).session() as s:
        txn = LoginTransaction(
            id=f"adm{utcnow().timestamp():.6f}".replace(".", ""),
            status="verified",
            user_id=user_id,
            device_id=device_id,
            context={"kind": "admin"},
            expires_at=utcnow() + dt.timedelta(minutes=5),
            verified_at=utcnow(),
        )
        s.add(txn)
    with client.session_transaction() as sess:
        sess["login_txns"] = [txn.id]
    return txn.id


def _admin_logins(app) -> list[tuple[str, str | None]]:
    with _db(app).session() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.action == "admin.login"))
        return [(e.outcome, e.code) for e in rows]


def test_admin_repeat_goes_to_the_console_and_never_opens_a_second_session(admin_world):
    app, alice, laptop = admin_world
    client = app.test_client()
    txn = _admin_txn(app, client, alice, laptop)
    # The cookie as it was before the first /continue answered (a second navigation
    # already in flight carries it).
    stale = client.get_cookie(COOKIE).value
    first = client.get(f"/login/{txn}/continue")
    assert first.status_code == 303 and first.headers["Location"] == "/admin/"
    assert client.get("/admin/devices").status_code == 200

    # The same browser, signed in: to the console, no new session, no new sign-in event.
    cookie = client.get_cookie(COOKIE).value
    again = client.get(f"/login/{txn}/continue")
    assert again.status_code == 303 and again.headers["Location"] == "/admin/"
    assert client.get_cookie(COOKIE).value == cookie
    assert _admin_logins(app) == [("ok", None)]

    # The same transaction from the cookie of before: the "already used" page, no session.
    other = app.test_client()
    other.set_cookie(COOKIE, stale)
    late = other.get(f"/login/{txn}/continue")
    assert late.status_code == 403 and b"login_finished" in late.data
    assert other.get("/admin/devices").status_code == 303
    assert _admin_logins(app) == [("ok", None), ("denied", "login_finished")]
