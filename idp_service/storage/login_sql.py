"""The one write of a successful device sign-in, as few round trips as the database allows.

Every sign-in's verified response does the same thing: record the challenge as
answered (only if it was not answered before, and only if the device is trusted
with this very key and has an active owner), refresh the device's last-seen
data, and append an audit event. Doing it as one guarded statement keeps the single-use guarantee
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
        INSERT INTO challenges (id, purpose, binding, issued_at, expires_at, consumed_at,
                                consumed_via, device_id, result)
        SELECT %(cid)s::varchar, 'authenticate', %(binding)s::varchar, %(issued_at)s,
               %(expires_at)s, %(now)s, %(via)s::varchar, %(device_id)s::varchar, 'ok'
        WHERE EXISTS (
            SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
            WHERE d.id = %(device_id)s::varchar AND d.sign_key = %(sign_key)s
            AND d.state = 'trusted' AND u.active
        )
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), d AS (
        UPDATE devices
        SET last_seen = %(now)s, last_clock_skew = %(skew)s, agent_version = %(agent_version)s,
            updated_at = %(now)s
        WHERE id = %(device_id)s::varchar AND EXISTS (SELECT 1 FROM c)
        RETURNING user_id
    ), a AS (
        INSERT INTO audit_events (at, action, outcome, user_id, device_id, remote_addr, details)
        SELECT %(now)s, 'login.device_verified', 'ok', d.user_id, %(device_id)s::varchar,
               %(remote_addr)s::varchar, CAST(%(details)s AS json)
        FROM d
        RETURNING id
    )
    SELECT user_id FROM d
"""

_SQLITE_CONSUME = """
    INSERT INTO challenges (id, purpose, binding, issued_at, expires_at, consumed_at,
                            consumed_via, device_id, result)
    SELECT ?, 'authenticate', ?, ?, ?, ?, ?, ?, 'ok'
    WHERE EXISTS (
        SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id
        WHERE d.id = ? AND d.sign_key = ? AND d.state = 'trusted' AND u.active
    )
    ON CONFLICT (id) DO NOTHING
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
    binding: str,
    issued_at: dt.datetime,
    expires_at: dt.datetime,
    device_id: str,
    sign_key: bytes,
    via: str,
    clock_skew: float,
    agent_version: str,
    remote_addr: str | None,
    details: dict[str, Any],
) -> str | None:
    """Record the answer of a trusted device; return the owner's id, or None if refused."""
    params = {
        "cid": challenge_id,
        "binding": binding,
        "issued_at": issued_at,
        "expires_at": expires_at,
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

    def sqlite_time(value: dt.datetime) -> str:
        return value.astimezone(dt.UTC).replace(tzinfo=None).strftime(_SQLITE_TIME)

    now = sqlite_time(params["now"])
    try:
        cur = raw.cursor()
        cur.execute(
            _SQLITE_CONSUME,
            (
                challenge_id,
                binding,
                sqlite_time(issued_at),
                sqlite_time(expires_at),
                now,
                via,
                device_id,
                device_id,
                sign_key,
            ),
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
