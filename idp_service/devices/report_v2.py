"""Report ceremony v2, service half: one request per report, only what changed.

The agent half is ``agent/report.py``; the messages are
``trust_protocol/report_v2.py`` (docs/protocol.md §16). A report is accepted when
its box opens, its signature verifies under the device's registered key, its
clock is within the skew bound and its counter is above the last one accepted.

**An unchanged report** (the ~98 % case) costs one statement: a conditional
UPDATE that advances the counter and ``last_seen`` *only if* the counter is
higher, the claimed digest is the one held, and nothing detection or the state
table would look at has changed (trusted, active owner, same key, same agent
instance, same hardware identifiers, not stale, not seen within the last second,
so that a flood from one device's key goes the careful way). Two replicas cannot both
accept one counter: the UPDATE checks and advances it atomically. Concurrent
unchanged reports in one process share that statement and its commit
(``platform/group_commit.py``): on PostgreSQL one ``UPDATE ... FROM unnest(...)``
carries a batch, each row still guarded by its own conditions.

:func:`take_unchanged` is the same fast way without anything around it, for the
web layer's quick path (``devices/web.py``, ``ReportQuickPath``): it either
accepts an unchanged report outright or declines, writing nothing, and the
request then goes through :func:`ingest`, which judges, codes and audits it.

Everything else (a delta, a full document, or an unchanged report the UPDATE
did not take) goes the **careful way**, in one transaction under the device's
row lock: the registry's state table, the counter (``report_counter_stale``),
detection, then the document: a delta must build on the digest held
(``report_resync`` otherwise) and merge into a document with the claimed digest
(``report_resync``; the stored document is untouched). Only then are the checks
whose sections changed evaluated and the document written. A refusal writes
nothing but its audit event (detection's flag and state change stand, as in v1).

**Counter re-establishment** (:func:`reset`): an agent that lost its counter
answers a ``report`` challenge (the v1 exchange, with detection) and is told the
counter and digest the service holds.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from nacl.public import PrivateKey
from sqlalchemy import Engine, and_, bindparam, event, select, update

from idp_service.devices import challenges, detection, report
from idp_service.platform import audit, metrics
from idp_service.platform.driver import Statement, driver, sqlite_time
from idp_service.platform.errors import ServiceError
from idp_service.platform.group_commit import GroupCommit
from idp_service.platform.models import Device, table_of, utcnow
from idp_service.posture.tables import DeviceFacts
from idp_service.services import Services
from trust_protocol import report_v2
from trust_protocol.encoding import b64e
from trust_protocol.errors import ProtocolError
from trust_protocol.report_keys import report_box_secret
from trust_protocol.report_v2 import Ack, OpenedReport, ReportBody
from trust_protocol.response import RegisteredDevice, check_binding

log = logging.getLogger(__name__)
# A device seen less than this long ago does not take the one-statement way: a second
# report (or a flood from one device's key) goes the careful way, through the app's
# per-address rate limits. Agents report every few minutes.
QUICK_GAP = dt.timedelta(seconds=1)
MAX_SMALL = report_v2.MAX_SMALL
MAX_FULL = report_v2.MAX_FULL
_STATE_CODES = {
    "revoked": "device_revoked",
    "denied": "device_denied",
    "pending": "device_pending",
    "suspended": "device_suspended",
}


@lru_cache(maxsize=4)
def _box_secret(box_secret: bytes) -> bytes:
    return report_box_secret(box_secret)


def box_secret(service: Services) -> bytes:
    """The X25519 secret reports are boxed to (derived once per process)."""
    return _box_secret(service.keys.box_secret)


def advertisement(service: Services) -> dict[str, Any]:
    """The ``report`` member of ``GET /agent/v1/server``: v2 spoken here, and its box key."""
    public = bytes(PrivateKey(box_secret(service)).public_key)
    return report_v2.sign_report_key(public, service.keys.signing_key)


class _SignKeys:
    """Device id -> registered signing key, as last read (a device's key never changes
    under its id; a stale entry only sends one report the careful way).

    Loaded in one query at a process's first report, so that every worker takes its
    devices' unchanged reports the fast way from the start. A device not found is
    looked for among the devices registered since the last load (one query at most
    every few seconds), then on its own (one small read); either way it is cached.
    """

    LIMIT = 2_000_000
    RELOAD_EVERY = 5.0  # seconds between loads of newly registered devices

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.loaded_at: dt.datetime | None = None
        self.tried_at = 0.0

    def _load(self, service: Services) -> None:
        since = self.loaded_at
        self.loaded_at = utcnow() - dt.timedelta(seconds=60)  # margin for slow transactions
        self.tried_at = time.monotonic()
        query = (
            _TRUSTED_KEYS if since is None else _TRUSTED_KEYS.where(_devices.c.created_at >= since)
        )
        with service.db.session() as session:
            rows = session.execute(query.limit(self.LIMIT)).all()
        for row in rows:
            self.put(row.id, bytes(row.sign_key))

    def get(self, service: Services, device_id: str) -> bytes | None:
        if self.loaded_at is None:
            self._load(service)
        found = self.keys.get(device_id)
        if found is None and time.monotonic() - self.tried_at > self.RELOAD_EVERY:
            self._load(service)
            found = self.keys.get(device_id)
        if found is None:  # one small read, then cached
            with driver(service.db.engine) as (conn, is_pg):
                row = conn.execute(_KEY_PG if is_pg else _KEY, {"device_id": device_id}).fetchone()
            if row is not None:
                found = bytes(row[0])
                self.put(device_id, found)
        return found

    def put(self, device_id: str, key: bytes) -> None:
        if len(self.keys) >= self.LIMIT:
            self.keys.clear()
        self.keys[device_id] = key


_sign_keys = _SignKeys()


def _platform_id(platform: dict[str, str], name: str) -> str:
    return platform.get(name, "")[:256]


def take_unchanged(service: Services, envelope: bytes) -> dict[str, Any] | None:
    """Accept an unchanged report the fast way and return its signed acknowledgement,
    or decline (None) having written nothing.

    Taken only when everything holds: the box opens, the body is an unchanged
    report, this process knows the device's registered key, the signature verifies
    under it, the clock is within the skew bound and the one conditional UPDATE
    applied. Anything else declines, and the caller hands the same bytes to
    :func:`ingest` (with ``fast_tried``), which decides the refusal, its code and its
    audit event; so a refusal is never decided here.
    """
    try:
        opened = report_v2.open_report(
            envelope, report_box_secret=box_secret(service), max_size=MAX_SMALL
        )
        body = opened.body
        if body.kind != "unchanged":
            return None
        key = _sign_keys.get(service, body.device_id)
        if key is None:
            return None
        report_v2.verify_report(opened, key)
        now_ts = time.time()
        skew = report_v2.check_clock(body, now=now_ts, max_skew=service.settings.max_clock_skew)
    except ProtocolError:
        return None
    if not _fast(service, body, key, skew, utcnow()):
        return None
    metrics.report_ingested()
    return _answer(service, body.device_id, body.counter, body.digest, now_ts)


def ingest(
    service: Services,
    envelope: bytes,
    *,
    full_endpoint: bool,
    remote_addr: str | None = None,
    fast_tried: bool = False,
) -> dict[str, Any]:
    """Accept one v2 report; return the signed acknowledgement (docs/protocol.md §16).

    ``fast_tried``: :func:`take_unchanged` already declined these bytes, so the
    one-statement way is not tried again.
    """
    try:
        limit = MAX_FULL if full_endpoint else MAX_SMALL
        opened = report_v2.open_report(
            envelope, report_box_secret=box_secret(service), max_size=limit
        )
        body = opened.body
        if (body.kind == "full") != full_endpoint:
            raise ProtocolError(
                "malformed", "a full document goes to /agent/v2/report/full, nothing else does"
            )
        now_ts = time.time()
        skew = report_v2.check_clock(body, now=now_ts, max_skew=service.settings.max_clock_skew)
        now = utcnow()
        unchanged = body.kind == "unchanged" and not fast_tried
        known = _sign_keys.get(service, body.device_id) if unchanged else None
        verified_with = None
        if known is not None:
            try:
                report_v2.verify_report(opened, known)
            except ProtocolError:
                pass  # judged again against the registry, which decides
            else:
                verified_with = known
                if _fast(service, body, known, skew, now):
                    metrics.report_ingested()
                    return _answer(service, body.device_id, body.counter, body.digest, now_ts)
        answer = _careful(service, opened, verified_with, skew, now, now_ts, remote_addr)
        metrics.report_ingested()
        return answer
    except (ProtocolError, ServiceError) as exc:
        audit.record_separately(
            service.db, "device.report", "rejected", code=exc.code, remote_addr=remote_addr
        )
        raise


def _fast(service: Services, body: ReportBody, key: bytes, skew: float, now: dt.datetime) -> bool:
    """The one conditional UPDATE of an unchanged report; False if it did not apply.

    Shared with concurrent reports of this process (group commit, :class:`_FastWriter`).
    """
    return _committer(service.db.engine).submit(_fast_params(service, body, key, skew, now))


def _fast_params(
    service: Services, body: ReportBody, key: bytes, skew: float, now: dt.datetime
) -> dict[str, Any]:
    """The parameters of an unchanged report's guarded UPDATE."""
    return {
        "device_id": body.device_id,
        "sign_key": key,
        "counter": body.counter,
        "digest": body.digest,
        "instance": detection.instance_of(body.platform) or "",
        "hardware_uuid": _platform_id(body.platform, "hardware_uuid"),
        "serial": _platform_id(body.platform, "serial"),
        "stale_before": now - dt.timedelta(seconds=service.settings.stale_after),
        "recent_after": now - QUICK_GAP,
        "now": now,
        "skew": skew,
        "agent_version": body.agent_version[:64],
    }


_WRITERS: weakref.WeakKeyDictionary[Engine, _FastWriter] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()


def _writer(engine: Engine) -> _FastWriter:
    """The engine's writer of unchanged reports (one per engine, made on first use)."""
    writer = _WRITERS.get(engine)
    if writer is None:
        with _WRITERS_LOCK:
            writer = _WRITERS.get(engine)
            if writer is None:
                writer = _WRITERS[engine] = _FastWriter(engine)
    return writer


def _committer(engine: Engine) -> GroupCommit[dict[str, Any], bool]:
    """The engine's group committer for unchanged reports."""
    return _writer(engine).committer


class _FastWriter:
    """Runs batches of unchanged reports' UPDATEs; only the group committer's leader calls it,
    so one call at a time.

    On PostgreSQL it keeps one connection of its own, out of the pool and in autocommit,
    with ``synchronous_commit`` off (these UPDATEs only: every other write keeps its
    durable commit): a pool checkout and return per report cost more CPU than the
    statement's client side, and a flush per heartbeat would bound the rate by the disk.
    The connection is dropped on any error (the next batch opens a new one) and closed
    with the engine (``Engine.dispose``). On SQLite it uses the pool.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.committer: GroupCommit[dict[str, Any], bool] = GroupCommit(
            lambda params: self.run([params])[0], self.run, max_batch=256
        )
        self.is_pg = engine.dialect.name == "postgresql"
        self.raw: Any = None  # the pool's wrapper, detached (kept so that it is not collected)
        self.conn: Any = None
        if self.is_pg:
            event.listen(engine, "engine_disposed", lambda _engine: self.close())

    def run(self, batch: Sequence[dict[str, Any]]) -> list[bool]:
        """Apply each unchanged report's guarded UPDATE, all in one commit; which applied.

        A device named twice in one batch (a replay racing its original) takes part
        once: the others are reported as not applied and go the careful way, which
        refuses or accepts each on its own. On PostgreSQL the batch is one statement
        over arrays, its rows in device-id order (the order every process locks them in).
        """
        if not self.is_pg:
            return _fast_many_sqlite(self.engine, batch)
        if self.conn is None or self.conn.closed:
            raw = self.engine.raw_connection()
            conn: Any = raw.driver_connection  # psycopg's connection (DB-API: untyped)
            raw.detach()  # its own from now on, never returned to the pool
            conn.autocommit = True
            # A heartbeat's commit need not wait for its WAL flush: a crash may forget
            # the last few hundred milliseconds of counters, which is the database
            # restored to an older point (docs/protocol.md §16.6, §13): never a report
            # accepted that would not have been, and the agent goes on from its own.
            conn.execute("SET synchronous_commit = off")
            # One plan for every batch size: left to choose, PostgreSQL plans a batch's
            # statement anew each time (its arrays' lengths differ), which costs more
            # than running it. This connection runs nothing else.
            conn.execute("SET plan_cache_mode = force_generic_plan")
            self.raw, self.conn = raw, conn
        try:
            return _fast_many_pg(self.conn, batch)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self.conn, self.raw = self.conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken: nothing more to release
                log.debug("closing the report writer's connection failed", exc_info=True)


def _batch_order(batch: Sequence[dict[str, Any]]) -> list[int]:
    """Indexes of the batch's rows that take part: each device's first, in device-id order."""
    seen: dict[str, int] = {}
    for i, params in enumerate(batch):
        seen.setdefault(params["device_id"], i)
    return sorted(seen.values(), key=lambda i: batch[i]["device_id"])


def _fast_many_pg(conn: Any, batch: Sequence[dict[str, Any]]) -> list[bool]:
    """The batch on a PostgreSQL connection in autocommit: one statement, so one commit."""
    if len(batch) == 1:
        return [bool(conn.execute(_FAST_SQL_PG, batch[0]).rowcount == 1)]
    first = _batch_order(batch)
    arrays = {name: [batch[i][name] for i in first] for name in _FAST_FIELDS}
    took = {row[0] for row in conn.execute(_FAST_MANY_PG, arrays).fetchall()}
    applied = [False] * len(batch)
    for i in first:
        applied[i] = batch[i]["device_id"] in took
    return applied


def _fast_many_sqlite(engine: Engine, batch: Sequence[dict[str, Any]]) -> list[bool]:
    """The batch on SQLite: each row's statement, all in one transaction, committed once."""
    applied = [False] * len(batch)
    with driver(engine) as (conn, _):
        try:
            cur = conn.cursor()
            for i in _batch_order(batch):
                params = dict(batch[i])
                for name in ("stale_before", "recent_after", "now"):
                    params[name] = sqlite_time(params[name])
                cur.execute(_FAST_SQL, params)
                applied[i] = cur.rowcount == 1
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return applied


def _careful(
    service: Services,
    opened: OpenedReport,
    verified_with: bytes | None,
    skew: float,
    now: dt.datetime,
    now_ts: float,
    remote_addr: str | None,
) -> dict[str, Any]:
    """Every check, in one transaction under the device's row lock."""
    body = opened.body
    device_id = body.device_id
    with service.db.session() as session:
        conn = session.connection()
        row = conn.execute(
            report.DEVICE_SEEN,
            {
                "b_device_id": device_id,
                "b_now": now,
                "b_stale_before": now - dt.timedelta(seconds=service.settings.stale_after),
                "last_clock_skew": skew,
                "agent_version": body.agent_version[:64],
            },
        ).first()
        if row is None:
            raise ProtocolError("device_unknown")
        if verified_with is None or not hmac.compare_digest(verified_with, row.sign_key):
            report_v2.verify_report(opened, row.sign_key)
        _sign_keys.put(device_id, row.sign_key)
        _check_state(RegisteredDevice(device_id, row.sign_key, row.state, bool(row.owner_active)))
        if body.counter <= row.report_counter:
            raise ProtocolError(
                "report_counter_stale", "the counter is not above the last one accepted"
            )
        context = detection.answer_context("report", remote_addr, now)
        refusal = detection.judge_report(
            session, service.settings, device_id, row, body.platform, now, context
        )
        if refusal is not None:
            session.commit()  # detection's decision stands; the report does not
            raise ProtocolError(refusal)
        held = row.report_digest
        document: dict[str, Any] | None = None
        if body.kind == "full":
            document = report_v2.full_document(body)
        elif body.kind == "delta":
            stored = conn.execute(_STORED_FACTS, {"device_id": device_id}).first()
            acked = _document_of(stored.facts if stored is not None else None)
            document = report_v2.apply_delta(acked, held if stored is not None else None, body)
        elif held is None or not hmac.compare_digest(held, body.digest):
            raise ProtocolError("report_resync", "the service does not hold this document")
        advanced = conn.execute(
            _ADVANCE,
            {
                "b_device_id": device_id,
                "b_counter": body.counter,
                "report_counter": body.counter,
                "report_digest": body.digest,
                "facts_confirmed_at": now,
            },
        )
        if advanced.rowcount != 1:  # pragma: no cover - the row lock makes this impossible
            raise ProtocolError("report_counter_stale")
        if document is not None:
            facts = {**document, **_volatile(body)}
            report.store_facts(service, session, device_id, row.user_id, facts, now)
    return _answer(service, device_id, body.counter, body.digest, now_ts)


def _check_state(device: RegisteredDevice) -> None:
    if device.state in _STATE_CODES:
        raise ProtocolError(_STATE_CODES[device.state])
    if device.state != "trusted":
        raise ProtocolError("device_unknown", f"device state {device.state!r}")
    if not device.owner_active:
        raise ProtocolError("owner_inactive")


def _document_of(facts: Any) -> dict[str, Any]:
    if not isinstance(facts, dict):
        return {}
    return {k: v for k, v in facts.items() if k not in report_v2.VOLATILE}


def _volatile(body: ReportBody) -> dict[str, Any]:
    volatile = dict(body.volatile)
    if not isinstance(volatile.get("collected_at"), str):
        volatile["collected_at"] = dt.datetime.fromtimestamp(body.clock, dt.UTC).isoformat()
    return volatile


def _answer(
    service: Services,
    device_id: str,
    counter: int,
    digest: str | None,
    now_ts: float,
    challenge: str | None = None,
) -> dict[str, Any]:
    ack = Ack(
        device_id=device_id,
        counter=counter,
        digest=digest,
        next_report_in=int(service.settings.report_interval),
        osquery_queries=dict(service.settings.osquery_queries),
        time=int(now_ts),
        challenge=challenge,
    )
    return report_v2.sign_ack(ack, service.keys.signing_key)


def reset(service: Services, envelope: bytes, *, remote_addr: str | None = None) -> dict[str, Any]:
    """Re-establish a device's counter: an answer to a ``report`` challenge, judged as one.

    The body's ``data`` is ``{"counter_reset": true}``. The answer goes through the
    v1 order (single use, the state table, detection, so a clone that resets is
    seen like any clone answering) and is told, signed, the counter and document
    digest the service holds. Nothing but the answer's bookkeeping is written.
    """
    try:
        verified = challenges.open_answer(service, envelope, "report", max_size=MAX_SMALL)
        check_binding(verified, report.binding_for(verified.device_id))
        if verified.data != {"counter_reset": True}:
            raise ProtocolError("malformed", 'a counter reset carries {"counter_reset": true}')
        with service.db.session() as session:
            device = report.accept_answer(
                service, session, verified, utcnow(), via="report-reset", remote_addr=remote_addr
            )
            counter, digest = int(device.report_counter), device.report_digest
        audit.record_separately(
            service.db,
            "device.report_counter_reset",
            "ok",
            device_id=verified.device_id,
            remote_addr=remote_addr,
            details={"counter": counter},
        )
        return _answer(
            service,
            verified.device_id,
            counter,
            digest,
            time.time(),
            challenge=b64e(verified.challenge.id),
        )
    except (ProtocolError, ServiceError) as exc:
        audit.record_separately(
            service.db,
            "device.report_counter_reset",
            "rejected",
            code=exc.code,
            remote_addr=remote_addr,
        )
        raise


# Statements, built once (SQLAlchemy caches their compiled form).
_devices = table_of(Device)
_facts = table_of(DeviceFacts)
# An unchanged report: everything the careful way would judge, as one conditional UPDATE.
_FAST_SQL = """
    UPDATE devices
       SET report_counter = :counter, last_seen = :now, facts_confirmed_at = :now,
           last_clock_skew = :skew, agent_version = :agent_version, updated_at = :now
     WHERE id = :device_id
       AND sign_key = :sign_key
       AND state = 'trusted'
       AND report_counter < :counter
       AND report_digest = :digest
       AND agent_instance = :instance
       AND coalesce(hardware_uuid, '') = :hardware_uuid
       AND coalesce(serial, '') = :serial
       AND last_seen >= :stale_before
       AND last_seen <= :recent_after
       AND EXISTS (SELECT 1 FROM users WHERE users.id = devices.user_id AND users.active)
"""
_FAST_SQL_PG = Statement(_FAST_SQL).by_dialect["postgresql"]
_FAST_FIELDS = (
    "device_id",
    "sign_key",
    "counter",
    "digest",
    "instance",
    "hardware_uuid",
    "serial",
    "stale_before",
    "recent_after",
    "now",
    "skew",
    "agent_version",
)
# The same conditions for a batch of unchanged reports, one row of arrays each.
_FAST_MANY_PG = """
    UPDATE devices
       SET report_counter = v.counter, last_seen = v.now, facts_confirmed_at = v.now,
           last_clock_skew = v.skew, agent_version = v.agent_version, updated_at = v.now
      FROM unnest(%(device_id)s::varchar[], %(sign_key)s::bytea[], %(counter)s::bigint[],
                  %(digest)s::varchar[], %(instance)s::varchar[], %(hardware_uuid)s::varchar[],
                  %(serial)s::varchar[], %(stale_before)s::timestamptz[],
                  %(recent_after)s::timestamptz[], %(now)s::timestamptz[],
                  %(skew)s::float8[], %(agent_version)s::varchar[])
           AS v(device_id, sign_key, counter, digest, instance, hardware_uuid, serial,
                stale_before, recent_after, now, skew, agent_version)
     WHERE devices.id = v.device_id
       AND devices.sign_key = v.sign_key
       AND devices.state = 'trusted'
       AND devices.report_counter < v.counter
       AND devices.report_digest = v.digest
       AND devices.agent_instance = v.instance
       AND coalesce(devices.hardware_uuid, '') = v.hardware_uuid
       AND coalesce(devices.serial, '') = v.serial
       AND devices.last_seen >= v.stale_before
       AND devices.last_seen <= v.recent_after
       AND EXISTS (SELECT 1 FROM users WHERE users.id = devices.user_id AND users.active)
 RETURNING devices.id
"""
_KEY = "SELECT sign_key FROM devices WHERE id = :device_id"
_KEY_PG = Statement(_KEY).by_dialect["postgresql"]
_ADVANCE = update(_devices).where(
    and_(
        _devices.c.id == bindparam("b_device_id"),
        _devices.c.report_counter < bindparam("b_counter"),
    )
)
_TRUSTED_KEYS = select(_devices.c.id, _devices.c.sign_key).where(_devices.c.state == "trusted")
_STORED_FACTS = select(_facts.c.facts).where(_facts.c.device_id == bindparam("device_id"))
