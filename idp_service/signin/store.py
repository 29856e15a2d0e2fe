"""The writes of a successful sign-in, each one statement where the database allows it.

Every sign-in's verified response does the same thing: record the challenge as
answered (only if it was not answered before, and only if the device is trusted
with this very key, is owned by the user the caller names, and that owner is
active), refresh the device's last-seen data, mark the login transaction the
challenge is bound to as verified (if it is still pending), and append an audit
event. Doing it as one guarded statement keeps the single-use guarantee atomic
and makes the common case cheap:

* PostgreSQL: one data-modifying CTE, run in autocommit, so one round trip;
  statements go to the driver connection directly (``platform/driver.py``),
  because SQLAlchemy's per-statement overhead would cost more than the round trip;
* SQLite: the guarded ``INSERT`` plus three small statements in one transaction,
  also on the driver connection (SQLite runs in-process).

The audit rows carry their MAC (``audit_chain.py``), computed here from the very
values written; that is why the caller names the device's owner up front.

When the guard fails nothing is written here; the caller then works out *why*
(unknown device, revoked, replayed, another owner, ...) on the slow path.

Completing a verified sign-in (:func:`complete_verified`) is likewise one guarded
write: claim the transaction, recheck the device and its owner, audit, and keep
the SAML Response it issued (to deliver the same one again on a repeat).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Engine

from idp_service.platform.audit_chain import row_mac
from idp_service.platform.driver import driver, sqlite_time
from idp_service.platform.group_commit import GroupCommit

_PG = """
    WITH c AS (
        INSERT INTO challenges (id, purpose, binding, issued_at, expires_at, consumed_at,
                                consumed_via, device_id, result)
        SELECT %(cid)s::varchar, 'authenticate', %(binding)s::varchar, %(issued_at)s,
               %(expires_at)s, %(now)s, %(via)s::varchar, %(device_id)s::varchar, 'ok'
        WHERE EXISTS (
            SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
            WHERE d.id = %(device_id)s::varchar AND d.sign_key = %(sign_key)s
            AND d.user_id = %(user_id)s::varchar AND d.state = 'trusted' AND u.active
            AND (%(hw_uuid)s::varchar IS NULL OR coalesce(d.hardware_uuid, '') IN ('', %(hw_uuid)s))
            AND (%(serial)s::varchar IS NULL OR coalesce(d.serial, '') IN ('', %(serial)s))
            AND d.last_seen >= %(stale_before)s
            AND (%(alt_inst)s::varchar IS NULL OR d.agent_instance_prev IS NULL
                 OR d.agent_instance_prev <> %(alt_inst)s OR d.agent_instance = %(alt_inst)s
                 OR d.agent_instance_at < %(window_start)s)
        )
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), d AS (
        UPDATE devices
        SET last_seen = %(now)s, last_clock_skew = %(skew)s, agent_version = %(agent_version)s,
            updated_at = %(now)s, agent_instance = coalesce(%(inst)s::varchar, agent_instance),
            agent_instance_prev = CASE WHEN %(inst)s::varchar IS NOT NULL
                AND agent_instance IS DISTINCT FROM %(inst)s THEN agent_instance
                ELSE agent_instance_prev END,
            agent_instance_at = CASE WHEN %(inst)s::varchar IS NOT NULL
                AND agent_instance IS DISTINCT FROM %(inst)s THEN %(now)s
                ELSE agent_instance_at END
        WHERE id = %(device_id)s::varchar AND EXISTS (SELECT 1 FROM c)
        RETURNING user_id
    ), a AS (
        INSERT INTO audit_events (at, action, outcome, user_id, device_id, remote_addr, details,
                                  mac)
        SELECT %(now)s, 'login.device_verified', 'ok', %(user_id)s::varchar,
               %(device_id)s::varchar, %(remote_addr)s::varchar, CAST(%(details)s AS json),
               %(mac)s::varchar
        FROM d
        RETURNING id
    ), t AS (
        UPDATE login_transactions AS t
        SET status = 'verified', device_id = %(device_id)s::varchar, user_id = d.user_id,
            verified_at = %(now)s
        FROM d
        WHERE t.id = %(txn_id)s::varchar AND t.status = 'pending'
        RETURNING t.status
    )
    SELECT d.user_id, coalesce((SELECT status FROM t), x.status), x.error_code
    FROM d LEFT JOIN login_transactions x ON x.id = %(txn_id)s::varchar
"""

_SQLITE_CONSUME = """
    INSERT INTO challenges (id, purpose, binding, issued_at, expires_at, consumed_at,
                            consumed_via, device_id, result)
    SELECT :cid, 'authenticate', :binding, :issued_at, :expires_at, :now, :via, :device_id, 'ok'
    WHERE EXISTS (
        SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
        WHERE d.id = :device_id AND d.sign_key = :sign_key AND d.user_id = :user_id
        AND d.state = 'trusted' AND u.active
        AND (:hw_uuid IS NULL OR coalesce(d.hardware_uuid, '') IN ('', :hw_uuid))
        AND (:serial IS NULL OR coalesce(d.serial, '') IN ('', :serial))
        AND d.last_seen >= :stale_before
        AND (:alt_inst IS NULL OR d.agent_instance_prev IS NULL
             OR d.agent_instance_prev <> :alt_inst OR d.agent_instance = :alt_inst
             OR d.agent_instance_at < :window_start)
    )
    ON CONFLICT (id) DO NOTHING
"""
_SQLITE_DEVICE = """
    UPDATE devices SET last_seen = :now, last_clock_skew = :skew, agent_version = :agent_version,
        updated_at = :now, agent_instance = coalesce(:inst, agent_instance),
        agent_instance_prev = CASE WHEN :inst IS NOT NULL AND agent_instance IS NOT :inst
            THEN agent_instance ELSE agent_instance_prev END,
        agent_instance_at = CASE WHEN :inst IS NOT NULL AND agent_instance IS NOT :inst
            THEN :now ELSE agent_instance_at END
    WHERE id = :device_id
"""
_SQLITE_AUDIT = """
    INSERT INTO audit_events (at, action, outcome, user_id, device_id, remote_addr, details, mac)
    VALUES (?, 'login.device_verified', 'ok', ?, ?, ?, ?, ?)
"""
_SQLITE_TXN = """
    UPDATE login_transactions SET status = 'verified', device_id = ?, user_id = ?, verified_at = ?
    WHERE id = ? AND status = 'pending' RETURNING status, error_code
"""
_SQLITE_TXN_STATUS = "SELECT status, error_code FROM login_transactions WHERE id = ?"


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Guards(NamedTuple):
    """Detection's checks in the sign-in guard; the defaults check nothing.

    ``hardware_uuid``/``serial``: the seen identifiers (None: not checked; a registry
    value that is empty matches anything). ``stale_before``: the device must have
    been seen since. ``alternating``: refuse if this instance is the one replaced
    since ``window_start``. ``instance`` is recorded either way.
    """

    hardware_uuid: str | None = None
    serial: str | None = None
    stale_before: dt.datetime = EPOCH
    instance: str | None = None
    alternating: str | None = None
    window_start: dt.datetime = EPOCH

    def params(self) -> dict[str, Any]:
        """The statements' parameters."""
        return {
            "hw_uuid": self.hardware_uuid,
            "serial": self.serial,
            "stale_before": self.stale_before,
            "inst": self.instance,
            "alt_inst": self.alternating,
            "window_start": self.window_start,
        }


class Consumed(NamedTuple):
    """A recorded answer: the device's owner, and where its login transaction stands now.

    ``txn_status`` is ``None`` when the challenge names no (existing) transaction.
    """

    user_id: str
    txn_status: str | None
    txn_error: str | None


def _audit_mac(at: dt.datetime, action: str, **values: Any) -> str:
    """The MAC of an ``ok`` audit row written by these statements."""
    return row_mac({"at": at, "action": action, "outcome": "ok", **values})


def consume_for_trusted_device(
    engine: Engine,
    *,
    challenge_id: str,
    binding: str,
    issued_at: dt.datetime,
    expires_at: dt.datetime,
    device_id: str,
    user_id: str,
    sign_key: bytes,
    via: str,
    clock_skew: float,
    agent_version: str,
    remote_addr: str | None,
    details: dict[str, Any],
    txn_id: str | None = None,
    guards: Guards | None = None,
) -> Consumed | None:
    """Record the answer of a trusted device owned by ``user_id`` and verify its
    transaction; None (nothing written) if refused.

    ``guards`` add detection's cheap checks (``idp_service/devices/detection.py``) to the
    same guard: hardware identifiers as registered, not stale, no alternating agent
    instance. When one fails nothing is written and the slow path finds out which.

    The write is durable when this returns. Answers arriving together from several
    threads share one transaction and one commit (``platform/group_commit.py``).
    """
    now = dt.datetime.now(dt.UTC)
    mac = _audit_mac(
        now,
        "login.device_verified",
        user_id=user_id,
        device_id=device_id,
        remote_addr=remote_addr,
        details=details,
    )
    return _committer(engine).submit(
        {
            "cid": challenge_id,
            "binding": binding,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "now": now,
            "via": via,
            "device_id": device_id,
            "user_id": user_id,
            "sign_key": sign_key,
            "skew": clock_skew,
            "agent_version": agent_version,
            "remote_addr": remote_addr,
            "details": json.dumps(details),
            "mac": mac,
            "txn_id": txn_id,
            **(guards or Guards()).params(),
        }
    )


_COMMITTERS: weakref.WeakKeyDictionary[Engine, GroupCommit[dict[str, Any], Consumed | None]] = (
    weakref.WeakKeyDictionary()
)
_COMMITTERS_LOCK = threading.Lock()


def _committer(engine: Engine) -> GroupCommit[dict[str, Any], Consumed | None]:
    """The engine's group committer for answers (one per engine, made on first use)."""
    committer = _COMMITTERS.get(engine)
    if committer is None:
        with _COMMITTERS_LOCK:
            committer = _COMMITTERS.get(engine)
            if committer is None:
                committer = GroupCommit(
                    lambda params: _consume_many(engine, [params])[0],
                    lambda batch: _consume_many(engine, batch),
                )
                _COMMITTERS[engine] = committer
    return committer


def _consume_many(engine: Engine, batch: Sequence[dict[str, Any]]) -> list[Consumed | None]:
    """Apply each answer's guarded write, all in one transaction, committed once.

    Answers are applied in device-id order, so that two processes' batches lock
    the same device rows in the same order and cannot deadlock each other on them.
    """
    order = sorted(range(len(batch)), key=lambda i: batch[i]["device_id"])
    results: list[Consumed | None] = [None] * len(batch)
    with driver(engine) as (conn, is_pg):
        if is_pg:
            if len(batch) == 1:
                # One statement is atomic on its own; autocommit makes it one round trip.
                row = conn.execute(_PG, batch[0]).fetchone()
                return [Consumed(*row) if row else None]
            with conn.transaction(), conn.pipeline():
                cursors = [(i, conn.execute(_PG, batch[i])) for i in order]
            # Leaving the transaction block committed the batch (or raised, and nothing
            # of it was committed); only now may anyone learn an outcome.
            for i, cursor in cursors:
                row = cursor.fetchone()
                results[i] = Consumed(*row) if row else None
            return results
        try:
            cur = conn.cursor()
            for i in order:
                results[i] = _sqlite_consume(cur, batch[i])
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return results


def _sqlite_consume(cur: Any, p: dict[str, Any]) -> Consumed | None:
    """One answer's guarded statements on SQLite, in the caller's transaction."""
    stamp = sqlite_time(p["now"])
    device_id, user_id, txn_id = p["device_id"], p["user_id"], p["txn_id"]
    cur.execute(
        _SQLITE_CONSUME,
        {
            **p,
            "issued_at": sqlite_time(p["issued_at"]),
            "expires_at": sqlite_time(p["expires_at"]),
            "now": stamp,
            "stale_before": sqlite_time(p["stale_before"]),
            "window_start": sqlite_time(p["window_start"]),
        },
    )
    if cur.rowcount != 1:
        return None
    cur.execute(
        _SQLITE_DEVICE,
        {
            "now": stamp,
            "skew": p["skew"],
            "agent_version": p["agent_version"],
            "inst": p["inst"],
            "device_id": device_id,
        },
    )
    audit = (stamp, user_id, device_id, p["remote_addr"], p["details"], p["mac"])
    cur.execute(_SQLITE_AUDIT, audit)
    status = error = None
    if txn_id is not None:
        found = cur.execute(_SQLITE_TXN, (device_id, user_id, stamp, txn_id)).fetchone()
        if found is None:  # not pending (or gone): say where it stands
            found = cur.execute(_SQLITE_TXN_STATUS, (txn_id,)).fetchone()
        status, error = found if found else (None, None)
    return Consumed(user_id, status, error)


_PG_CLAIM = """
    WITH t AS (
        UPDATE login_transactions SET completed_at = %(now)s
        WHERE id = %(txn_id)s::varchar AND completed_at IS NULL AND status = 'verified'
        AND device_id = %(device_id)s::varchar AND user_id = %(user_id)s::varchar
        AND EXISTS (
            SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
            WHERE d.id = %(device_id)s::varchar AND d.user_id = %(user_id)s::varchar
            AND d.state = 'trusted' AND u.active
        )
        RETURNING id
    ), a AS (
        INSERT INTO audit_events (at, action, outcome, user_id, device_id, details, mac)
        SELECT %(now)s, %(action)s::varchar, 'ok', %(user_id)s::varchar, %(device_id)s::varchar,
               CAST(%(details)s AS json), %(mac)s::varchar
        FROM t
    ), r AS (
        INSERT INTO saml_issued_responses (txn_id, saml_response, code, issued_at, valid_until)
        SELECT id, %(issued_response)s::text, NULL, %(now)s, %(valid_until)s::timestamptz
        FROM t WHERE %(issued_response)s::text IS NOT NULL
    )
    SELECT count(*) FROM t
"""
_SQLITE_CLAIM = """
    UPDATE login_transactions SET completed_at = :now
    WHERE id = :txn_id AND completed_at IS NULL AND status = 'verified'
    AND device_id = :device_id AND user_id = :user_id
    AND EXISTS (
        SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
        WHERE d.id = :device_id AND d.user_id = :user_id AND d.state = 'trusted' AND u.active
    )
"""
_SQLITE_CLAIM_AUDIT = """
    INSERT INTO audit_events (at, action, outcome, user_id, device_id, details, mac)
    VALUES (:now, :action, 'ok', :user_id, :device_id, :details, :mac)
"""
_SQLITE_CLAIM_ISSUED = """
    INSERT INTO saml_issued_responses (txn_id, saml_response, code, issued_at, valid_until)
    VALUES (:txn_id, :issued_response, NULL, :now, :valid_until)
"""


def complete_verified(
    engine: Engine,
    txn_id: str,
    *,
    user_id: str,
    device_id: str,
    action: str,
    details: dict[str, Any],
    issued: tuple[str, dt.datetime] | None = None,
) -> bool:
    """Claim a verified transaction for its one success, and audit it, in one write.

    The claim holds only if the transaction is verified for this user and device,
    not completed yet, and -- checked in the same statement -- the device is still
    trusted and its owner still active: a revocation or deactivation committed
    before this write wins. False means nothing was written.

    ``issued`` is (encoded SAML Response, valid until): stored with the claim in
    ``saml_issued_responses``, so whoever sees the transaction completed can
    deliver that same Response again.
    """
    now = dt.datetime.now(dt.UTC)
    params = {
        "now": now,
        "txn_id": txn_id,
        "user_id": user_id,
        "device_id": device_id,
        "action": action,
        "details": json.dumps(details),
        "mac": _audit_mac(now, action, user_id=user_id, device_id=device_id, details=details),
        "issued_response": issued[0] if issued else None,
        "valid_until": issued[1] if issued else None,
    }
    with driver(engine) as (conn, is_pg):
        if is_pg:
            return conn.execute(_PG_CLAIM, params).fetchone()[0] == 1
        params["now"] = sqlite_time(params["now"])
        if issued:
            params["valid_until"] = sqlite_time(issued[1])
        try:
            if conn.execute(_SQLITE_CLAIM, params).rowcount != 1:
                conn.rollback()
                return False
            conn.execute(_SQLITE_CLAIM_AUDIT, params)
            if issued:
                conn.execute(_SQLITE_CLAIM_ISSUED, params)
            conn.commit()
            return True
        except BaseException:
            conn.rollback()
            raise
