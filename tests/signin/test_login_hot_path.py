"""The sign-in hot path's few statements keep every guarantee (SQLite and PostgreSQL).

* The answer's one write also verifies the login transaction, and the response
  endpoint's status comes from that write.
* Completing a SAML sign-in rechecks the device and its owner inside the claim:
  a revocation or deactivation that lands after the continue step read them,
  but before the claim, still wins.
* A replayed AuthnRequest ID writes nothing but an audit event.
"""

from __future__ import annotations

import pytest
from flask import session
from sqlalchemy import func, select, update

from idp_service.devices import registry
from idp_service.directory import users
from idp_service.platform.models import AuditEvent, Device, LoginTransaction, User
from idp_service.signin.reads import read_login
from idp_service.signin.store import complete_verified
from tests.saml.test_saml_login import SP, enroll, status_codes
from tests.saml.test_saml_login import idp as idp  # noqa: F401 - the fixture
from tests.saml_support import FlaskClient, authn_request_xml, posted_form, redirect_query


def _verified_login(app, email: str, request_id: str | None = None):
    client = FlaskClient(app)
    device = enroll(app, client, email)
    r = client.get(
        "/saml/sso?" + redirect_query(authn_request_xml(issuer=SP, request_id=request_id))
    )
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    answered = client.post(f"/login/{txn}/response", content=device.answer(token))
    return client, device, txn, answered


def _count(db, action: str, outcome: str) -> int:
    with db.session() as s:
        return s.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == action, AuditEvent.outcome == outcome)
        ).scalar_one()


def test_the_answer_verifies_its_transaction_in_the_same_write(idp):
    db = idp.extensions["devicetrust"].db
    client, device, txn, answered = _verified_login(idp, "dora@example.com")
    assert answered.status_code == 200
    assert answered.json() == {"status": "verified", "next": f"/login/{txn}/continue"}
    with db.session() as s:
        row = s.get(LoginTransaction, txn)
        assert (row.status, row.device_id, row.verified_at is not None) == (
            "verified",
            device.id,
            True,
        )
    # A second copy of the same answer is a replay; the transaction still says verified.
    token = client.post(f"/login/{txn}/challenge", json={})
    assert token.status_code == 409  # the sign-in is no longer open for challenges
    assert client.get(f"/login/{txn}/status").json()["status"] == "verified"


@pytest.mark.parametrize("change", ["revoke", "deactivate"])
def test_a_change_after_continue_read_the_device_still_wins(idp, change):
    db = idp.extensions["devicetrust"].db
    client, device, txn, _ = _verified_login(idp, f"erin-{change}@example.com")
    fresh, user, dev = read_login(db.engine, txn)  # what /continue read
    with db.session() as s:
        if change == "revoke":
            registry.change_state(s, device.id, "revoke", reason="lost", actor="test")
        else:
            s.execute(update(User).where(User.id == user.id).values(active=False))
    with idp.test_request_context(f"/login/{txn}/continue"):
        session["login_txns"] = [txn]
        saml_completer = idp.extensions["devicetrust"].completers.get("saml")
        page = idp.make_response(saml_completer(fresh, user, dev))
    assert page.status_code == 403
    code = "device_revoked" if change == "revoke" else "owner_inactive"
    assert f'<code id="code">{code}</code>' in page.get_data(as_text=True)
    assert status_codes(posted_form(page.get_data(as_text=True)).xml) == [
        "Responder",
        "AuthnFailed",
    ]
    assert _count(db, "saml.response", "ok") == 0
    assert _count(db, "saml.response", "denied") == 1
    with db.session() as s:
        assert s.get(LoginTransaction, txn).completed_at is not None
        denied = s.scalars(select(AuditEvent).where(AuditEvent.outcome == "denied")).one()
        assert (denied.action, denied.code) == ("saml.response", code)
    # And the claim itself refuses, writing nothing, for any later attempt.
    assert not complete_verified(
        db.engine, txn, user_id=user.id, device_id=dev.id, action="saml.response", details={}
    )
    # A later /continue gets the refusal it was given, again; never a success.
    again = client.get(f"/login/{txn}/continue")
    assert again.status_code == 403 and f'<code id="code">{code}</code>' in again.text
    assert _count(db, "saml.response", "ok") == 0


def test_the_hot_path_audit_rows_carry_valid_macs(idp):
    from idp_service.platform import audit_chain

    db = idp.extensions["devicetrust"].db
    client, _, txn, _ = _verified_login(idp, "gus@example.com")
    assert client.get(f"/login/{txn}/continue").status_code == 200
    assert _count(db, "login.device_verified", "ok") == 1
    assert _count(db, "saml.response", "ok") == 1
    report = audit_chain.verify(db)
    assert report.ok, report.problems


def test_a_device_that_changed_owner_signs_in_as_its_new_owner(idp):
    """The owner remembered for the audit MAC is only a hint: a stale one is re-read."""
    db = idp.extensions["devicetrust"].db
    client, device, txn, _ = _verified_login(idp, "hal@example.com")
    with db.session() as s:
        new_owner = users.create(s, "ida@example.com")
        s.execute(update(Device).where(Device.id == device.id).values(user_id=new_owner.id))
        new_owner_id = new_owner.id
    r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP)))
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    answered = client.post(f"/login/{txn}/response", content=device.answer(token))
    assert answered.json()["status"] == "verified"
    with db.session() as s:
        assert s.get(LoginTransaction, txn).user_id == new_owner_id


def test_complete_verified_claims_once(idp):
    db = idp.extensions["devicetrust"].db
    _, _, txn, _ = _verified_login(idp, "fay@example.com")
    _, user, device = read_login(db.engine, txn)
    args = dict(user_id=user.id, device_id=device.id, action="saml.response", details={"x": 1})
    assert complete_verified(db.engine, txn, **args)
    assert not complete_verified(db.engine, txn, **args)
    assert _count(db, "saml.response", "ok") == 1


def test_a_replayed_request_id_writes_only_an_audit_event(idp):
    db = idp.extensions["devicetrust"].db
    client = FlaskClient(idp)
    query = "/saml/sso?" + redirect_query(authn_request_xml(issuer=SP, request_id="_once"))
    assert client.get(query).status_code == 303
    with db.session() as s:
        before = s.execute(select(func.count()).select_from(LoginTransaction)).scalar_one()
    replay = client.get(query)
    assert replay.status_code == 409 and "saml_replayed" in replay.text
    with db.session() as s:
        after = s.execute(select(func.count()).select_from(LoginTransaction)).scalar_one()
    assert after == before
    assert _count(db, "saml.sso", "rejected") == 1


def test_posture_summary_attribute_from_the_stored_results(idp):
    from idp_service.platform.models import utcnow
    from idp_service.posture.service import summary_for_device
    from idp_service.posture.tables import CheckResultRow

    db = idp.extensions["devicetrust"].db
    client = FlaskClient(idp)
    device = enroll(idp, client, "jo@example.com")
    with db.read_session() as s:
        assert summary_for_device(s, device.id) == {"posture": "unknown"}
    with db.session() as s:
        for check_id, status in (("disk", "PASS"), ("os", "STALE"), ("fw", "FAIL")):
            s.add(
                CheckResultRow(
                    device_id=device.id, check_id=check_id, status=status, evaluated_at=utcnow()
                )
            )
    with db.read_session() as s:
        assert summary_for_device(s, device.id) == {"posture": "failing:fw,os"}
    with db.session() as s:
        s.execute(update(CheckResultRow).values(status="PASS"))
    with db.read_session() as s:
        assert summary_for_device(s, device.id) == {"posture": "compliant"}
