"""``idp_service/signin/store.py`` in-process, on SQLite and PostgreSQL: the sign-in's writes.

* :func:`consume_for_trusted_device` writes every row it promises (the challenge, the
  device's last-seen data, the audit event with its MAC, the transaction verified) with
  the values given, and writes nothing when any part of its guard fails: another key,
  another owner, an inactive owner, a device not trusted, a replay, each of detection's
  guards (hardware identifiers, staleness, an alternating agent instance).
* The batch path (``_consume_many`` with several answers, as the group committer runs it)
  keeps each answer's result in its own place and applies each guard on its own.
* :func:`complete_verified` claims a verified transaction once, audits it and keeps the
  issued Response; it claims nothing for any other transaction, device, owner or state.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from idp_service.platform.audit_chain import row_values
from idp_service.platform.audit_keys import row_mac
from idp_service.platform.driver import utc
from idp_service.platform.models import AuditEvent, Device, LoginTransaction
from idp_service.services import Services
from idp_service.signin import store
from idp_service.signin.store import (
    EPOCH,
    Consumed,
    Guards,
    complete_verified,
    consume_for_trusted_device,
)
from tests.signin_helpers import (
    audit_rows,
    challenge_rows,
    device_row,
    new_txn,
    set_active,
    trusted_device,
)
from tests.signin_helpers import shared_service as shared_service  # noqa: F401 - the fixture

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def service(shared_service: Services) -> Services:
    return shared_service


def _consume(service: Services, keys, user_id: str, **kw: Any) -> Consumed | None:
    issued = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    args: dict[str, Any] = {
        "challenge_id": uuid.uuid4().hex,
        "binding": "login:none",
        "issued_at": issued,
        "expires_at": issued + dt.timedelta(minutes=1),
        "device_id": keys.device_id,
        "user_id": user_id,
        "sign_key": keys.sign_public,
        "via": "browser",
        "clock_skew": 1.25,
        "agent_version": "agent-9",
        "remote_addr": "192.0.2.7",
        "details": {"via": "browser", "clock_skew": 1.25},
    }
    args.update(kw)
    return consume_for_trusted_device(service.db.engine, **args)


def _mac_ok(row: AuditEvent) -> bool:
    return row.mac == row_mac(row_values(row))


def _txn(service: Services, txn_id: str) -> LoginTransaction:
    with service.db.session() as s:
        row = s.get(LoginTransaction, txn_id)
        s.expunge(row)
    return row


# ---- Guards ---------------------------------------------------------------------------------


def test_guards_params_name_each_check():
    stale, window = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    guards = Guards("hw", "sn", stale, "inst", "alt", window)
    assert guards.params() == {
        "hw_uuid": "hw",
        "serial": "sn",
        "stale_before": stale,
        "inst": "inst",
        "alt_inst": "alt",
        "window_start": window,
    }
    assert Guards().params() == {
        "hw_uuid": None,
        "serial": None,
        "stale_before": EPOCH,
        "inst": None,
        "alt_inst": None,
        "window_start": EPOCH,
    }


# ---- consume_for_trusted_device: what it writes ---------------------------------------------


def test_an_accepted_answer_writes_every_row_with_its_values(service):
    keys, user_id = trusted_device(service)
    txn = new_txn(service)
    cid = uuid.uuid4().hex
    issued = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    before = dt.datetime.now(dt.UTC)
    done = _consume(
        service,
        keys,
        user_id,
        challenge_id=cid,
        binding=f"login:{txn}",
        issued_at=issued,
        expires_at=issued + dt.timedelta(seconds=60),
        via="callback",
        txn_id=txn,
        guards=Guards(instance="inst-1"),
    )
    after = dt.datetime.now(dt.UTC)
    assert done == Consumed(user_id, "verified", None)
    (row,) = challenge_rows(service, keys.device_id)
    assert (row.id, row.purpose, row.binding) == (cid, "authenticate", f"login:{txn}")
    assert (row.issued_at, row.expires_at) == (issued, issued + dt.timedelta(seconds=60))
    assert before - SECOND <= row.consumed_at <= after + SECOND
    assert (row.consumed_via, row.device_id, row.result) == ("callback", keys.device_id, "ok")
    now = row.consumed_at
    device = device_row(service, keys.device_id)
    assert abs(device.last_seen - now) < SECOND and abs(device.updated_at - now) < SECOND
    assert (device.last_clock_skew, device.agent_version) == (1.25, "agent-9")
    assert (device.agent_instance, device.agent_instance_prev) == ("inst-1", None)
    assert abs(device.agent_instance_at - now) < SECOND
    (event,) = audit_rows(service, keys.device_id)
    assert (event.action, event.outcome, event.code) == ("login.device_verified", "ok", None)
    assert (event.user_id, event.device_id, event.remote_addr) == (
        user_id,
        keys.device_id,
        "192.0.2.7",
    )
    assert event.details == {"via": "browser", "clock_skew": 1.25}
    assert abs(event.at - now) < SECOND
    assert _mac_ok(event)
    verified = _txn(service, txn)
    assert (verified.status, verified.device_id, verified.user_id) == (
        "verified",
        keys.device_id,
        user_id,
    )
    assert abs(verified.verified_at - now) < SECOND


def test_the_audit_row_may_have_no_address(service):
    keys, user_id = trusted_device(service)
    assert _consume(service, keys, user_id, remote_addr=None) == Consumed(user_id, None, None)
    (event,) = audit_rows(service, keys.device_id)
    assert event.remote_addr is None and _mac_ok(event)


def test_no_transaction_or_an_unknown_one_says_none(service):
    keys, user_id = trusted_device(service)
    assert _consume(service, keys, user_id) == Consumed(user_id, None, None)
    assert _consume(service, keys, user_id, txn_id="no-such-txn") == Consumed(user_id, None, None)
    assert len(challenge_rows(service, keys.device_id)) == 2


def test_a_settled_transaction_is_left_as_it_stands(service):
    keys, user_id = trusted_device(service)
    txn = new_txn(service)
    with service.db.session() as s:
        row = s.get(LoginTransaction, txn)
        row.status, row.error_code = "denied", "device_revoked"
    assert _consume(service, keys, user_id, txn_id=txn) == Consumed(
        user_id, "denied", "device_revoked"
    )
    assert _txn(service, txn).status == "denied"
    # A verified one answered again by another challenge stays verified, by the first.
    txn = new_txn(service)
    assert _consume(service, keys, user_id, txn_id=txn).txn_status == "verified"
    at = _txn(service, txn).verified_at
    assert _consume(service, keys, user_id, txn_id=txn) == Consumed(user_id, "verified", None)
    assert _txn(service, txn).verified_at == at


def test_the_instance_is_recorded_as_a_switch(service):
    then = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    keys, user_id = trusted_device(service, instances=("a", None, then))
    # The same instance: nothing moves.
    assert _consume(service, keys, user_id, guards=Guards(instance="a"))
    device = device_row(service, keys.device_id)
    assert (device.agent_instance, device.agent_instance_prev, device.agent_instance_at) == (
        "a",
        None,
        then,
    )
    # No instance given: nothing moves either.
    assert _consume(service, keys, user_id, guards=Guards())
    assert device_row(service, keys.device_id).agent_instance == "a"
    # Another instance takes over.
    assert _consume(service, keys, user_id, guards=Guards(instance="b"))
    device = device_row(service, keys.device_id)
    assert (device.agent_instance, device.agent_instance_prev) == ("b", "a")
    assert device.agent_instance_at > then


# ---- consume_for_trusted_device: the guard ---------------------------------------------------


def _nothing_written(service: Services, keys, before: Device) -> None:
    assert challenge_rows(service, keys.device_id) == []
    assert audit_rows(service, keys.device_id) == []
    after = device_row(service, keys.device_id)
    assert (after.last_seen, after.agent_version, after.agent_instance) == (
        before.last_seen,
        before.agent_version,
        before.agent_instance,
    )


@pytest.mark.parametrize("state", ["pending", "denied", "revoked", "suspended"])
def test_only_a_trusted_device_is_recorded(service, state):
    keys, user_id = trusted_device(service, state=state)
    before = device_row(service, keys.device_id)
    txn = new_txn(service)
    assert _consume(service, keys, user_id, txn_id=txn) is None
    _nothing_written(service, keys, before)
    assert _txn(service, txn).status == "pending"


def test_the_owner_must_be_active_and_the_one_named(service):
    keys, user_id = trusted_device(service)
    _, other_user = trusted_device(service)
    before = device_row(service, keys.device_id)
    assert _consume(service, keys, other_user) is None
    set_active(service, user_id, False)
    assert _consume(service, keys, user_id) is None
    _nothing_written(service, keys, before)
    set_active(service, user_id, True)
    assert _consume(service, keys, user_id) is not None


def test_the_key_must_be_the_registered_one(service):
    keys, user_id = trusted_device(service)
    other, _ = trusted_device(service)
    before = device_row(service, keys.device_id)
    assert _consume(service, keys, user_id, sign_key=other.sign_public) is None
    _nothing_written(service, keys, before)


def test_an_unknown_device_is_not_recorded(service):
    keys, user_id = trusted_device(service)
    assert _consume(service, keys, user_id, device_id="no-such-device") is None
    assert challenge_rows(service, "no-such-device") == []
    assert audit_rows(service, "no-such-device") == []


def test_a_replay_is_refused_and_changes_nothing(service):
    keys, user_id = trusted_device(service)
    cid = uuid.uuid4().hex
    assert _consume(service, keys, user_id, challenge_id=cid) is not None
    seen = device_row(service, keys.device_id)
    txn = new_txn(service)
    again = _consume(service, keys, user_id, challenge_id=cid, agent_version="other", txn_id=txn)
    assert again is None
    assert len(challenge_rows(service, keys.device_id)) == 1
    assert len(audit_rows(service, keys.device_id)) == 1
    after = device_row(service, keys.device_id)
    assert (after.last_seen, after.agent_version) == (seen.last_seen, seen.agent_version)
    assert _txn(service, txn).status == "pending"


@pytest.mark.parametrize(
    ("stored", "seen", "accepted"),
    [
        ((None, None), ("hw-1", "sn-1"), True),  # nothing registered: anything matches
        (("", ""), ("hw-1", "sn-1"), True),  # empty registered values match anything
        (("hw-1", "sn-1"), ("hw-1", "sn-1"), True),
        (("hw-1", "sn-1"), (None, None), True),  # not checked
        (("hw-1", "sn-1"), ("hw-2", None), False),
        (("hw-1", "sn-1"), (None, "sn-2"), False),
        (("hw-1", "sn-1"), ("hw-1", "sn-2"), False),
    ],
)
def test_the_hardware_guards(service, stored, seen, accepted):
    keys, user_id = trusted_device(service, hardware_uuid=stored[0], serial=stored[1])
    guards = Guards(hardware_uuid=seen[0], serial=seen[1])
    assert (_consume(service, keys, user_id, guards=guards) is not None) is accepted


def test_the_staleness_guard(service):
    last = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    keys, user_id = trusted_device(service, last_seen=last)
    assert _consume(service, keys, user_id, guards=Guards(stale_before=last + SECOND)) is None
    assert _consume(service, keys, user_id, guards=Guards(stale_before=last)) is not None


def test_the_alternating_instance_guard(service):
    switched = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    # "a" was replaced by "b" at `switched`; "a" answering again within the window is refused.
    keys, user_id = trusted_device(service, instances=("b", "a", switched))

    def alt(instance: str, window_start: dt.datetime) -> Guards:
        return Guards(instance=instance, alternating=instance, window_start=window_start)

    assert _consume(service, keys, user_id, guards=alt("a", switched)) is None
    assert _consume(service, keys, user_id, guards=alt("a", switched - SECOND)) is None
    assert device_row(service, keys.device_id).agent_instance == "b"
    # The current instance, another one, or "a" after the window: accepted.
    assert _consume(service, keys, user_id, guards=alt("b", switched)) is not None
    assert _consume(service, keys, user_id, guards=alt("c", switched)) is not None
    keys, user_id = trusted_device(service, instances=("b", "a", switched))
    assert _consume(service, keys, user_id, guards=alt("a", switched + SECOND)) is not None
    # No previous instance: nothing alternates.
    keys, user_id = trusted_device(service, instances=("b", None, switched))
    assert _consume(service, keys, user_id, guards=alt("a", switched)) is not None


# ---- the batch path --------------------------------------------------------------------------


def _params(keys, user_id: str, **kw: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    details = {"via": "callback"}
    params: dict[str, Any] = {
        "cid": uuid.uuid4().hex,
        "binding": "b",
        "issued_at": now,
        "expires_at": now + dt.timedelta(minutes=1),
        "now": now,
        "via": "callback",
        "device_id": keys.device_id,
        "user_id": user_id,
        "sign_key": keys.sign_public,
        "skew": 0.5,
        "agent_version": "batch",
        "remote_addr": None,
        "details": json.dumps(details),
        "mac": store._audit_mac(
            now,
            "login.device_verified",
            user_id=user_id,
            device_id=keys.device_id,
            remote_addr=None,
            details=details,
        ),
        "txn_id": None,
        **Guards().params(),
    }
    params.update(kw)
    return params


def _batch_of_three(service: Services):
    # Device ids sort in another order than the batch's, so the results must be put back.
    made = sorted((trusted_device(service) for _ in range(3)), key=lambda k: k[0].device_id)
    (k1, u1), (k2, u2), (k3, u3) = made[2], made[0], made[1]
    with service.db.session() as s:
        s.get(Device, k2.device_id).state = "revoked"
    txns = [new_txn(service) for _ in range(3)]
    batch = [
        _params(k1, u1, txn_id=txns[0]),
        _params(k2, u2, txn_id=txns[1]),
        _params(k3, u3, txn_id=txns[2]),
    ]
    return batch, [u1, u2, u3], txns


def test_a_batch_keeps_each_result_in_its_place(service):
    batch, users_, txns = _batch_of_three(service)
    results = store._consume_many(service.db.engine, batch)
    assert results == [
        Consumed(users_[0], "verified", None),
        None,
        Consumed(users_[2], "verified", None),
    ]
    assert [_txn(service, t).status for t in txns] == ["verified", "pending", "verified"]
    written = [len(challenge_rows(service, p["device_id"])) for p in batch]
    assert written == [1, 0, 1]
    events = [e for p in batch for e in audit_rows(service, p["device_id"])]
    assert len(events) == 2 and all(_mac_ok(e) for e in events)


def test_the_engines_committer_runs_one_and_many(service):
    engine = service.db.engine
    committer = store._committer(engine)
    assert store._committer(engine) is committer  # one per engine
    batch, users_, _ = _batch_of_three(service)
    assert committer._run_many(batch) == [
        Consumed(users_[0], "verified", None),
        None,
        Consumed(users_[2], "verified", None),
    ]
    keys, user_id = trusted_device(service)
    assert committer._run_one(_params(keys, user_id)) == Consumed(user_id, None, None)
    assert committer._run_one(_params(keys, "someone-else")) is None


def test_a_batch_that_fails_commits_nothing(service):
    keys, user_id = trusted_device(service)
    good = _params(keys, user_id)
    broken = _params(keys, user_id, device_id=None)  # not a valid row: the statement fails
    broken["cid"] = None
    with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's own error
        store._consume_many(service.db.engine, [good, broken])
    assert challenge_rows(service, keys.device_id) == []
    assert audit_rows(service, keys.device_id) == []


# ---- complete_verified ---------------------------------------------------------------------


def _verified_txn(service: Services, **device_kw: Any):
    keys, user_id = trusted_device(service, **device_kw)
    txn = new_txn(service)
    assert _consume(service, keys, user_id, txn_id=txn).txn_status == "verified"
    return keys.device_id, user_id, txn


def _issued(service: Services, txn: str) -> list[tuple]:
    with service.db.engine.connect() as c:
        return [
            (r[0], r[1], r[2], utc(r[3]), utc(r[4]))
            for r in c.execute(
                text(
                    "SELECT txn_id, saml_response, code, issued_at, valid_until"
                    " FROM saml_issued_responses WHERE txn_id = :t"
                ),
                {"t": txn},
            )
        ]


def _completions(
    service: Services, device_id: str, action: str = "saml.response"
) -> list[AuditEvent]:
    return [e for e in audit_rows(service, device_id) if e.action == action]


def test_complete_verified_claims_audits_and_keeps_the_response_once(service):
    device_id, user_id, txn = _verified_txn(service)
    valid_until = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
    before = dt.datetime.now(dt.UTC)
    assert complete_verified(
        service.db.engine,
        txn,
        user_id=user_id,
        device_id=device_id,
        action="saml.response",
        details={"sp": "https://sp.example"},
        issued=("PHJlc3BvbnNlLz4=", valid_until),
    )
    after = dt.datetime.now(dt.UTC)
    completed = _txn(service, txn).completed_at
    assert before - SECOND <= completed <= after + SECOND
    (event,) = _completions(service, device_id)
    assert (event.outcome, event.user_id, event.device_id) == ("ok", user_id, device_id)
    assert event.details == {"sp": "https://sp.example"}
    assert abs(event.at - completed) < SECOND and _mac_ok(event)
    ((stored_txn, response, code, issued_at, until),) = _issued(service, txn)
    assert (stored_txn, response, code, until) == (txn, "PHJlc3BvbnNlLz4=", None, valid_until)
    assert abs(issued_at - completed) < SECOND
    # Once only.
    assert not complete_verified(
        service.db.engine,
        txn,
        user_id=user_id,
        device_id=device_id,
        action="saml.response",
        details={},
        issued=("again", valid_until),
    )
    assert len(_completions(service, device_id)) == 1 and len(_issued(service, txn)) == 1
    assert _txn(service, txn).completed_at == completed


def test_complete_verified_without_a_response_stores_none(service):
    device_id, user_id, txn = _verified_txn(service)
    assert complete_verified(
        service.db.engine,
        txn,
        user_id=user_id,
        device_id=device_id,
        action="oidc.code",
        details={"client": "c"},
    )
    assert _issued(service, txn) == []
    (event,) = _completions(service, device_id, "oidc.code")
    assert event.details == {"client": "c"} and _mac_ok(event)


@pytest.mark.parametrize("change", ["pending", "other_device", "other_user", "revoked", "inactive"])
def test_complete_verified_claims_nothing_else(service, change):
    device_id, user_id, txn = _verified_txn(service)
    other_device, other_user, _ = _verified_txn(service)
    claim_device, claim_user = device_id, user_id
    if change == "pending":
        txn = new_txn(service)
    elif change == "other_device":
        claim_device = other_device
    elif change == "other_user":
        claim_user = other_user
    elif change == "revoked":
        with service.db.session() as s:
            s.get(Device, device_id).state = "revoked"
    else:
        set_active(service, user_id, False)
    assert not complete_verified(
        service.db.engine,
        txn,
        user_id=claim_user,
        device_id=claim_device,
        action="saml.response",
        details={},
        issued=("r", dt.datetime(2026, 6, 1, tzinfo=dt.UTC)),
    )
    assert _completions(service, device_id) == [] and _issued(service, txn) == []
    assert _txn(service, txn).completed_at is None


def test_complete_verified_rolls_back_a_failed_write(service):
    device_id, user_id, txn = _verified_txn(service)
    with service.db.session() as s:  # a Response already stored for this transaction
        s.execute(
            text(
                "INSERT INTO saml_issued_responses (txn_id, saml_response, issued_at, valid_until)"
                " VALUES (:t, 'old', :now, :now)"
            ),
            {"t": txn, "now": dt.datetime(2026, 1, 1)},
        )
    with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's own error
        complete_verified(
            service.db.engine,
            txn,
            user_id=user_id,
            device_id=device_id,
            action="saml.response",
            details={},
            issued=("new", dt.datetime(2026, 6, 1, tzinfo=dt.UTC)),
        )
    assert _txn(service, txn).completed_at is None
    assert _completions(service, device_id) == []
    assert [r[1] for r in _issued(service, txn)] == ["old"]


# ---- time zones and the stored format ---------------------------------------------------------

EAST = dt.timezone(dt.timedelta(hours=2))
WEST = dt.timezone(dt.timedelta(hours=-5))
SQLITE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def test_times_in_other_zones_are_compared_and_stored_as_utc(service):
    """SQLite compares times as text, so every time must be written as UTC text first."""
    issued = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=EAST)
    last = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    keys, user_id = trusted_device(service, last_seen=last, instances=("b", "a", last))
    # Seen a second before the bound, written in a zone whose text reads earlier: refused.
    stale_before = (last + SECOND).astimezone(WEST)
    assert _consume(service, keys, user_id, guards=Guards(stale_before=stale_before)) is None
    # "a" was replaced a second after the window opened, written in a zone whose text reads
    # later: alternating, refused.
    window_start = (last - SECOND).astimezone(EAST)
    alternating = Guards(instance="a", alternating="a", window_start=window_start)
    assert _consume(service, keys, user_id, guards=alternating) is None
    # Both bounds the other way round (in the other zones): accepted, and the times are
    # read back as the instants given.
    cid = uuid.uuid4().hex
    done = _consume(
        service,
        keys,
        user_id,
        challenge_id=cid,
        issued_at=issued,
        expires_at=issued + dt.timedelta(minutes=1),
        guards=Guards(
            stale_before=(last - SECOND).astimezone(EAST),
            instance="a",
            alternating="a",
            window_start=(last + SECOND).astimezone(WEST),
        ),
    )
    assert done is not None
    (row,) = [r for r in challenge_rows(service, keys.device_id) if r.id == cid]
    assert (row.issued_at, row.expires_at) == (issued, issued + dt.timedelta(minutes=1))


def test_every_time_written_is_stored_in_the_columns_format(service):
    """Naive UTC text on SQLite (what every other statement compares against), a
    ``timestamptz`` on PostgreSQL."""
    device_id, user_id, txn = _verified_txn(service)
    assert complete_verified(
        service.db.engine,
        txn,
        user_id=user_id,
        device_id=device_id,
        action="saml.response",
        details={},
        issued=("r", dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=EAST)),
    )
    with service.db.engine.connect() as c:
        stored = [
            *c.execute(
                text(
                    "SELECT issued_at, expires_at, consumed_at FROM challenges WHERE device_id = :d"
                ),
                {"d": device_id},
            ).one(),
            *c.execute(
                text("SELECT verified_at, completed_at FROM login_transactions WHERE id = :t"),
                {"t": txn},
            ).one(),
            *c.execute(
                text("SELECT issued_at, valid_until FROM saml_issued_responses WHERE txn_id = :t"),
                {"t": txn},
            ).one(),
            *c.execute(
                text("SELECT last_seen, updated_at FROM devices WHERE id = :d"), {"d": device_id}
            ).one(),
        ]
    for value in stored:
        if isinstance(value, str):
            assert SQLITE_TIME.fullmatch(value), stored
        else:
            assert value.utcoffset() == dt.timedelta(0), stored
    assert utc(stored[6]) == dt.datetime(2026, 6, 1, 10, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def local_zone_tokyo():
    """The process's local time zone is not UTC (naive times would then be off by 9 h)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_the_writes_use_utc_whatever_the_local_zone(service, local_zone_tokyo):
    keys, user_id = trusted_device(service)
    txn = new_txn(service)
    assert _consume(service, keys, user_id, txn_id=txn) is not None
    real_now = dt.datetime.now(dt.UTC)
    (row,) = challenge_rows(service, keys.device_id)
    assert abs(row.consumed_at - real_now) < dt.timedelta(seconds=30)
    assert abs(_txn(service, txn).verified_at - real_now) < dt.timedelta(seconds=30)
    assert complete_verified(
        service.db.engine,
        txn,
        user_id=user_id,
        device_id=keys.device_id,
        action="saml.response",
        details={},
    )
    assert abs(_txn(service, txn).completed_at - real_now) < dt.timedelta(seconds=30)
    events = audit_rows(service, keys.device_id)
    assert [e.action for e in events] == ["login.device_verified", "saml.response"]
    for event in events:
        assert abs(event.at - real_now) < dt.timedelta(seconds=30) and _mac_ok(event)


# ---- the group committer's two paths -----------------------------------------------------------


def test_a_batch_of_two_gets_two_results(service):
    (k1, u1), (k2, u2) = trusted_device(service), trusted_device(service)
    results = store._consume_many(service.db.engine, [_params(k1, u1), _params(k2, "nobody")])
    assert results == [Consumed(u1, None, None), None]
    assert store._consume_many(service.db.engine, [_params(k2, u2)]) == [Consumed(u2, None, None)]


def test_one_committer_per_engine_even_when_first_used_at_once():
    engine = create_engine("sqlite://")
    got: list[object] = []
    with store._COMMITTERS_LOCK:  # both threads get past the first look, then wait here
        threads = [threading.Thread(target=lambda: got.append(store._committer(engine)))]
        threads.append(threading.Thread(target=lambda: got.append(store._committer(engine))))
        for t in threads:
            t.start()
        time.sleep(0.3)
    for t in threads:
        t.join()
    assert len(got) == 2 and got[0] is got[1] is store._COMMITTERS[engine]
    other = create_engine("sqlite://")
    assert store._committer(other) is not got[0]
    engine.dispose()
    other.dispose()
