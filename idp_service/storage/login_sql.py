"""The one write of a successful device sign-in, as few round trips as the database allows.

Every sign-in's verified response does the same thing: consume the challenge
(only if it is unconsumed, unexpired, and the device is trusted with this very
key and an active owner), refresh the device's last-seen data, and append an
audit event. Doing it as one guarded statement keeps the single-use guarantee
atomic and makes the common case cheap:

* PostgreSQL: one data-modifying CTE, run in autocommit, so one round trip;
  statements go to the driver connection directly, because SQLAlchemy's
  per-statement overhead would cost more than the round trip;
* SQLite: the guarded ``UPDATE`` plus two small statements in one transaction,
  also on the driver connection (SQLite runs in-process).

When the guard fails nothing is written here; the caller then works out *why*
(unknown device, revoked, replayed, ...) on the slow path.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Engine

_PG = """
    WITH c AS (
        UPDATE challenges
        SET consumed_at = %(now)s, consumed_via = %(via)s, device_id = %(device_id)s,
            result = 'ok'
        WHERE id = %(cid)s AND consumed_at IS NULL AND expires_at > %(now)s
        AND EXISTS (
            SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
            WHERE d.id = %(device_id)s AND d.sign_key = %(sign_key)s AND d.state = 'trusted'
            AND u.active
        )
        RETURNING id
    ), d AS (
        UPDATE devices
        SET last_seen = %(now)s, last_clock_skew = %(skew)s, agent_version = %(agent_version)s,
            updated_at = %(now)s
        WHERE id = %(device_id)s AND EXISTS (SELECT 1 FROM c)
        RETURNING user_id
    ), a AS (
        INSERT INTO audit_events (at, action, outcome, user_id, device_id, remote_addr, details)
        SELECT %(now)s, 'login.device_verified', 'ok', d.user_id, %(device_id)s,
               %(remote_addr)s, CAST(%(details)s AS json)
        FROM d
        RETURNING id
    )
    SELECT user_id FROM d
"""

_SQLITE_CONSUME = """
    UPDATE challenges
    SET consumed_at = ?, consumed_via = ?, device_id = ?, result = 'ok'
    WHERE id = ? AND consumed_at IS NULL AND expires_at > ?
    AND EXISTS (
        SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
        WHERE d.id = ? AND d.sign_key = ? AND d.state = 'trusted' AND u.active
    )
"""
_SQLITE_DEVICE = """
    UPDATE devices SET last_seen = ?, last_clock_skew = ?, agent_version = ?, updated_at = ?
    WHERE id = ? RETURNING user_id
"""
_SQLITE_AUDIT = """
    INSERT INTO audit_events (at, action, outcome, user_id, device_id, remote_addr, details)
    VALUES (?, 'login.device_verified', 'ok', ?, ?, ?, ?)
"""
# The text form SQLAlchemy's SQLite DateTime type stores (naive UTC), so comparisons agree.
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def consume_for_trusted_device(
    engine: Engine,
    *,
    challenge_id: str,
    device_id: str,
    sign_key: bytes,
    via: str,
    clock_skew: float,
    agent_version: str,
    remote_addr: str | None,
    details: dict[str, Any],
) -> str | None:
    """Consume the challenge for a trusted device; return the owner's id, or None if refused."""
    params = {
        "cid": challenge_id,
        "now": dt.datetime.now(dt.UTC),
        "via": via,
        "device_id": device_id,
        "sign_key": sign_key,
        "skew": clock_skew,
        "agent_version": agent_version,
        "remote_addr": remote_addr,
        "details": json.dumps(details),
    }
    raw = engine.raw_connection()
    if engine.dialect.name == "postgresql":
        try:
            # One statement is atomic on its own; autocommit makes it one round trip.
            raw.driver_connection.autocommit = True
            row = raw.driver_connection.execute(_PG, params).fetchone()
            return row[0] if row else None
        finally:
            raw.driver_connection.autocommit = False
            raw.close()
    now = params["now"].replace(tzinfo=None).strftime(_SQLITE_TIME)
    try:
        cur = raw.cursor()
        cur.execute(
            _SQLITE_CONSUME,
            (now, via, device_id, challenge_id, now, device_id, sign_key),
        )
        if cur.rowcount != 1:
            raw.rollback()
            return None
        cur.execute(_SQLITE_DEVICE, (now, clock_skew, agent_version, now, device_id))
        user_id = cur.fetchone()[0]
        cur.execute(_SQLITE_AUDIT, (now, user_id, device_id, remote_addr, params["details"]))
        raw.commit()
        return user_id
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()
