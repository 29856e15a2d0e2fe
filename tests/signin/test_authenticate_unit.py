"""``idp_service/signin/authenticate.py`` in-process, on SQLite and PostgreSQL.

:func:`authenticate.verify` is driven directly with answers built by the real
``trust_protocol`` functions (no service process):

* an accepted answer verifies its transaction once, and says so; its copy is a replay;
* the binding is checked when the caller names one; other bindings name no transaction;
* each refusal of the registry gives its code, denies the transaction for a device
  decision (not for bad input) and is audited with who and where;
* a device whose owner changed signs in as its new owner (the remembered owner is read again);
* detection: a clone or a stale device is refused and its state changed by policy, with
  the challenge recorded as refused; under the "flag" policy it signs in, flagged;
* the re-authentication step's refusal and grant reach the caller.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import uuid

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update

from idp_service.devices import challenges
from idp_service.devices.flag_tables import DeviceFlag
from idp_service.platform.models import Device, LoginTransaction, utcnow
from idp_service.services import Services
from idp_service.signin import authenticate, transactions
from idp_service.signin.authenticate import Authentication
from idp_service.signin.reads import DeviceOwners
from idp_service.signin.store import Guards
from idp_service.upstream import reauth
from idp_service.upstream.tables import ReauthPolicy, ReauthToken, ReverifyMark, UpstreamLogin
from tests.signin_helpers import (
    answer,
    audit_rows,
    challenge_rows,
    device_row,
    new_txn,
    set_active,
    trusted_device,
)
from tests.signin_helpers import shared_service as shared_service  # noqa: F401 - the fixture
from trust_protocol import DeviceKeys
from trust_protocol.errors import ProtocolError
from trust_protocol.reauth import open_grant

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def service(shared_service: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    # Tests change the detection policies; each gets them back as they were.
    for name in ("clone_policy", "stale_policy", "stale_after", "concurrent_window"):
        monkeypatch.setattr(shared_service.settings, name, getattr(shared_service.settings, name))
    return shared_service


def _txn(service: Services, txn_id: str) -> LoginTransaction:
    with service.db.session() as s:
        row = s.get(LoginTransaction, txn_id)
        s.expunge(row)
    return row


def _refused(code: str, service: Services, envelope: bytes, **kw) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        authenticate.verify(service, envelope, **kw)
    assert refused.value.code == code, refused.value
    return refused.value


def _verified_count() -> float:
    return (
        REGISTRY.get_sample_value("devicetrust_signins_total", {"outcome": "verified", "code": ""})
        or 0.0
    )


def _refusal_events(service: Services, device_id: str | None) -> list:
    return [
        e
        for e in audit_rows(service, device_id)
        if e.action == "login.device_verified" and e.outcome != "ok"
    ]


# ---- accepted ---------------------------------------------------------------------------------


def test_an_accepted_answer_verifies_its_transaction_once(service):
    keys, user_id = trusted_device(service)
    txn = new_txn(service)
    envelope = answer(
        service, keys, binding=transactions.binding_for(txn), clock_offset=2.5, agent_version="a-7"
    )
    counted = _verified_count()
    done = authenticate.verify(
        service,
        envelope,
        via="callback",
        expected_binding=transactions.binding_for(txn),
        remote_addr="198.51.100.4",
    )
    assert done == Authentication(
        keys.device_id, user_id, txn, done.clock_skew, "callback", "verified", None, None
    )
    assert 2.0 < done.clock_skew < 3.0
    assert _verified_count() == counted + 1
    (row,) = challenge_rows(service, keys.device_id)
    assert (row.binding, row.consumed_via, row.result) == (
        transactions.binding_for(txn),
        "callback",
        "ok",
    )
    (event,) = [e for e in audit_rows(service, keys.device_id) if e.action.startswith("login.")]
    assert (event.outcome, event.user_id, event.remote_addr) == ("ok", user_id, "198.51.100.4")
    assert event.details == {"via": "callback", "clock_skew": round(done.clock_skew, 3)}
    device = device_row(service, keys.device_id)
    assert device.agent_version == "a-7" and abs(device.last_clock_skew - done.clock_skew) < 1e-6
    stored = _txn(service, txn)
    assert (stored.status, stored.device_id, stored.user_id) == (
        "verified",
        keys.device_id,
        user_id,
    )
    # The other copy of the same answer is a replay: refused, audited, the sign-in stands.
    _refused("challenge_replayed", service, envelope, via="browser", remote_addr="203.0.113.9")
    assert _verified_count() == counted + 1
    assert _txn(service, txn).status == "verified"
    (refusal,) = _refusal_events(service, keys.device_id)
    assert (refusal.outcome, refusal.code, refusal.user_id, refusal.remote_addr) == (
        "rejected",
        "challenge_replayed",
        user_id,
        "203.0.113.9",
    )
    assert refusal.details == {"via": "browser"}


def test_an_answer_for_no_transaction_verifies_nothing_else(service):
    keys, user_id = trusted_device(service)
    counted = _verified_count()
    done = authenticate.verify(service, answer(service, keys, binding="other:x"), via="browser")
    assert (done.user_id, done.txn_id, done.txn_status, done.txn_error, done.reauth_grant) == (
        user_id,
        None,
        None,
        None,
        None,
    )
    assert _verified_count() == counted  # no sign-in was verified by it
    # A transaction id that names nothing: the answer is recorded, nothing is verified.
    done = authenticate.verify(service, answer(service, keys, binding="login:nothing"), via="x")
    assert (done.txn_id, done.txn_status) == ("nothing", None)


def test_a_settled_transaction_reports_where_it_stands(service):
    keys, user_id = trusted_device(service)
    txn = new_txn(service)
    with service.db.session() as s:
        transactions.mark_denied(s, txn, code="device_revoked", device_id=None, user_id=None)
    counted = _verified_count()
    done = authenticate.verify(
        service, answer(service, keys, binding=transactions.binding_for(txn)), via="browser"
    )
    assert (done.txn_status, done.txn_error) == ("denied", "device_revoked")
    assert _verified_count() == counted


def test_the_binding_is_checked_when_named(service):
    keys, _ = trusted_device(service)
    first, second = new_txn(service), new_txn(service)
    envelope = answer(service, keys, binding=transactions.binding_for(second))
    _refused(
        "binding_mismatch",
        service,
        envelope,
        via="browser",
        expected_binding=transactions.binding_for(first),
    )
    assert challenge_rows(service, keys.device_id) == []
    assert (_txn(service, first).status, _txn(service, second).status) == ("pending", "pending")
    (refusal,) = _refusal_events(service, keys.device_id)
    assert (refusal.outcome, refusal.code) == ("rejected", "binding_mismatch")
    done = authenticate.verify(
        service, envelope, via="browser", expected_binding=transactions.binding_for(second)
    )
    assert done.txn_status == "verified"


def test_bad_input_is_audited_without_a_device(service):
    _refused("malformed", service, b"[]", via="browser", remote_addr="192.0.2.99")
    (event,) = [e for e in audit_rows(service) if e.remote_addr == "192.0.2.99"]
    assert (event.action, event.outcome, event.code) == (
        "login.device_verified",
        "rejected",
        "malformed",
    )
    assert (event.user_id, event.device_id, event.details) == (None, None, {"via": "browser"})


def test_an_unknown_device_is_refused(service):
    keys = DeviceKeys.generate(str(uuid.uuid4()))
    txn = new_txn(service)
    _refused(
        "device_unknown",
        service,
        answer(service, keys, binding=transactions.binding_for(txn)),
        via="browser",
    )
    assert _txn(service, txn).status == "pending"  # bad input, not a decision about a device
    (event,) = _refusal_events(service, keys.device_id)
    assert (event.outcome, event.code, event.user_id) == ("rejected", "device_unknown", None)
    assert challenge_rows(service, keys.device_id) == []


# ---- the registry's refusals ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "active", "code"),
    [
        ("revoked", True, "device_revoked"),
        ("denied", True, "device_denied"),
        ("pending", True, "device_pending"),
        ("suspended", True, "device_suspended"),
        ("trusted", False, "owner_inactive"),
    ],
)
def test_a_device_decision_denies_the_transaction(service, state, active, code):
    keys, user_id = trusted_device(service, state=state, active=active)
    txn = new_txn(service)
    _refused(
        code,
        service,
        answer(service, keys, binding=transactions.binding_for(txn)),
        via="callback",
        remote_addr="192.0.2.1",
    )
    stored = _txn(service, txn)
    assert (stored.status, stored.error_code, stored.device_id, stored.user_id) == (
        "denied",
        code,
        keys.device_id,
        user_id,
    )
    (event,) = _refusal_events(service, keys.device_id)
    assert (event.outcome, event.code, event.user_id, event.remote_addr, event.details) == (
        "denied",
        code,
        user_id,
        "192.0.2.1",
        {"via": "callback"},
    )
    assert challenge_rows(service, keys.device_id) == []


def test_another_key_for_the_device_is_a_decision_too(service):
    keys, user_id = trusted_device(service)
    imposter = DeviceKeys.generate(keys.device_id)
    txn = new_txn(service)
    _refused(
        "device_key_mismatch",
        service,
        answer(service, imposter, binding=transactions.binding_for(txn)),
        via="browser",
    )
    stored = _txn(service, txn)
    assert (stored.status, stored.error_code, stored.user_id) == (
        "denied",
        "device_key_mismatch",
        user_id,
    )
    assert challenge_rows(service, keys.device_id) == []


def test_a_decision_without_a_transaction_is_only_audited(service):
    keys, _ = trusted_device(service, state="revoked")
    _refused("device_revoked", service, answer(service, keys, binding="other"), via="browser")
    (event,) = _refusal_events(service, keys.device_id)
    assert (event.outcome, event.code) == ("denied", "device_revoked")


def test_a_device_that_changed_owner_signs_in_as_its_new_owner(service):
    keys, first_owner = trusted_device(service)
    assert authenticate.verify(service, answer(service, keys), via="browser").user_id == (
        first_owner
    )
    assert service.device_owners.remembered(keys.device_id) == first_owner
    _, second_owner = trusted_device(service)
    with service.db.session() as s:
        s.get(Device, keys.device_id).user_id = second_owner
    txn = new_txn(service)
    done = authenticate.verify(
        service, answer(service, keys, binding=transactions.binding_for(txn)), via="browser"
    )
    assert (done.user_id, done.txn_status) == (second_owner, "verified")
    assert _txn(service, txn).user_id == second_owner
    assert service.device_owners.remembered(keys.device_id) == second_owner


def test_a_deactivated_owner_is_refused_though_remembered(service):
    keys, user_id = trusted_device(service)
    assert authenticate.verify(service, answer(service, keys), via="browser")
    set_active(service, user_id, False)
    _refused("owner_inactive", service, answer(service, keys), via="browser")


# ---- the guards -------------------------------------------------------------------------------


def test_the_guards_come_from_the_answer_and_the_settings(service, monkeypatch):
    keys, _ = trusted_device(service)
    now = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
    monkeypatch.setattr(service, "clock", lambda: now)
    service.settings.stale_after = 1000
    service.settings.concurrent_window = 60
    platform = {"os": "linux", "hardware_uuid": "HW-1", "serial": "SN-1", "instance": "i-1"}
    verified = challenges.open_answer(
        service, answer(service, keys, platform=platform), "authenticate"
    )
    assert authenticate._guards(service, verified) == Guards(
        hardware_uuid="HW-1",
        serial="SN-1",
        stale_before=now - dt.timedelta(seconds=1000),
        instance="i-1",
        alternating="i-1",
        window_start=now - dt.timedelta(seconds=60),
    )
    empty = challenges.open_answer(
        service,
        answer(service, keys, platform={"hardware_uuid": "", "serial": "", "instance": ""}),
        "authenticate",
    )
    assert authenticate._guards(service, empty)[:2] == (None, None)
    assert authenticate._guards(service, empty)[3:5] == (None, None)


# ---- detection --------------------------------------------------------------------------------


def _flags(service: Services, device_id: str) -> list[str]:
    with service.db.session() as s:
        return sorted(f.kind for f in s.query(DeviceFlag).filter_by(device_id=device_id))


def _flag_rows(service: Services, device_id: str) -> list[DeviceFlag]:
    with service.db.session() as s:
        rows = list(s.query(DeviceFlag).filter_by(device_id=device_id).order_by(DeviceFlag.id))
        s.expunge_all()
    return rows


def test_a_clone_is_suspended_and_the_challenge_recorded_refused(service):
    keys, user_id = trusted_device(service, hardware_uuid="hw-real")
    bystander, _ = trusted_device(service)
    untouched = device_row(service, bystander.device_id).updated_at
    txn = new_txn(service)
    envelope = answer(
        service,
        keys,
        binding=transactions.binding_for(txn),
        platform={"os": "linux", "hardware_uuid": "hw-other"},
    )
    refused = _refused(
        "device_suspended", service, envelope, via="callback", remote_addr="192.0.2.5"
    )
    assert refused.detail == "hardware_mismatch"  # what the agent and the page are told
    assert device_row(service, keys.device_id).state == "suspended"
    (flag,) = _flag_rows(service, keys.device_id)
    assert flag.kind == "hardware_mismatch"
    assert (flag.evidence["via"], flag.evidence["remote_addr"]) == ("callback", "192.0.2.5")
    # The slow path locked (and so touched) this device's row only.
    assert device_row(service, bystander.device_id).updated_at == untouched
    (row,) = challenge_rows(service, keys.device_id)
    assert (row.result, row.consumed_via) == ("device_suspended", "callback")
    stored = _txn(service, txn)
    assert (stored.status, stored.error_code) == ("denied", "device_suspended")
    # Its other copy is a replay, and is not judged (nor flagged) again.
    _refused("challenge_replayed", service, envelope, via="browser")
    assert _flags(service, keys.device_id) == ["hardware_mismatch"]


def test_a_stale_device_is_denied(service):
    service.settings.stale_after = 3600
    keys, _ = trusted_device(service, last_seen=utcnow() - dt.timedelta(hours=2))
    _refused("device_denied", service, answer(service, keys), via="browser")
    assert device_row(service, keys.device_id).state == "denied"
    assert _flags(service, keys.device_id) == ["stale"]
    assert [r.result for r in challenge_rows(service, keys.device_id)] == ["device_denied"]


def test_under_the_flag_policy_a_clone_signs_in_flagged(service):
    service.settings.clone_policy = "flag"
    then = utcnow() - dt.timedelta(minutes=5)
    keys, user_id = trusted_device(service, hardware_uuid="hw-real", instances=("b", "a", then))
    txn = new_txn(service)
    counted = _verified_count()
    done = authenticate.verify(
        service,
        answer(
            service,
            keys,
            binding=transactions.binding_for(txn),
            platform={"hardware_uuid": "hw-other", "instance": "a"},
            agent_version="flagged-1",
            clock_offset=-1.5,
        ),
        via="callback",
        remote_addr="192.0.2.8",
    )
    assert (done.user_id, done.txn_id, done.txn_status, done.txn_error) == (
        user_id,
        txn,
        "verified",
        None,
    )
    assert _verified_count() == counted + 1
    assert _flags(service, keys.device_id) == ["concurrent_agents", "hardware_mismatch"]
    device = device_row(service, keys.device_id)
    assert (device.state, device.agent_version) == ("trusted", "flagged-1")
    assert abs(device.last_clock_skew - done.clock_skew) < 1e-6
    assert abs(device.last_seen - utcnow()) < dt.timedelta(seconds=30)
    assert (device.agent_instance, device.agent_instance_prev) == ("a", "b")
    assert device.agent_instance_at > then
    (row,) = challenge_rows(service, keys.device_id)
    assert (row.result, row.consumed_via) == ("ok", "callback")
    (event,) = [
        e
        for e in audit_rows(service, keys.device_id)
        if e.action == "login.device_verified" and e.outcome == "ok"
    ]
    assert (event.user_id, event.remote_addr) == (user_id, "192.0.2.8")
    assert event.details == {
        "via": "callback",
        "clock_skew": round(done.clock_skew, 3),
        "flagged": ["hardware_mismatch", "concurrent_agents"],
    }
    stored = _txn(service, txn)
    assert (stored.status, stored.device_id, stored.user_id) == (
        "verified",
        keys.device_id,
        user_id,
    )


def test_under_the_flag_policy_an_answer_for_no_transaction(service):
    service.settings.clone_policy = "flag"
    keys, user_id = trusted_device(service, hardware_uuid="hw-real")
    done = authenticate.verify(
        service,
        answer(service, keys, binding="other", platform={"hardware_uuid": "hw-other"}),
        via="browser",
    )
    assert (done.user_id, done.txn_id, done.txn_status) == (user_id, None, None)
    txn = new_txn(service)
    with service.db.session() as s:
        transactions.mark_denied(s, txn, code="device_denied", device_id=None, user_id=None)
    done = authenticate.verify(
        service,
        answer(
            service,
            keys,
            binding=transactions.binding_for(txn),
            platform={"hardware_uuid": "hw-other"},
        ),
        via="browser",
    )
    assert (done.txn_status, done.txn_error) == ("denied", "device_denied")
    done = authenticate.verify(
        service,
        answer(service, keys, binding="login:gone", platform={"hardware_uuid": "hw-other"}),
        via="browser",
    )
    assert (done.txn_id, done.txn_status) == ("gone", None)


def test_a_refusal_that_detection_cannot_explain_is_a_revocation(service):
    """The guarded write refused, yet a moment later everything looks fine: a concurrent
    change raced the answer. Refused, and nothing is recorded."""
    keys, _ = trusted_device(service)
    txn = new_txn(service)
    verified = challenges.open_answer(
        service, answer(service, keys, binding=transactions.binding_for(txn)), "authenticate"
    )
    with pytest.raises(ProtocolError) as refused:
        authenticate._explain_refusal(service, verified, "browser", None)
    assert refused.value.code == "device_revoked"
    assert refused.value.detail == "the device's state changed during this sign-in"
    assert challenge_rows(service, keys.device_id) == []
    # The same, found only after the device was locked (the detection step's second look).
    with service.db.session() as s:
        device = s.get(Device, keys.device_id)
        with pytest.raises(ProtocolError) as refused:
            authenticate._judge_detected(
                service, s, verified, device, "browser", None, service.clock()
            )
        assert refused.value.code == "device_revoked"
        assert refused.value.detail == "the device's state changed during this sign-in"
        s.rollback()
    assert challenge_rows(service, keys.device_id) == []
    assert _txn(service, txn).status == "pending"


def test_detection_judges_the_device_as_it_is_once_locked(service):
    """A device revoked between the slow path's read and its lock is refused as revoked."""
    keys, _ = trusted_device(service, hardware_uuid="hw-real")
    verified = challenges.open_answer(
        service,
        answer(service, keys, platform={"hardware_uuid": "hw-other"}),
        "authenticate",
    )
    with service.db.session() as s:
        device = s.get(Device, keys.device_id)
        s.expunge(device)
    with service.db.session() as s:
        s.get(Device, keys.device_id).state = "revoked"
    with pytest.raises(ProtocolError) as refused, service.db.session() as s:
        device = s.merge(device, load=False)
        authenticate._judge_detected(service, s, verified, device, "browser", None, utcnow())
    assert refused.value.code == "device_revoked"
    assert challenge_rows(service, keys.device_id) == []
    assert _flags(service, keys.device_id) == []


def test_detection_refuses_an_owner_deactivated_before_the_lock(service):
    keys, user_id = trusted_device(service, hardware_uuid="hw-real")
    verified = challenges.open_answer(
        service,
        answer(service, keys, platform={"hardware_uuid": "hw-other"}),
        "authenticate",
    )
    set_active(service, user_id, False)
    with pytest.raises(ProtocolError) as refused, service.db.session() as s:
        device = s.get(Device, keys.device_id)
        authenticate._judge_detected(service, s, verified, device, "browser", None, utcnow())
    assert refused.value.code == "owner_inactive"
    assert _flags(service, keys.device_id) == []


# ---- the re-authentication step ---------------------------------------------------------------


def test_a_reverify_mark_denies_the_sign_in_before_anything_is_recorded(service):
    keys, user_id = trusted_device(service)
    with service.db.session() as s:
        s.add(ReverifyMark(device_id=keys.device_id, requested_by="admin"))
    reauth.ANY_POLICY.forget()
    txn = new_txn(service)
    done = authenticate.verify(
        service,
        answer(service, keys, binding=transactions.binding_for(txn), clock_offset=3.0),
        via="browser",
        remote_addr="192.0.2.44",
    )
    assert done == Authentication(
        keys.device_id, user_id, txn, done.clock_skew, "browser", "denied", "reverify_required"
    )
    assert isinstance(done.clock_skew, float) and 2.0 < done.clock_skew < 4.0
    (required,) = [e for e in audit_rows(service, keys.device_id) if e.action == "reauth.required"]
    assert (required.outcome, required.code, required.remote_addr) == (
        "denied",
        "reverify_required",
        "192.0.2.44",
    )
    stored = _txn(service, txn)
    assert (stored.status, stored.error_code, stored.device_id, stored.user_id) == (
        "denied",
        "reverify_required",
        keys.device_id,
        user_id,
    )
    assert challenge_rows(service, keys.device_id) == []


def test_a_grant_issued_in_this_answer_reaches_the_caller(service):
    keys, user_id = trusted_device(service)
    txn = new_txn(service)
    envelope = answer(service, keys, binding=transactions.binding_for(txn))
    verified = challenges.open_answer(service, envelope, "authenticate")
    with service.db.session() as s:
        # The other copy of this answer was given a grant (and any row makes the step look).
        s.add(ReverifyMark(device_id=str(uuid.uuid4()), requested_by="admin"))
        s.add(
            ReauthToken(
                id=uuid.uuid4().hex,
                family=uuid.uuid4().hex,
                device_id=keys.device_id,
                user_id=user_id,
                token_hash=uuid.uuid4().hex * 2,
                expires_at=utcnow() + dt.timedelta(hours=1),
                issued_in=verified.challenge.id_text,
                sealed=b"sealed-grant",
            )
        )
    reauth.ANY_POLICY.forget()
    done = authenticate.verify(service, envelope, via="callback")
    assert dataclasses.astuple(done)[5:] == ("verified", None, b"sealed-grant")


def test_every_finding_is_named_in_the_refusal(service):
    then = utcnow() - dt.timedelta(minutes=5)
    keys, _ = trusted_device(service, hardware_uuid="hw-real", instances=("b", "a", then))
    refused = _refused(
        "device_suspended",
        service,
        answer(service, keys, platform={"hardware_uuid": "hw-other", "instance": "a"}),
        via="browser",
    )
    assert refused.detail == "hardware_mismatch; concurrent_agents"


def test_a_flagged_answer_from_the_current_instance_keeps_the_switch(service):
    service.settings.clone_policy = "flag"
    then = utcnow() - dt.timedelta(minutes=5)
    keys, _ = trusted_device(service, hardware_uuid="hw-real", instances=("b", "a", then))
    done = authenticate.verify(
        service,
        answer(service, keys, platform={"hardware_uuid": "hw-other", "instance": "b"}),
        via="browser",
    )
    assert done.txn_status is None
    assert _flags(service, keys.device_id) == ["hardware_mismatch"]
    device = device_row(service, keys.device_id)
    assert (device.agent_instance, device.agent_instance_prev, device.agent_instance_at) == (
        "b",
        "a",
        then,
    )


def test_a_proved_upstream_sign_in_starts_a_token_family_sealed_to_the_device(service):
    keys, user_id = trusted_device(service)
    txn = new_txn(service)
    now = utcnow()
    with service.db.session() as s:
        s.add(
            UpstreamLogin(
                state_hash=uuid.uuid4().hex,
                idp="test",
                txn_id=txn,
                purpose="reverify",
                nonce="n",
                code_verifier="v",
                expires_at=now + dt.timedelta(minutes=5),
                user_id=user_id,
                verified_at=now,
            )
        )
    reauth.ANY_POLICY.forget()
    with service.db.session() as s:  # a window of one hour for this user's device
        s.add(ReauthPolicy(scope=reauth.GLOBAL_SCOPE, lifetime=3600, required=False))
    try:
        envelope = answer(service, keys, binding=transactions.binding_for(txn))
        done = authenticate.verify(service, envelope, via="browser", remote_addr="192.0.2.45")
    finally:
        with service.db.session() as s:
            s.query(ReauthPolicy).delete()
        reauth.ANY_POLICY.forget()
    assert (done.txn_status, done.reauth_grant is not None) == ("verified", True)
    grant = open_grant(
        done.reauth_grant, keys.box_key, service.keys.verify_key, keys.device_id, now=time.time()
    )
    assert grant.to == keys.device_id
    (issued,) = [e for e in audit_rows(service, keys.device_id) if e.action == "reauth.issue"]
    assert issued.remote_addr == "192.0.2.45"


# ---- the remembered owner ---------------------------------------------------------------------


class CountingOwners(DeviceOwners):
    """The service's own owner hints, counting the reads of the database (and able to let
    something happen in the database at that moment, as a concurrent request would)."""

    def __init__(self, engine, during_read=None) -> None:
        super().__init__(engine)
        self.reads = 0
        self.during_read = during_read

    def read(self, device_id: str) -> str | None:
        self.reads += 1
        if self.during_read is not None:
            self.during_read()
        return super().read(device_id)


def test_a_remembered_owner_saves_the_read(service, monkeypatch):
    owners = CountingOwners(service.db.engine)
    monkeypatch.setattr(service, "device_owners", owners)
    keys, user_id = trusted_device(service)
    assert authenticate.verify(service, answer(service, keys), via="browser").user_id == user_id
    assert owners.reads == 1  # the first answer reads the owner
    assert authenticate.verify(service, answer(service, keys), via="browser").user_id == user_id
    assert owners.reads == 1  # the next ones write at once (one guarded write)
    # The owner changed: the refused write reads it again, once, and signs in as the new one.
    _, new_owner = trusted_device(service)
    with service.db.session() as s:
        s.get(Device, keys.device_id).user_id = new_owner
    assert authenticate.verify(service, answer(service, keys), via="browser").user_id == new_owner
    assert owners.reads == 2


def test_a_refusal_with_the_same_owner_is_not_written_again(service, monkeypatch):
    """The guarded write refused a device whose owner has not changed: the write is not tried
    again; the slow path says why, even if the device was re-trusted in the meantime."""
    keys, user_id = trusted_device(service)

    def retrust() -> None:
        with service.db.session() as s:
            s.get(Device, keys.device_id).state = "trusted"

    owners = CountingOwners(service.db.engine, during_read=retrust)
    monkeypatch.setattr(service, "device_owners", owners)
    owners._owners[keys.device_id] = user_id  # remembered from an earlier sign-in
    with service.db.session() as s:
        s.get(Device, keys.device_id).state = "revoked"
    refused = _refused("device_revoked", service, answer(service, keys), via="browser")
    assert refused.detail == "the device's state changed during this sign-in"
    assert owners.reads == 1
    assert challenge_rows(service, keys.device_id) == []


def test_a_revocation_committed_while_detection_waits_for_the_lock_wins(service):
    """Detection locks the device before it judges it again: a revocation in flight (its
    transaction holds the row) is waited for and then seen, never overwritten."""
    keys, _ = trusted_device(service, hardware_uuid="hw-real")
    verified = challenges.open_answer(
        service, answer(service, keys, platform={"hardware_uuid": "hw-other"}), "authenticate"
    )
    with service.db.session() as s:
        device = s.get(Device, keys.device_id)
        s.expunge(device)
    outcome: list[str] = []

    def slow_path() -> None:
        try:
            with service.db.session() as s:
                mine = s.merge(device, load=False)
                authenticate._judge_detected(service, s, verified, mine, "browser", None, utcnow())
            outcome.append("accepted")
        except ProtocolError as exc:
            outcome.append(exc.code)

    with service.db.engine.connect() as admin:
        revoking = admin.begin()
        admin.execute(update(Device).where(Device.id == keys.device_id).values(state="revoked"))
        worker = threading.Thread(target=slow_path)
        worker.start()
        time.sleep(0.5)  # the slow path reaches the lock (or the write lock, on SQLite) and waits
        revoking.commit()
    worker.join(30)
    assert outcome == ["device_revoked"]
    assert device_row(service, keys.device_id).state == "revoked"
    assert _flags(service, keys.device_id) == []
