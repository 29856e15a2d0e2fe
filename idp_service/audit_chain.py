"""Tamper evidence for the audit log: a keyed MAC on every row, and a hash chain over them.

* **Row MAC.** Every audit row is written with ``mac = HMAC-SHA256(key, content)``,
  computed by the service at insert time. The key lives outside the database
  (``DEVICETRUST_AUDIT_KEY``, or ``audit.key`` in the data directory), so
  someone who can write to the database but not read the key cannot forge or
  edit a row without it showing.
* **Chain.** A *sealer* takes rows in the order it first sees them and gives each
  the next ``chain_seq`` and ``chain_hash = SHA-256(previous chain_hash || mac)``.
  A deleted row leaves a gap in the sequence; a reordered or replaced row
  breaks the links. The sealer runs in the service every second (under a lock,
  so replicas take turns) and before every verification.

:func:`verify` walks the whole log and reports every problem it finds: edited
rows (MAC mismatch), inserted rows (no valid MAC), deleted rows (sequence
gaps) and broken links. On PostgreSQL and SQLite, triggers also refuse
``DELETE`` and any ``UPDATE`` other than sealing, so tampering needs more than
an ordinary database login (see the migration).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update

from idp_service.storage.db import Database
from idp_service.storage.models import AuditEvent

GENESIS = "0" * 64
SEAL_BATCH = 5000
CONTENT_FIELDS = (
    "at",
    "action",
    "outcome",
    "code",
    "actor",
    "user_id",
    "device_id",
    "remote_addr",
    "details",
)

_key: bytes | None = None


def load_key(data_dir: Path, env: dict[str, str] | None = None) -> bytes:
    """The audit key: ``DEVICETRUST_AUDIT_KEY`` (hex), else ``audit.key`` in the data dir."""
    env = os.environ if env is None else env
    text_key = env.get("DEVICETRUST_AUDIT_KEY")
    if text_key:
        key = bytes.fromhex(text_key.strip())
        if len(key) < 32:
            raise ValueError("DEVICETRUST_AUDIT_KEY must be at least 32 bytes of hex")
        return key
    path = data_dir / "audit.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())


def configure(key: bytes) -> None:
    """Set this process's audit key (the app factory and the CLI call this once)."""
    global _key
    _key = key


def current_key() -> bytes:
    """This process's audit key: as configured, else loaded from the environment's settings."""
    global _key
    if _key is None:
        from idp_service.config import Settings

        _key = load_key(Settings.from_env().data_dir)
    return _key


def _canonical_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def content_bytes(values: dict[str, Any]) -> bytes:
    """The exact bytes a row's MAC covers: its content fields as canonical JSON."""
    doc = [
        _canonical_time(values["at"]) if name == "at" else values.get(name)
        for name in CONTENT_FIELDS
    ]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_mac(values: dict[str, Any], key: bytes | None = None) -> str:
    """HMAC-SHA256 of a row's content, hex."""
    return hmac.new(key or current_key(), content_bytes(values), hashlib.sha256).hexdigest()


def with_mac(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus ``mac`` (and ``at`` if missing): what an INSERT into audit_events needs."""
    from idp_service.storage.models import utcnow

    out = dict(values)
    out.setdefault("at", utcnow())
    out["mac"] = row_mac(out)
    return out


def _link(previous: str, mac: str) -> str:
    return hashlib.sha256((previous + mac).encode()).hexdigest()


# -- sealing -------------------------------------------------------------------------------
def seal(db: Database, batch: int = SEAL_BATCH) -> int:
    """Chain every row not chained yet, in the order seen; return how many were sealed."""
    sealed = 0
    while True:
        with db.session() as session:
            if db.is_postgres:
                session.execute(text("SELECT pg_advisory_xact_lock(7231001)"))
            last = session.execute(
                select(AuditEvent.chain_seq, AuditEvent.chain_hash)
                .where(AuditEvent.chain_seq.is_not(None))
                .order_by(AuditEvent.chain_seq.desc())
                .limit(1)
            ).first()
            seq, previous = (last.chain_seq, last.chain_hash) if last else (0, GENESIS)
            rows = session.execute(
                select(AuditEvent.id, AuditEvent.mac)
                .where(AuditEvent.chain_seq.is_(None))
                .order_by(AuditEvent.id)
                .limit(batch)
            ).all()
            if not rows:
                return sealed
            updates = []
            for row in rows:
                seq += 1
                previous = _link(previous, row.mac or "")
                updates.append({"row_id": row.id, "seq": seq, "hash": previous})
            table = AuditEvent.__table__
            session.connection().execute(
                update(table)
                .where(table.c.id == _bind("row_id"))
                .values(chain_seq=_bind("seq"), chain_hash=_bind("hash")),
                updates,
            )
            sealed += len(rows)


def _bind(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name)


class Sealer:
    """Seals the audit log every ``interval`` seconds in a daemon thread."""

    def __init__(self, db: Database, interval: float = 1.0) -> None:
        self.db = db
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)

    def start(self) -> None:
        """Start sealing in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()

    def _run(self) -> None:
        import logging

        while not self._stop.wait(self.interval):
            try:
                seal(self.db)
            except Exception:  # noqa: BLE001 - retried next second; verify seals too
                logging.getLogger(__name__).warning("audit sealing failed", exc_info=True)


# -- verification ----------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`verify` found."""

    rows: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems


def _rows(db: Database, batch: int = 2000) -> Iterator[AuditEvent]:
    last_seq = 0
    while True:
        with db.session() as session:
            chunk = list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.chain_seq > last_seq)
                    .order_by(AuditEvent.chain_seq)
                    .limit(batch)
                )
            )
        if not chunk:
            return
        yield from chunk
        last_seq = chunk[-1].chain_seq


def row_values(row: AuditEvent) -> dict[str, Any]:
    """A row's content fields, as stored."""
    return {name: getattr(row, name) for name in CONTENT_FIELDS}


def verify(db: Database, key: bytes | None = None, *, progress: Any = None) -> Report:
    """Check every row's MAC and the chain; seal pending rows first."""
    key = key or current_key()
    seal(db)
    report = Report()
    previous = GENESIS
    expected_seq = 1
    for row in _rows(db):
        report.rows += 1
        if progress is not None:
            progress(1)
        if row.chain_seq != expected_seq:
            report.problems.append(
                f"rows {expected_seq}..{row.chain_seq - 1} of the chain are missing (deleted)"
            )
            previous = None  # the link cannot be checked across a gap
        if row.mac is None or not hmac.compare_digest(row.mac, row_mac(row_values(row), key)):
            kind = (
                "has no valid MAC (inserted outside the service?)"
                if row.mac is None
                else ("does not match its MAC (edited)")
            )
            report.problems.append(f"row id {row.id} (chain {row.chain_seq}) {kind}")
        if previous is not None and row.chain_hash != _link(previous, row.mac or ""):
            report.problems.append(f"row id {row.id} (chain {row.chain_seq}) breaks the chain")
        previous = row.chain_hash
        expected_seq = row.chain_seq + 1
    with db.session() as session:
        unsealed = session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.chain_seq.is_(None))
        ).scalar_one()
    if unsealed:
        report.problems.append(f"{unsealed} rows could not be sealed")
    report.head = previous or ""
    return report


def export(db: Database, *, since_seq: int = 0) -> Iterator[dict[str, Any]]:
    """Every sealed row from ``since_seq`` on, as JSON-ready dicts in chain order."""
    seal(db)
    for row in _rows(db):
        if row.chain_seq <= since_seq:
            continue
        data = row_values(row)
        data["at"] = _canonical_time(row.at)
        yield {"id": row.id, "chain_seq": row.chain_seq, **data, "mac": row.mac,
               "chain_hash": row.chain_hash}  # fmt: skip
