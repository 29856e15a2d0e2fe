"""The sign-in's last checks: the guarded write's key comparison, and the answer's binding.

* :func:`consume_for_trusted_device` writes only when the answer's key is the
  key registered for the device (its own guard, whatever the caller checked).
  Run on SQLite and PostgreSQL: each dialect has its own statement.
* An answer carries its device id and the key that signed it; an answer signed
  with another key for a known device id is refused ``device_key_mismatch`` and
  writes nothing but the audit event, on the real service.
* An answer bound to one sign-in, forwarded by the browser to another, is
  refused ``binding_mismatch`` and verifies neither.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Challenge, Device, LoginTransaction
from idp_service.signin import authenticate, transactions
from idp_service.signin.store import consume_for_trusted_device
from tests.procs import start_service
from tests.saml.test_saml_login import enroll
from tests.saml_support import FlaskClient, SimDevice
from trust_protocol import DeviceKeys, ProtocolError


def _counts(db_or_engine, device_id: str) -> tuple[int, int]:
    """(sign-in challenges consumed by the device, login.device_verified ok events for it)."""
    engine = getattr(db_or_engine, "engine", db_or_engine)
    with engine.connect() as c:
        challenges = c.execute(
            select(func.count())
            .select_from(Challenge)
            .where(Challenge.device_id == device_id, Challenge.purpose == "authenticate")
        ).scalar_one()
        verified = c.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == "login.device_verified",
                AuditEvent.outcome == "ok",
                AuditEvent.device_id == device_id,
            )
        ).scalar_one()
    return challenges, verified


def _consume(db, device_id: str, user_id: str, sign_key: bytes):
    now = dt.datetime.now(dt.UTC)
    return consume_for_trusted_device(
        db.engine,
        challenge_id=uuid.uuid4().hex,
        binding="test",
        issued_at=now,
        expires_at=now + dt.timedelta(minutes=1),
        device_id=device_id,
        user_id=user_id,
        sign_key=sign_key,
        via="browser",
        clock_skew=0.0,
        agent_version="test",
        remote_addr=None,
        details={"via": "browser"},
    )


def test_the_guarded_write_compares_the_registered_key(service_ctx):
    db = service_ctx.extensions["devicetrust"].db
    device = enroll(service_ctx, FlaskClient(service_ctx), "gina@example.com")
    with db.session() as s:
        row = s.get(Device, device.id)
        row.state = "trusted"
        user_id, registered, seen = row.user_id, bytes(row.sign_key), row.last_seen
    # Another key for the same device id and owner: nothing is written.
    assert _consume(db, device.id, user_id, os.urandom(32)) is None
    assert _consume(db, device.id, user_id, registered[:-1] + bytes([registered[-1] ^ 1])) is None
    assert _counts(db, device.id) == (0, 0)
    with db.session() as s:
        assert s.get(Device, device.id).last_seen == seen
    # The control: the registered key is recorded.
    done = _consume(db, device.id, user_id, registered)
    assert done is not None and done.user_id == user_id
    assert _counts(db, device.id) == (1, 1)


def test_an_answer_bound_to_another_sign_in_is_refused_in_process(service_ctx):
    db = service_ctx.extensions["devicetrust"].db
    client = FlaskClient(service_ctx)
    device = enroll(service_ctx, client, "hank@example.com")
    with db.session() as s:
        s.get(Device, device.id).state = "trusted"
    first, second = (client.get("/login").headers["Location"].rsplit("/", 1)[-1] for _ in range(2))
    token = client.post(f"/login/{second}/challenge", json={}).json()["challenge"]
    with service_ctx.app_context(), pytest.raises(ProtocolError) as refused:
        authenticate.verify(
            service_ctx.extensions["devicetrust"],
            device.answer(token),
            via="browser",
            expected_binding=transactions.binding_for(first),
        )
    assert refused.value.code == "binding_mismatch"
    assert _counts(db, device.id) == (0, 0)
    with db.session() as s:
        assert s.get(LoginTransaction, first).status == "pending"
        assert s.get(LoginTransaction, second).status == "pending"


@pytest.fixture
def live(tmp_path, database_url):
    svc = start_service(tmp_path, database_url)
    engine = make_engine(database_url)
    yield svc, engine
    engine.dispose()
    svc.stop()


def _trusted_device(svc, engine, email: str) -> SimDevice:
    device = SimDevice()
    device.register(httpx.Client(base_url=svc.url), svc.enroll_code(email))
    with engine.begin() as c:
        c.execute(Device.__table__.update().where(Device.id == device.id).values(state="trusted"))
    return device


def _txn(browser: httpx.Client) -> str:
    return browser.get("/login").headers["location"].rsplit("/", 1)[-1]


def test_an_answer_signed_with_another_key_is_refused_end_to_end(live):
    svc, engine = live
    device = _trusted_device(svc, engine, "ivan@example.com")
    browser = httpx.Client(base_url=svc.url, follow_redirects=False)
    txn = _txn(browser)
    token = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    # Same device id, the attacker's own key pair: the envelope verifies, the key is wrong.
    imposter = SimDevice(keys=DeviceKeys.generate(device.id), verify_key=device.verify_key)
    r = browser.post(f"/login/{txn}/response", content=imposter.answer(token))
    assert r.status_code in (401, 403), r.text
    assert r.json()["error"]["code"] == "device_key_mismatch"
    status = browser.get(f"/login/{txn}/status").json()
    assert (status["status"], status.get("code")) == ("denied", "device_key_mismatch")
    assert _counts(engine, device.id) == (0, 0)
    with engine.connect() as c:
        refused = c.execute(
            select(AuditEvent.code).where(
                AuditEvent.device_id == device.id, AuditEvent.outcome != "ok"
            )
        ).scalars()
        assert "device_key_mismatch" in set(refused)
    # The control: the device's own answer signs in (a new sign-in: that one was denied).
    txn = _txn(browser)
    token = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    r = browser.post(f"/login/{txn}/response", content=device.answer(token))
    assert r.json()["status"] == "verified"


def test_an_answer_bound_to_another_sign_in_is_refused_end_to_end(live):
    svc, engine = live
    device = _trusted_device(svc, engine, "judy@example.com")
    browser = httpx.Client(base_url=svc.url, follow_redirects=False)
    first, second = _txn(browser), _txn(browser)
    token = browser.post(f"/login/{second}/challenge", json={}).json()["challenge"]
    r = browser.post(f"/login/{first}/response", content=device.answer(token))
    assert r.status_code in (400, 403, 409), r.text
    assert r.json()["error"]["code"] == "binding_mismatch"
    assert browser.get(f"/login/{first}/status").json()["status"] == "pending"
    assert browser.get(f"/login/{second}/status").json()["status"] == "pending"
    assert _counts(engine, device.id) == (0, 0)
    # The answer still belongs to its own sign-in.
    r = browser.post(f"/login/{second}/response", content=device.answer(token))
    assert r.json()["status"] == "verified"
