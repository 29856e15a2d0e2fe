"""SAML sign-in through the login transaction, on SQLite and PostgreSQL.

Covers what happens after the AuthnRequest is accepted: one Response per
transaction, AuthnFailed with a reason for revoked devices, factor mode for
identity brokers (and its TOFU hook), IdP-initiated sign-in, and concurrent
completion.
"""

from __future__ import annotations

import base64
import threading
from urllib.parse import quote

import pytest
from lxml import etree
from sqlalchemy import func, select

from idp_service.devices import enroll as enroll_mod
from idp_service.devices import registry
from idp_service.directory import users
from idp_service.platform.models import AuditEvent, LoginTransaction
from idp_service.saml import api
from idp_service.saml.service import keys as keyring
from tests.saml_support import (
    NS,
    FlaskClient,
    SimDevice,
    authn_request_xml,
    cached_key_pair,
    device_login,
    posted_form,
    redirect_query,
    sign_enveloped,
    sp_metadata,
    sso_post,
    strict_check,
)

SP = "http://app.test/metadata"
ACS = "http://app.test/acs"
BROKER = "http://broker.test/metadata"
BROKER_ACS = "http://broker.test/acs"
STATUS = "{urn:oasis:names:tc:SAML:2.0:protocol}StatusCode"


@pytest.fixture
def idp(service_ctx):
    db = service_ctx.extensions["devicetrust"].db
    _, cert = cached_key_pair("login-sp")
    api.create_sp(
        db, {"metadata_xml": sp_metadata(SP, [ACS], cert_pem=cert).decode(), "name": "App"}
    )
    api.create_sp(
        db,
        {
            "metadata_xml": sp_metadata(BROKER, [BROKER_ACS], cert_pem=cert).decode(),
            "name": "Okta",
            "identity_broker": True,
            "nameid_format": "unspecified",
        },
    )
    return service_ctx


def enroll(app, client, email):
    svc = app.extensions["devicetrust"]
    with svc.db.session() as s:
        user = users.find(s, email) or users.create(s, email)
        code, _ = enroll_mod.create_code(s, user, ttl_seconds=600)
    device = SimDevice()
    device.register(client, code)
    return device


def cert(app):
    with app.app_context():
        return keyring(app.extensions["devicetrust"]).active("rsa").cert_pem


def status_codes(xml: bytes) -> list[str]:
    return [c.get("Value").rsplit(":", 1)[-1] for c in etree.fromstring(xml).iter(STATUS)]


def signed_post(issuer, **kw):
    key, crt = cached_key_pair("login-sp")
    xml = sign_enveloped(authn_request_xml(issuer=issuer, **kw), key, crt)
    return {"SAMLRequest": base64.b64encode(xml).decode(), "RelayState": "rs-1"}


def test_signed_post_request_then_exactly_one_response(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "alice@example.com")
    form = signed_post(SP, request_id="_post-1")
    r = sso_post(client, form)
    assert r.status_code == 303
    page = device_login(client, device, r.headers["Location"])
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    posted = posted_form(page.text)
    assert posted.action == ACS and posted.relay_state == "rs-1"
    strict_check(posted.xml, idp_cert=cert(idp), sp_entity_id=SP, acs_url=ACS, request_id="_post-1")

    txn = r.headers["Location"].rsplit("/", 1)[-1]
    # A repeat gets the same Response again (tests/saml/test_saml_continue_again.py goes further).
    again = client.get(f"/login/{txn}/continue")
    assert again.status_code == 200
    assert posted_form(again.text) == posted
    with idp.extensions["devicetrust"].db.session() as s:
        issued = s.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "saml.response", AuditEvent.outcome == "ok"
            )
        ).all()
        assert len(issued) == 1 and issued[0].device_id == device.id
        assert s.get(LoginTransaction, txn).completed_at is not None


def test_revoked_device_gets_authn_failed_and_a_page_that_says_why(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "bob@example.com")
    with idp.extensions["devicetrust"].db.session() as s:
        registry.change_state(s, device.id, "revoke", reason="stolen", actor="test")
    r = client.get(
        "/saml/sso?" + redirect_query(authn_request_xml(issuer=SP, request_id="_rv"), "x")
    )
    page = device_login(client, device, r.headers["Location"])
    assert page.status_code == 403
    assert "revoked" in page.text and '<code id="code">device_revoked</code>' in page.text
    posted = posted_form(page.text)
    assert posted.action == ACS and posted.relay_state == "x"
    assert status_codes(posted.xml) == ["Responder", "AuthnFailed"]
    root = etree.fromstring(posted.xml)
    assert root.get("InResponseTo") == "_rv" and root.get("Destination") == ACS
    assert root.find("saml:Assertion", NS) is None
    assert "data-autosubmit" not in page.text  # the person reads why before going back


def test_revocation_between_verification_and_continue_wins(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "carol@example.com")
    r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP)))
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    client.get(r.headers["Location"])
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    assert (
        client.post(f"/login/{txn}/response", content=device.answer(token)).json()["status"]
        == "verified"
    )
    with idp.extensions["devicetrust"].db.session() as s:
        registry.change_state(s, device.id, "revoke", reason="lost", actor="test")
    page = client.get(f"/login/{txn}/continue")
    assert status_codes(posted_form(page.text).xml) == ["Responder", "AuthnFailed"]


def test_factor_mode_asserts_only_for_the_broker_named_user(idp):
    client = FlaskClient(idp)
    alice = enroll(idp, client, "alice@example.com")
    # The broker names alice: alice's device passes.
    r = sso_post(client, signed_post(BROKER, subject="Alice@Example.com", request_id="_b1"))
    assert r.status_code == 303
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    with idp.extensions["devicetrust"].db.session() as s:
        row = s.get(LoginTransaction, txn)
        assert row.context["broker_subject"] == "Alice@Example.com"
        from idp_service.signin.transactions import tofu_subject

        assert tofu_subject(row) == "Alice@Example.com"  # the hook for first-device TOFU
    posted = posted_form(device_login(client, alice, r.headers["Location"]).text)
    assertion = strict_check(
        posted.xml, idp_cert=cert(idp), sp_entity_id=BROKER, acs_url=BROKER_ACS, request_id="_b1"
    )
    assert assertion.find("saml:Subject/saml:NameID", NS).text == "alice@example.com"
    # The broker names mallory, but alice's device answers: AuthnFailed.
    r = sso_post(client, signed_post(BROKER, subject="mallory@example.com"))
    page = device_login(client, alice, r.headers["Location"])
    assert '<code id="code">subject_mismatch</code>' in page.text
    assert status_codes(posted_form(page.text).xml) == ["Responder", "AuthnFailed"]


def test_factor_mode_needs_a_signed_request_with_a_subject(idp):
    client = FlaskClient(idp)
    unsigned = authn_request_xml(issuer=BROKER, subject="alice@example.com")
    r = client.get("/saml/sso?" + redirect_query(unsigned))
    assert r.status_code == 403 and "saml_signature_required" in r.text
    r = sso_post(client, signed_post(BROKER))
    assert r.status_code == 400 and "saml_broker_subject_missing" in r.text
    assert status_codes(posted_form(r.text).xml) == ["Requester", "RequestDenied"]
    # A plain SP's subject is not a TOFU identity proof.
    r = sso_post(client, signed_post(SP, subject="alice@example.com"))
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    with idp.extensions["devicetrust"].db.session() as s:
        assert s.get(LoginTransaction, txn).context["tofu_subject"] is None


def test_idp_initiated_sign_in_has_no_in_response_to(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "dave@example.com")
    api.update_sp(idp.extensions["devicetrust"].db, SP, {"allow_idp_initiated": True})
    r = client.get("/saml/idp-initiated?sp=" + quote(SP) + "&RelayState=%2Fhome")
    posted = posted_form(device_login(client, device, r.headers["Location"]).text)
    assert posted.relay_state == "/home"
    strict_check(posted.xml, idp_cert=cert(idp), sp_entity_id=SP, acs_url=ACS, request_id=None)
    # Brokers never get unsolicited assertions.
    api.update_sp(idp.extensions["devicetrust"].db, BROKER, {"allow_idp_initiated": True})
    assert client.get("/saml/idp-initiated?sp=Okta").status_code == 403


def test_concurrent_completion_issues_one_response(idp):
    from idp_service.signin.web import login_continue

    client = FlaskClient(idp)
    device = enroll(idp, client, "erin@example.com")
    r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP)))
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    client.get(r.headers["Location"])
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/response", content=device.answer(token))
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(6)
    # The browser that fetched the answered challenge holds its holder cookie.
    holder = client.c.get_cookie("devicetrust_holder").value
    cookie = {"Cookie": f"devicetrust_holder={holder}"}

    def finish():
        with idp.test_request_context(f"/login/{txn}/continue", headers=cookie):
            from flask import session

            session["login_txns"] = [txn]
            barrier.wait()
            resp = idp.make_response(login_continue(txn))
            results.append((resp.status_code, posted_form(resp.get_data(as_text=True)).xml))

    threads = [threading.Thread(target=finish) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # One Response is issued; every request gets that same one.
    assert [status for status, _ in results] == [200] * 6
    assert len({xml for _, xml in results}) == 1
    with idp.extensions["devicetrust"].db.session() as s:
        ok = s.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "saml.response", AuditEvent.outcome == "ok")
        ).scalar_one()
    assert ok == 1
