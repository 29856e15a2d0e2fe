"""Tamper evidence for the audit log: a row MAC, a keyed chain, and signed checkpoints.

* **Row MAC.** Every audit row is written with ``mac = HMAC-SHA256(key, content)``,
  computed by the service at insert time. The audit key lives outside the
  database (``DEVICETRUST_AUDIT_KEY``, or ``audit.key`` in the data directory).
* **Keyed chain.** A *sealer* takes rows in the order it first sees them and gives
  each the next ``chain_seq`` and ``chain_hash = HMAC-SHA256(chain key,
  CHAIN_CONTEXT || previous chain_hash || seq || content)``; the chain key is
  derived from the audit key. Someone who can write the database but does not
  hold the key can neither renumber the rows after one they deleted nor relink
  rows they swapped: every link after the change fails to verify.
* **Signed checkpoints.** At intervals (:func:`interval_checkpoint`), at every re-seal,
  prune and restore, and on ``devicetrust audit checkpoint``, the service signs
  ``(seq, head, time)`` with an Ed25519 key of its own (``audit-checkpoint.key``
  in the data dir, or ``DEVICETRUST_AUDIT_CHECKPOINT_KEY``) and publishes it
  where the database writer cannot reach: a line appended to the checkpoint file
  (``DEVICETRUST_AUDIT_CHECKPOINT_FILE``, default ``audit-checkpoints.jsonl`` in
  the data dir) and an ``audit.checkpoint`` webhook event. The checkpoint is
  also kept in ``audit_checkpoints``. Checkpoints are what catch a holder of the
  audit key who rewrites or truncates the chain: the heads they anchor cannot
  be re-signed without the checkpoint key, nor unpublished.

:func:`verify` walks the whole log and reports every problem it finds: edited
rows (MAC mismatch), inserted rows, deleted rows (sequence gaps), broken links,
checkpoints whose head the chain no longer reaches, and rows that checkpoints
anchor but the database lacks (truncation, or a restore from an older backup).
Retention pruning (:func:`prune`) removes a prefix only up to a checkpoint and
signs a ``prune`` checkpoint saying so; verification then starts there.

Chains sealed by the earlier, unkeyed scheme (``chain_version`` NULL) are
re-sealed under the keyed one on the first seal after the upgrade, with an
``audit.reseal`` event that records the old head and anything the old chain
already showed wrong.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import CursorResult, bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from idp_service.platform import audit, audit_keys
from idp_service.platform.db import Database
from idp_service.platform.models import AuditCheckpoint, AuditEvent, table_of, utcnow

# The keys and row MACs (audit_keys.py), re-exported: callers configure and read the
# audit's keys through this module.
CONTENT_FIELDS = audit_keys.CONTENT_FIELDS
checkpoint_file = audit_keys.checkpoint_file
configure = audit_keys.configure
content_bytes = audit_keys.content_bytes
current_checkpoint_file = audit_keys.current_checkpoint_file
current_key = audit_keys.current_key
current_signer = audit_keys.current_signer
key_id = audit_keys.key_id
load_checkpoint_key = audit_keys.load_checkpoint_key
load_key = audit_keys.load_key
row_mac = audit_keys.row_mac
with_mac = audit_keys.with_mac
canonical_time = audit_keys.canonical_time

log = logging.getLogger(__name__)

GENESIS = "0" * 64
CHAIN_VERSION = 2
CHAIN_CONTEXT = b"devicetrust/v1/audit-chain\x00"
CHAIN_KEY_LABEL = b"devicetrust/v1/audit-chain-key"
CHECKPOINT_CONTEXT = b"devicetrust/v1/audit-checkpoint\x00"
CHECKPOINT_FORMAT = 1
CHECKPOINT_KINDS = ("interval", "manual", "reseal", "prune", "restore")
SEAL_BATCH = 5000
LOCK_ID = 7231001


@functools.lru_cache(maxsize=8)
def chain_key(key: bytes) -> bytes:
    """The key of the chain's links, derived from the audit key (so one secret to keep)."""
    return hmac.new(key, CHAIN_KEY_LABEL, hashlib.sha256).digest()


def chain_link(key: bytes, previous: str, seq: int, values: dict[str, Any]) -> str:
    """A keyed link: HMAC over the previous link, the sequence number and the row's content."""
    message = CHAIN_CONTEXT + f"{previous}\n{seq}\n".encode() + content_bytes(values)
    return hmac.new(chain_key(key), message, hashlib.sha256).hexdigest()


def _v1_link(previous: str, mac: str) -> str:
    """The unkeyed link of the first scheme (migration 0007), only to check it before re-sealing."""
    return hashlib.sha256((previous + mac).encode()).hexdigest()


def row_values(row: Any) -> dict[str, Any]:
    """A row's content fields, as stored."""
    return {name: getattr(row, name) for name in CONTENT_FIELDS}


def _lock(db: Database, session: Session) -> None:
    if db.is_postgres:
        session.execute(text(f"SELECT pg_advisory_xact_lock({LOCK_ID})"))
    else:  # take SQLite's write lock now, so two sealers cannot interleave
        session.execute(text("UPDATE audit_events SET id = id WHERE 0"))


def _head(session: Session) -> tuple[int, str]:
    last = session.execute(
        select(AuditEvent.chain_seq, AuditEvent.chain_hash)
        .where(AuditEvent.chain_seq.is_not(None))
        .order_by(AuditEvent.chain_seq.desc())
        .limit(1)
    ).first()
    if last is not None:
        return last.chain_seq, last.chain_hash
    pruned = _pruned_base(session)
    return pruned if pruned else (0, GENESIS)


def _pruned_base(session: Session) -> tuple[int, str] | None:
    """``(seq, head)`` of the newest prune checkpoint with a valid signature, if any."""
    for row in session.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.kind == "prune")
        .order_by(AuditCheckpoint.seq.desc())
    ):
        cp = _parse_stored(row)
        if cp is not None and _signature_ok(cp, current_signer().verify_key):
            return cp["seq"], cp["head"]
    return None


# -- sealing -------------------------------------------------------------------------------
# Databases this process has checked for rows of the old chain (the check scans the table;
# rows of the old scheme can only predate the upgrade, so once is enough).
_resealed_dbs: set[str] = set()
_AUDIT_TABLE = table_of(AuditEvent)
_UPDATE = (
    update(_AUDIT_TABLE)
    .where(_AUDIT_TABLE.c.id == bindparam("row_id"))
    .values(chain_seq=bindparam("seq"), chain_hash=bindparam("hash"), chain_version=CHAIN_VERSION)
)


def seal(db: Database, batch: int = SEAL_BATCH, key: bytes | None = None) -> int:
    """Chain every row not chained yet, in the order seen; return how many were sealed.

    Rows sealed by the old unkeyed scheme are re-sealed first (:func:`_reseal`);
    that is audited and checkpointed.
    """
    key = key or current_key()
    sealed = 0
    resealed = False
    check = str(db.engine.url) not in _resealed_dbs  # once per process and database
    while True:
        with db.session() as session:
            _lock(db, session)
            if check:
                check = False
                resealed = _reseal(session, key)
                if resealed:
                    continue  # committed; the audit.reseal row is sealed next
            seq, previous = _head(session)
            rows = session.execute(
                select(AuditEvent.id, *(getattr(AuditEvent, n) for n in CONTENT_FIELDS))
                .where(AuditEvent.chain_seq.is_(None))
                .order_by(AuditEvent.id)
                .limit(batch)
            ).all()
            if not rows:
                break
            updates = []
            for row in rows:
                seq += 1
                previous = chain_link(key, previous, seq, row_values(row))
                updates.append({"row_id": row.id, "seq": seq, "hash": previous})
            session.connection().execute(_UPDATE, updates)
            sealed += len(rows)
    _resealed_dbs.add(str(db.engine.url))
    if resealed:
        checkpoint(db, "reseal", actor="system")
        sealed += seal(db, batch, key)  # the checkpoint's own event
    return sealed


def _reseal(session: Session, key: bytes) -> bool:
    """Re-seal rows of the unkeyed chain under the keyed one, in this transaction.

    Positions stay (a gap stays a gap; MACs still show edits); what the old chain
    already showed wrong is counted in the ``audit.reseal`` event.
    """
    first = session.execute(
        select(func.min(AuditEvent.chain_seq)).where(
            AuditEvent.chain_seq.is_not(None), AuditEvent.chain_version.is_(None)
        )
    ).scalar_one()
    if first is None:
        return False
    before = session.execute(
        select(AuditEvent.chain_hash).where(AuditEvent.chain_seq == first - 1)
    ).scalar_one_or_none()
    stored_prev = new_prev = before or GENESIS
    problems: list[str] = []
    count, last_seq, expected, old_head = 0, first - 1, first, stored_prev
    while True:
        rows = session.execute(
            select(AuditEvent.id, AuditEvent.chain_seq, AuditEvent.chain_hash, AuditEvent.mac,
                   AuditEvent.chain_version, *(getattr(AuditEvent, n) for n in CONTENT_FIELDS))
            .where(AuditEvent.chain_seq > last_seq)
            .order_by(AuditEvent.chain_seq)
            .limit(SEAL_BATCH)
        ).all()  # fmt: skip
        if not rows:
            break
        updates = []
        for row in rows:
            values = row_values(row)
            if row.chain_seq != expected:
                problems.append(f"rows {expected}..{row.chain_seq - 1} missing")
            if row.mac is None or not hmac.compare_digest(row.mac, row_mac(values, key)):
                problems.append(f"row id {row.id} does not match its MAC")
            if row.chain_version is None:
                old_ok = row.chain_hash == _v1_link(stored_prev, row.mac or "")
            else:
                old_ok = row.chain_hash == chain_link(key, stored_prev, row.chain_seq, values)
            if not old_ok:
                problems.append(f"row id {row.id} broke the old chain")
            stored_prev = old_head = row.chain_hash
            new_prev = chain_link(key, new_prev, row.chain_seq, values)
            updates.append({"row_id": row.id, "seq": row.chain_seq, "hash": new_prev})
            expected = row.chain_seq + 1
        session.connection().execute(_UPDATE, updates)
        count += len(rows)
        last_seq = rows[-1].chain_seq
    audit.record(
        session,
        "audit.reseal",
        "ok" if not problems else "error",
        actor="system",
        details={
            "from_seq": first,
            "to_seq": last_seq,
            "rows": count,
            "old_head": old_head,
            "new_head": new_prev,
            "scheme": f"v1 (unkeyed) -> v{CHAIN_VERSION} (keyed)",
            "old_chain_problems": len(problems),
            "problems": problems[:20],
        },
    )
    return True


def interval_checkpoint(db: Database) -> dict[str, Any] | None:
    """Seal, then sign an ``interval`` checkpoint if rows other than the last checkpoint's
    own event were added since it; return the checkpoint made, if any.

    The job runner (``idp_service/schedule.py``) calls it every
    ``DEVICETRUST_AUDIT_CHECKPOINT_INTERVAL``, once across replicas, and :func:`seal`
    every second.
    """
    seal(db)
    with db.session() as session:
        head_seq, _ = _head(session)
        last = session.execute(select(func.max(AuditCheckpoint.seq))).scalar_one()
    if head_seq == 0 or (last is not None and head_seq <= last + 1):
        return None
    return checkpoint(db, "interval", actor="system")


# -- checkpoints -----------------------------------------------------------------------------
def canonical(payload: dict[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers (after ``CHECKPOINT_CONTEXT``)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_checkpoint(signer: SigningKey, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` plus its ``signature``: one line of the checkpoint file."""
    signature = signer.sign(CHECKPOINT_CONTEXT + canonical(payload)).signature
    return {**payload, "signature": base64.b64encode(signature).decode()}


def _signature_ok(line: dict[str, Any], verify_key: VerifyKey) -> bool:
    payload = {k: v for k, v in line.items() if k != "signature"}
    try:
        signature = base64.b64decode(str(line.get("signature", "")), validate=True)
        verify_key.verify(CHECKPOINT_CONTEXT + canonical(payload), signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def _parse_stored(row: AuditCheckpoint) -> dict[str, Any] | None:
    try:
        payload = json.loads(row.payload)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("seq") != row.seq:
        return None
    return {**payload, "signature": row.signature}


def append_line(path: Path, line: dict[str, Any]) -> None:
    """Append one checkpoint as a JSON line (O_APPEND, one write, fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(session: Session, line: dict[str, Any], actor: str) -> None:
    """Keep ``line`` in the table and send it as an ``audit.checkpoint`` event, in ``session``."""
    payload = {k: v for k, v in line.items() if k != "signature"}
    session.add(
        AuditCheckpoint(
            seq=line["seq"],
            kind=line["kind"],
            payload=canonical(payload).decode(),
            signature=line["signature"],
        )
    )
    audit.record(session, "audit.checkpoint", "ok", actor=actor, details=line)


def checkpoint(
    db: Database,
    kind: str = "manual",
    *,
    actor: str = "system",
    extra: dict[str, Any] | None = None,
    at_seq: tuple[int, str] | None = None,
    session_hook: Callable[[Session, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Seal, then sign the chain's head (or ``at_seq``) and publish it; return the line.

    ``session_hook`` runs in the checkpoint's transaction (prune deletes its rows there).
    The file is written after the transaction commits: a line in the file is always a
    checkpoint of a committed head.
    """
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    seal(db)
    signer = current_signer()
    with db.session() as session:
        _lock(db, session)
        seq, head = at_seq if at_seq is not None else _head(session)
        payload = {
            "v": CHECKPOINT_FORMAT,
            "kind": kind,
            "seq": seq,
            "head": head,
            "at": canonical_time(utcnow()),
            "key_id": key_id(signer.verify_key),
            **(extra or {}),
        }
        line = sign_checkpoint(signer, payload)
        _publish(session, line, actor)
        if session_hook is not None:
            session_hook(session, line)
    try:
        append_line(current_checkpoint_file(), line)
    except OSError:
        log.error("audit checkpoint %s could not be appended to the checkpoint file", seq)
        raise
    return line


def stored_checkpoints(db: Database) -> list[dict[str, Any]]:
    """Every checkpoint in the database, oldest first (signatures not checked here)."""
    with db.session() as session:
        rows = list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)))
    return [cp for cp in (_parse_stored(r) for r in rows) if cp is not None]


def read_checkpoint_file(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The checkpoints in a file, and a problem per line that is not one."""
    lines, problems = [], []
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                problems.append(f"checkpoint file line {number} is not JSON")
                continue
            if (
                not isinstance(line, dict)
                or not isinstance(line.get("seq"), int)
                or not isinstance(line.get("head"), str)
            ):
                problems.append(f"checkpoint file line {number} is not a checkpoint")
                continue
            lines.append(line)
    return lines, problems


def public_key_hex() -> str:
    """The checkpoint public key, hex (give it to whoever verifies checkpoints)."""
    return bytes(current_signer().verify_key).hex()


# -- verification ----------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`verify` found."""

    rows: int = 0
    head: str = GENESIS
    head_seq: int = 0
    retained_from: int = 1  # the first chain seq kept (after retention pruning)
    pruned: dict[str, Any] | None = None  # the prune checkpoint the log starts after
    checkpoints: int = 0  # valid checkpoints compared with the chain
    anchored_seq: int | None = None  # the newest checkpoint's seq
    unanchored_rows: int = 0  # rows after it: no checkpoint vouches for them yet
    missing: list[dict[str, Any]] = field(default_factory=list)
    restored: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "ok": self.ok,
            "rows": self.rows,
            "head": self.head,
            "head_seq": self.head_seq,
            "retained_from": self.retained_from,
            "pruned": self.pruned,
            "checkpoints": self.checkpoints,
            "anchored_seq": self.anchored_seq,
            "unanchored_rows": self.unanchored_rows,
            "missing": self.missing,
            "restored": self.restored,
            "problems": self.problems,
        }


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
        last = chunk[-1].chain_seq
        assert last is not None  # the query above selects sealed rows only
        last_seq = last


def _describe(cp: dict[str, Any]) -> str:
    return f"checkpoint seq {cp['seq']} ({cp.get('kind')}, {cp.get('at')})"


def verify(
    db: Database,
    key: bytes | None = None,
    *,
    checkpoints: Iterable[dict[str, Any]] | None = None,
    public_key: VerifyKey | None = None,
    progress: Any = None,
) -> Report:
    """Check every row's MAC and keyed link, and every checkpoint; seal pending rows first.

    ``checkpoints`` are lines from a checkpoint file (or webhook receiver); the
    checkpoints kept in the database are checked too, but only ones kept outside it
    prove that nothing anchored was removed. Signatures are checked with
    ``public_key`` (default: this service's checkpoint key).
    """
    key = key or current_key()
    verify_key = public_key or current_signer().verify_key
    with db.session() as session:
        sealed_through = session.execute(select(func.max(AuditEvent.id))).scalar_one() or 0
    seal(db)
    report = Report()

    # Checkpoints: the file's (external) and the database's, each signature checked.
    external = list(checkpoints) if checkpoints is not None else None
    known: dict[str, dict[str, Any]] = {}
    for source, lines in (("database", stored_checkpoints(db)), ("file", external or [])):
        for line in lines:
            if not _signature_ok(line, verify_key):
                report.problems.append(f"{_describe(line)} in the {source} has a bad signature")
                continue
            known.setdefault(str(line["signature"]), line)
    valid = sorted(known.values(), key=lambda c: (str(c.get("at")), c["seq"]))
    prunes = [c for c in valid if c.get("kind") == "prune"]
    base = max(prunes, key=lambda c: c["seq"]) if prunes else None

    # A restore checkpoint acknowledges that checkpoints signed before it, beyond its
    # seq, anchor rows the restored database never had: they are reported, not failed.
    # When a checkpoint file is given, only restores it holds count: one only in the
    # database could have been put there by whoever truncated it.
    superseded: set[str] = set()
    for i, cp in enumerate(valid):
        if cp.get("kind") != "restore" or (external is not None and cp not in external):
            continue
        lost = [c for c in valid[:i] if c["seq"] > cp["seq"] and c["signature"] not in superseded]
        if lost:
            top = max(lost, key=lambda c: c["seq"])
            report.restored.append(
                {"restore": {k: cp.get(k) for k in ("seq", "at")},
                 "lost_rows": [cp["seq"] + 1, top["seq"]],
                 "lost_checkpoints": len(lost)}
            )  # fmt: skip
            superseded.update(c["signature"] for c in lost)
    live = [c for c in valid if c["signature"] not in superseded]

    needed = {c["seq"] for c in live}
    heads: dict[int, str] = {}
    previous: str | None = GENESIS
    expected_seq = 1
    first = True
    for row in _rows(db):
        assert row.chain_seq is not None  # _rows yields sealed rows only
        report.rows += 1
        if progress is not None:
            progress(1)
        if first:
            first = False
            if base is not None and row.chain_seq > base["seq"]:
                expected_seq, previous = base["seq"] + 1, base["head"]
                report.retained_from = base["seq"] + 1
                report.pruned = {k: base.get(k) for k in ("seq", "at", "before")}
        if row.chain_seq != expected_seq:
            report.problems.append(
                f"rows {expected_seq}..{row.chain_seq - 1} of the chain are missing (deleted)"
            )
            previous = None  # the link cannot be checked across a gap
        values = row_values(row)
        if row.mac is None or not hmac.compare_digest(row.mac, row_mac(values, key)):
            kind = (
                "has no valid MAC (inserted outside the service?)"
                if row.mac is None
                else "does not match its MAC (edited)"
            )
            report.problems.append(f"row id {row.id} (chain {row.chain_seq}) {kind}")
        if row.chain_version != CHAIN_VERSION:
            report.problems.append(
                f"row id {row.id} (chain {row.chain_seq}) is not sealed under the keyed chain"
            )
        elif previous is not None and not hmac.compare_digest(
            row.chain_hash or "", chain_link(key, previous, row.chain_seq, values)
        ):
            report.problems.append(
                f"row id {row.id} (chain {row.chain_seq}) breaks the chain: its link does not "
                "verify with the audit key (a row before it was removed, inserted or moved, "
                "or the chain was recomputed without the key)"
            )
        previous = row.chain_hash or ""
        if row.chain_seq in needed:
            heads[row.chain_seq] = previous
        expected_seq = row.chain_seq + 1
        report.head_seq = row.chain_seq
    if report.rows == 0 and base is not None:
        report.head_seq, previous = base["seq"], base["head"]
        report.retained_from = base["seq"] + 1
        report.pruned = {k: base.get(k) for k in ("seq", "at", "before")}
    report.head = previous or ""

    with db.session() as session:
        unsealed = session.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.chain_seq.is_(None), AuditEvent.id <= sealed_through)
        ).scalar_one()  # rows written since the seal are sealed by the next one
    if unsealed:
        report.problems.append(f"{unsealed} rows could not be sealed")

    # Each checkpoint against the chain.
    matched: dict[str, Any] | None = None
    matching: set[str] = set()
    beyond: list[dict[str, Any]] = []
    for cp in sorted(live, key=lambda c: c["seq"]):
        seq = cp["seq"]
        if seq < report.retained_from - 1:
            continue  # anchors rows removed by retention pruning
        report.checkpoints += 1
        if seq > report.head_seq:
            beyond.append(cp)
            continue
        actual = GENESIS if seq == 0 else heads.get(seq)
        if seq == report.retained_from - 1 and report.pruned is not None:
            actual = base["head"] if base is not None else actual
        if actual is None:
            report.problems.append(f"row {seq}, anchored by {_describe(cp)}, is missing")
        elif not hmac.compare_digest(actual, str(cp["head"])):
            report.problems.append(
                f"{_describe(cp)} does not match the chain: rows up to {seq} were changed, "
                "removed or re-linked"
            )
        else:
            matched = cp
            matching.add(str(cp["signature"]))
    if beyond:
        newest = max(beyond, key=lambda c: c["seq"])
        since = (
            f"since checkpoint seq {matched['seq']} ({matched.get('at')})"
            if matched is not None
            else "since the start of the log"
        )
        report.missing.append(
            {"rows": [report.head_seq + 1, newest["seq"]],
             "since_checkpoint": None if matched is None
             else {k: matched.get(k) for k in ("seq", "at", "head")},
             "anchored_by": {k: newest.get(k) for k in ("seq", "at", "head")}}
        )  # fmt: skip
        report.problems.append(
            f"rows {report.head_seq + 1}..{newest['seq']} missing {since}: the database ends at "
            f"seq {report.head_seq} but {_describe(newest)} anchors rows up to {newest['seq']} "
            "(truncated, or restored from an older backup)"
        )
    anchors = live if external is None else [c for c in live if c in external]
    anchored = [c["seq"] for c in anchors if c["signature"] in matching]
    report.anchored_seq = max(anchored) if anchored else None
    report.unanchored_rows = report.head_seq - (report.anchored_seq or report.retained_from - 1)
    return report


# -- retention and restore -------------------------------------------------------------------
def prune(db: Database, before: dt.datetime, *, actor: str = "cli") -> dict[str, Any]:
    """Remove the log's prefix older than ``before``, up to the newest checkpoint in it.

    The chain must verify first. A ``prune`` checkpoint (signed, published like the
    others) records the seq and head the retained log starts after; the rows at or
    below it are deleted in its transaction (the triggers allow exactly that), and
    an ``audit.prune`` event says how many. Raises ``ValueError`` when there is
    nothing to prune or the log does not verify.
    """
    report = verify(db)
    if not report.ok:
        raise ValueError("the audit log does not verify; nothing pruned: " + report.problems[0])
    verify_key = current_signer().verify_key
    candidates = [
        c
        for c in stored_checkpoints(db)
        if c.get("kind") != "prune" and c["seq"] >= report.retained_from
        and _signature_ok(c, verify_key)
    ]  # fmt: skip
    with db.session() as session:
        target: dict[str, Any] | None = None
        for cp in sorted(candidates, key=lambda c: c["seq"], reverse=True):
            at = session.execute(
                select(AuditEvent.at).where(AuditEvent.chain_seq == cp["seq"])
            ).scalar_one_or_none()
            if at is not None and at < before:
                target = cp
                break
    if target is None:
        raise ValueError(
            f"no checkpoint anchors a row older than {before.isoformat()}; nothing pruned"
        )
    through = target["seq"]
    removed: dict[str, int] = {}

    def _delete(session: Session, line: dict[str, Any]) -> None:
        session.flush()  # the prune checkpoint row first: the trigger allows up to it
        result = session.execute(delete(AuditEvent).where(AuditEvent.chain_seq <= through))
        assert isinstance(result, CursorResult)  # a DELETE's result has a row count
        removed["rows"] = result.rowcount
        audit.record(
            session,
            "audit.prune",
            "ok",
            actor=actor,
            details={"through_seq": through, "before": canonical_time(before),
                     "rows": result.rowcount, "first_retained": through + 1},
        )  # fmt: skip

    line = checkpoint(
        db,
        "prune",
        actor=actor,
        extra={"before": canonical_time(before), "first_retained": through + 1},
        at_seq=(through, target["head"]),
        session_hook=_delete,
    )
    return {"checkpoint": line, "rows": removed.get("rows", 0), "first_retained": through + 1}


def export(db: Database, *, since_seq: int = 0) -> Iterator[dict[str, Any]]:
    """Every sealed row from ``since_seq`` on, as JSON-ready dicts in chain order."""
    seal(db)
    for row in _rows(db):
        assert row.chain_seq is not None  # _rows yields sealed rows only
        if row.chain_seq <= since_seq:
            continue
        data = row_values(row)
        data["at"] = canonical_time(row.at)
        yield {"id": row.id, "chain_seq": row.chain_seq, **data, "mac": row.mac,
               "chain_hash": row.chain_hash}  # fmt: skip
