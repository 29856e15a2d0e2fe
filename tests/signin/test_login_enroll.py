"""The login page's flows for devices that are not (yet) trusted, in-process on both databases.

Enrollment from the page (register challenges bound to the sign-in, the code only
inside the sealed answer), factor-mode TOFU on an identity broker's signed
subject, and "check again" for a device that waits for approval. The real
processes and the browser are in ``test_page_enroll_agent.py`` and
``test_enroll_browser.py``.
"""

from __future__ import annotations

import base64
import threading
import time

import pytest
from nacl.signing import VerifyKey
from sqlalchemy import func, select

from idp_service.devices import enroll as enroll_mod
from idp_service.devices import registry
from idp_service.directory import users
from idp_service.platform.models import AuditEvent, Challenge, Device, EnrollmentCode
from idp_service.saml import api
from tests.saml_support import (
    NS,
    FlaskClient,
    SimDevice,
    authn_request_xml,
    cached_key_pair,
    device_login,
    posted_form,
    sign_enveloped,
    sp_metadata,
    sso_post,
)
from trust_protocol import ResponseBody, parse_challenge, seal_response
from trust_protocol.encoding import b64d

SP = "http://app.test/metadata"
ACS = "http://app.test/acs"
BROKER = "http://broker.test/metadata"
BROKER_ACS = "http://broker.test/acs"


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


def svc(app):
    return app.extensions["devicetrust"]


def make_user(app, email, *, code=False):
    with svc(app).db.session() as s:
        user = users.find(s, email) or users.create(s, email)
        if code:
            return enroll_mod.create_code(s, user, ttl_seconds=600)[0]
    return None


def start_login(client):
    r = client.get("/login")
    return r.headers["Location"].rsplit("/", 1)[-1]


def register_with(client, device: SimDevice, token: str, code: str | None):
    """What the agent does with a page's register challenge: seal (code inside), post."""
    info = client.get("/agent/v1/server").json()
    device.verify_key = VerifyKey(b64d(info["server_key"], length=32))
    challenge = parse_challenge(token, device.verify_key)
    body = ResponseBody(
        token,
        device.keys.public_json(),
        {"hardware_uuid": f"hw-{device.id}", "os": "linux", "hostname": "laptop"},
        "test",
        time.time(),
        data={} if code is None else {"enrollment_code": code},
    )
    return client.post("/agent/v1/register", content=seal_response(body, challenge, device.keys))


def audit_events(app, action="device.register"):
    with svc(app).db.session() as s:
        return s.scalars(select(AuditEvent).where(AuditEvent.action == action)).all()


def count(app, model):
    with svc(app).db.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def broker_login(client, subject, request_id=None):
    key, crt = cached_key_pair("login-sp")
    xml = sign_enveloped(
        authn_request_xml(issuer=BROKER, subject=subject, request_id=request_id), key, crt
    )
    form = {"SAMLRequest": base64.b64encode(xml).decode(), "RelayState": "rs"}
    r = sso_post(client, form)
    assert r.status_code == 303, r.text
    location = r.headers["Location"]
    assert client.get(location).status_code == 200
    return location.rsplit("/", 1)[-1], location


# ---- enrollment with a code, from the page -----------------------------------------------


def test_register_challenge_is_bound_to_the_sign_in_and_never_signs_in(idp):
    client = FlaskClient(idp)
    code = make_user(idp, "alice@example.com", code=True)
    txn = start_login(client)
    r = client.post(f"/login/{txn}/register-challenge", json={"mode": "code"})
    assert r.status_code == 200, r.text
    token = r.json()["challenge"]
    assert r.json()["ports"]
    device = SimDevice()
    reg = register_with(client, device, token, code)
    assert reg.status_code == 201 and reg.json()["state"] == "trusted"
    challenge = parse_challenge(token, device.verify_key)
    assert challenge.purpose == "register"
    assert challenge.binding == f"enroll:{txn}"
    assert challenge.callback == "http://127.0.0.1:8000/agent/v1/register"
    # Registering consumed the challenge but did not sign anyone in.
    assert client.get(f"/login/{txn}/status").json()["status"] == "pending"
    with svc(idp).db.session() as s:
        assert s.get(Challenge, challenge.id_text).binding == f"enroll:{txn}"
    # The same register challenge cannot be answered to the sign-in either.
    refused = client.post(f"/login/{txn}/response", content=device.answer(token))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "wrong_purpose"
    # The retried sign-in works.
    login = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    ok = client.post(f"/login/{txn}/response", content=device.answer(login))
    assert ok.json()["status"] == "verified"


def test_register_challenge_belongs_to_this_browser_and_open_sign_ins(idp):
    client = FlaskClient(idp)
    txn = start_login(client)
    stranger = FlaskClient(idp)
    r = stranger.post(f"/login/{txn}/register-challenge", json={"mode": "code"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "login_unknown"
    for body in ({"mode": "password"}, {"mode": ["code"]}, {"mode": None}):
        r = client.post(f"/login/{txn}/register-challenge", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed"
    for raw in (b"not json", b"[]", b'"code"'):
        r = client.post(f"/login/{txn}/register-challenge", content=raw)
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed"
    # No body at all means a code enrollment.
    assert client.post(f"/login/{txn}/register-challenge").status_code == 200
    code = make_user(idp, "bea@example.com", code=True)
    device = SimDevice()
    device.register(client, code)
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/response", content=device.answer(token))
    client.get(f"/login/{txn}/continue")
    r = client.post(f"/login/{txn}/register-challenge", json={"mode": "code"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "login_closed"


@pytest.mark.parametrize("case", ["wrong", "used", "expired"])
def test_bad_code_from_the_page_writes_nothing_but_an_audit_event(idp, case):
    client = FlaskClient(idp)
    code = make_user(idp, "carl@example.com", code=True)
    if case == "used":
        SimDevice().register(client, code)
    if case == "expired":
        with svc(idp).db.session() as s:
            row = s.scalars(select(EnrollmentCode)).one()
            row.expires_at = row.created_at
    devices_before = count(idp, Device)
    challenges_before = count(idp, Challenge)
    audit_before = len(audit_events(idp))
    txn = start_login(client)
    token = client.post(f"/login/{txn}/register-challenge", json={}).json()["challenge"]
    r = register_with(
        client, SimDevice(), token, "WRNG-CODE-0000-0000" if case == "wrong" else code
    )
    assert r.status_code == 403
    assert (
        r.json()["error"]["code"]
        == {
            "wrong": "enroll_code_invalid",
            "used": "enroll_code_used",
            "expired": "enroll_code_expired",
        }[case]
    )
    assert r.json()["error"]["hint"]
    assert count(idp, Device) == devices_before
    assert count(idp, Challenge) == challenges_before  # the challenge is not burned
    events = audit_events(idp)
    assert len(events) == audit_before + 1 and events[-1].outcome == "rejected"
    assert code not in str(events[-1].details) and "WRNG" not in str(events[-1].details)


def test_a_forgotten_device_registers_again_with_its_own_keys(idp):
    client = FlaskClient(idp)
    code = make_user(idp, "dora@example.com", code=True)
    device = SimDevice()
    device.register(client, code)
    with svc(idp).db.session() as s:
        s.delete(s.get(Device, device.id))
    txn = start_login(client)
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    r = client.post(f"/login/{txn}/response", content=device.answer(token))
    assert r.status_code == 403 and r.json()["error"]["code"] == "device_unknown"
    assert client.get(f"/login/{txn}/status").json()["status"] == "pending"  # not recorded
    token = client.post(f"/login/{txn}/register-challenge", json={}).json()["challenge"]
    second = make_user(idp, "dora@example.com", code=True)
    assert register_with(client, device, token, second).status_code == 201
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    assert (
        client.post(f"/login/{txn}/response", content=device.answer(token)).json()["status"]
        == "verified"
    )


# ---- factor mode: TOFU on the broker's signed subject ------------------------------------


def test_broker_tofu_registers_the_first_device_then_signs_in(idp):
    client = FlaskClient(idp)
    make_user(idp, "erin@example.com")
    txn, location = broker_login(client, "Erin@Example.com", request_id="_tofu1")
    options = client.get(f"/login/{txn}/enroll-options").json()
    assert options["tofu"] == {"user": "erin@example.com"} and options["code"] is True
    token = client.post(f"/login/{txn}/register-challenge", json={"mode": "tofu"}).json()[
        "challenge"
    ]
    device = SimDevice()
    r = register_with(client, device, token, None)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "trusted" and r.json()["user"] == "erin@example.com"
    assert parse_challenge(token, device.verify_key).binding == f"tofu:{txn}"
    event = audit_events(idp)[-1]
    assert event.outcome == "ok" and event.device_id == device.id
    assert event.details["method"] == "broker" and event.details["sp"] == BROKER
    with svc(idp).db.session() as s:
        assert "identity broker" in s.get(Device, device.id).state_reason
    # No longer offered: the user has a device now.
    assert client.get(f"/login/{txn}/enroll-options").json()["tofu"] is None
    # The same sign-in goes on to an assertion for that user.
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/response", content=device.answer(token))
    page = client.get(f"/login/{txn}/continue")
    from lxml import etree

    root = etree.fromstring(posted_form(page.text).xml)
    assert root.get("InResponseTo") == "_tofu1"
    assert root.find(".//saml:Subject/saml:NameID", NS).text == "erin@example.com"


def test_broker_tofu_follows_the_registration_policy(idp):
    svc(idp).settings.registration_policy = "admin_approval"
    try:
        client = FlaskClient(idp)
        make_user(idp, "fay@example.com")
        txn, _ = broker_login(client, "fay@example.com")
        token = client.post(f"/login/{txn}/register-challenge", json={"mode": "tofu"}).json()[
            "challenge"
        ]
        r = register_with(client, SimDevice(), token, None)
        assert r.status_code == 201 and r.json()["state"] == "pending"
    finally:
        svc(idp).settings.registration_policy = "tofu"


@pytest.mark.parametrize("case", ["unknown", "inactive", "has_device", "plain_sp", "local"])
def test_broker_tofu_only_for_an_active_user_without_devices(idp, case):
    client = FlaskClient(idp)
    if case != "unknown":
        make_user(idp, "gus@example.com")
    if case == "inactive":
        with svc(idp).db.session() as s:
            users.find(s, "gus@example.com").active = False
    if case == "has_device":
        device = SimDevice()
        device.register(client, make_user(idp, "gus@example.com", code=True))
        with svc(idp).db.session() as s:
            registry.change_state(s, device.id, "revoke", reason="lost", actor="test")
    if case == "plain_sp":
        key, crt = cached_key_pair("login-sp")
        xml = sign_enveloped(authn_request_xml(issuer=SP, subject="gus@example.com"), key, crt)
        r = sso_post(client, {"SAMLRequest": base64.b64encode(xml).decode()})
        txn = r.headers["Location"].rsplit("/", 1)[-1]
    elif case == "local":
        txn = start_login(client)
    else:
        txn, _ = broker_login(client, "gus@example.com")
    assert client.get(f"/login/{txn}/enroll-options").json()["tofu"] is None
    before = len(audit_events(idp))
    r = client.post(f"/login/{txn}/register-challenge", json={"mode": "tofu"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "tofu_unavailable"
    assert "enrollment code" in r.json()["error"]["hint"]
    events = audit_events(idp)
    assert len(events) == before + 1 and events[-1].code == "tofu_unavailable"
    # A code still works for everyone but the inactive user.
    r = client.post(f"/login/{txn}/register-challenge", json={"mode": "code"})
    assert r.status_code == 200


def test_broker_tofu_is_checked_again_at_registration(idp):
    client = FlaskClient(idp)
    make_user(idp, "hal@example.com")
    txn, _ = broker_login(client, "hal@example.com")
    token = client.post(f"/login/{txn}/register-challenge", json={"mode": "tofu"}).json()[
        "challenge"
    ]
    # Meanwhile the user got a device another way: the broker's word no longer suffices.
    SimDevice().register(client, make_user(idp, "hal@example.com", code=True))
    devices = count(idp, Device)
    r = register_with(client, SimDevice(), token, None)
    assert r.status_code == 403 and r.json()["error"]["code"] == "tofu_unavailable"
    assert count(idp, Device) == devices
    event = audit_events(idp)[-1]
    assert event.outcome == "rejected" and event.details == {
        "method": "broker",
        "reason": "has_device",
    }
    # A code inside a TOFU registration is refused, not silently used or ignored.
    make_user(idp, "ian@example.com")
    txn, _ = broker_login(client, "ian@example.com")
    token = client.post(f"/login/{txn}/register-challenge", json={"mode": "tofu"}).json()[
        "challenge"
    ]
    code = make_user(idp, "ian@example.com", code=True)
    r = register_with(client, SimDevice(), token, code)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed"


def test_concurrent_broker_tofu_registers_one_device(idp):
    client = FlaskClient(idp)
    make_user(idp, "jo@example.com")
    tokens = []
    for _ in range(4):
        txn, _ = broker_login(client, "jo@example.com")
        tokens.append(
            client.post(f"/login/{txn}/register-challenge", json={"mode": "tofu"}).json()[
                "challenge"
            ]
        )
    info = client.get("/agent/v1/server").json()
    key = VerifyKey(b64d(info["server_key"], length=32))
    envelopes = []
    for token in tokens:
        device = SimDevice(verify_key=key)
        body = ResponseBody(token, device.keys.public_json(), {"os": "linux"}, "t", time.time())
        envelopes.append(seal_response(body, parse_challenge(token, key), device.keys))
    barrier = threading.Barrier(len(envelopes))
    statuses: list[int] = []

    def post(envelope):
        c = idp.test_client()
        barrier.wait()
        statuses.append(c.post("/agent/v1/register", data=envelope).status_code)

    threads = [threading.Thread(target=post, args=(e,)) for e in envelopes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [201, 403, 403, 403]
    with svc(idp).db.session() as s:
        assert s.execute(select(func.count()).select_from(Device)).scalar_one() == 1
        assert s.scalars(select(Device)).one().state == "trusted"


# ---- waiting for approval -----------------------------------------------------------------


def pending_device(idp, client, email):
    code1 = make_user(idp, email, code=True)
    SimDevice().register(client, code1)
    second = SimDevice()
    assert second.register(client, make_user(idp, email, code=True))["state"] == "pending"
    return second


def test_check_again_reopens_a_sign_in_that_waits_for_approval(idp):
    client = FlaskClient(idp)
    device = pending_device(idp, client, "kim@example.com")
    txn = start_login(client)
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    r = client.post(f"/login/{txn}/response", content=device.answer(token))
    assert r.json()["error"]["code"] == "device_pending"
    status = client.get(f"/login/{txn}/status").json()
    assert status["status"] == "denied" and status["code"] == "device_pending"
    assert "trusted devices" in status["message"]
    # Still waiting: check again, and the answer is the same.
    again = client.post(f"/login/{txn}/check-again", headers={"Accept": "application/json"})
    assert again.json() == {"status": "pending"}
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/response", content=device.answer(token))
    assert client.get(f"/login/{txn}/status").json()["code"] == "device_pending"
    # Approved: check again, in the same sign-in.
    with svc(idp).db.session() as s:
        registry.change_state(s, device.id, "approve", reason="ok", actor="test")
    assert client.post(f"/login/{txn}/check-again").status_code == 303  # plain form POST
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    assert (
        client.post(f"/login/{txn}/response", content=device.answer(token)).json()["status"]
        == "verified"
    )


def test_the_continue_page_says_it_waits_and_offers_to_check_again(idp):
    client = FlaskClient(idp)
    device = pending_device(idp, client, "lee@example.com")
    txn = start_login(client)
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/response", content=device.answer(token))
    page = client.get(f"/login/{txn}/continue")
    assert "<h1>Waiting for approval</h1>" in page.text
    assert f'action="/login/{txn}/check-again"' in page.text


def test_check_again_reopens_nothing_else(idp):
    client = FlaskClient(idp)
    # A revoked device's denial stays.
    code = make_user(idp, "max@example.com", code=True)
    device = SimDevice()
    device.register(client, code)
    with svc(idp).db.session() as s:
        registry.change_state(s, device.id, "revoke", reason="lost", actor="test")
    txn = start_login(client)
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/response", content=device.answer(token))
    r = client.post(f"/login/{txn}/check-again", headers={"Accept": "application/json"})
    assert r.json()["code"] == "device_revoked" and r.json()["status"] == "denied"
    # A SAML sign-in whose refusal already went to the application stays finished.
    pending = pending_device(idp, client, "ned@example.com")
    key, crt = cached_key_pair("login-sp")
    xml = sign_enveloped(authn_request_xml(issuer=SP), key, crt)
    loc = sso_post(client, {"SAMLRequest": base64.b64encode(xml).decode()})
    txn = loc.headers["Location"].rsplit("/", 1)[-1]
    page = device_login(client, pending, loc.headers["Location"])
    assert "device_pending" in page.text  # AuthnFailed went to the SP
    r = client.post(f"/login/{txn}/check-again", headers={"Accept": "application/json"})
    assert r.json()["status"] == "denied"
    # Another browser cannot reopen anything.
    assert FlaskClient(idp).post(f"/login/{txn}/check-again").status_code == 404
