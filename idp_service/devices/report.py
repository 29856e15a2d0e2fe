"""Report ceremony, service half: accept a device's posture facts, then judge them here.

The agent half is ``agent/report.py``. A report answers a ``report`` challenge
bound to the reporting device (``binding = "device:" + id``), so it cannot be
replayed or sent on behalf of another device. The service stores the facts
(latest plus a bounded history) and evaluates the posture checks itself at
ingest; the agent never sends a verdict.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, bindparam, case, insert, select, update
from sqlalchemy.orm import Session

from idp_service.devices import challenges, detection
from idp_service.platform import audit, metrics
from idp_service.platform.db import Upsert
from idp_service.platform.errors import Invalid, ServiceError
from idp_service.platform.models import Device, User, table_of, utcnow
from idp_service.posture.tables import FACTS_HISTORY, DeviceFacts, DeviceFactsHistory
from idp_service.services import Services
from posture_checks.incremental import VOLATILE, FactDigests
from trust_protocol.errors import ProtocolError
from trust_protocol.response import RegisteredDevice, VerifiedResponse, check_binding

MAX_REPORT = 1024 * 1024


def binding_for(device_id: str) -> str:
    """The challenge binding of a device's reports."""
    return "device:" + device_id


def issue_challenge(service: Services, device_id: object) -> tuple[str, int]:
    """A ``report`` challenge for ``device_id`` (stateless; nothing is written)."""
    if not isinstance(device_id, str) or not 0 < len(device_id) <= 64:
        raise Invalid("malformed", 'send {"device_id": "<this device\'s id>"}')
    token, challenge = challenges.issue(
        service, "report", binding_for(device_id), callback_path="/agent/v1/report"
    )
    return token, challenge.expires_at


def _collected_at(facts: dict[str, Any]) -> dt.datetime | None:
    value = facts.get("collected_at")
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def ingest(service: Services, envelope: bytes, *, remote_addr: str | None = None) -> dict[str, Any]:
    """Verify a report and store its facts; return what the agent should do next.

    One transaction of few statements (Core, compiled once), in the order every
    ceremony shares (:func:`challenges.accept_once`): record the challenge (a
    replay is refused before anything else is written), update the device's
    ``last_seen`` and read its keys, state and owner (which locks its row, so that
    one device's reports are applied one at a time) and judge them by sign-in's
    table, run detection, then read the bookkeeping of its latest facts, evaluate
    the checks whose inputs changed, write the latest facts (a few bytes when the
    report repeats the stored document) and a history slot when the content
    changed. A refused report writes nothing but its audit event (and, when
    detection refuses it, detection's flag and state change).
    """
    try:
        verified = challenges.open_answer(service, envelope, "report", max_size=MAX_REPORT)
        check_binding(verified, binding_for(verified.device_id))
        facts = verified.data.get("facts")
        if not isinstance(facts, dict):
            raise ProtocolError("malformed", "a report carries data.facts, an object")
        with service.db.session() as session:
            now = utcnow()
            device = accept_answer(
                service, session, verified, now, via="report", remote_addr=remote_addr
            )
            store_facts(service, session, verified.device_id, device.user_id, facts, now)
        metrics.report_ingested()
        return {
            "status": "accepted",
            "next_report_in": service.settings.report_interval,
            "osquery_queries": service.settings.osquery_queries,
        }
    except (ProtocolError, ServiceError) as exc:
        audit.record_separately(
            service.db, "device.report", "rejected", code=exc.code, remote_addr=remote_addr
        )
        raise


def accept_answer(
    service: Services,
    session: Session,
    verified: VerifiedResponse,
    now: dt.datetime,
    *,
    via: str,
    remote_addr: str | None,
) -> Any:
    """Judge an answer to a ``report`` challenge; return the device's row (locked).

    In the order every ceremony shares (:func:`challenges.accept_once`): record the
    challenge, update the device's ``last_seen`` (locking its row, so that one
    device's reports are applied one at a time) and judge it by sign-in's table,
    then run detection. A v1 report also forgets the document digest a v2 delta
    would build on (its facts replace that document).
    """
    conn = session.connection()
    device_id = verified.device_id
    seen: list[Any] = []

    def registry() -> RegisteredDevice | None:
        params = {
            "b_device_id": device_id,
            "b_now": now,
            "b_stale_before": now - dt.timedelta(seconds=service.settings.stale_after),
            "last_clock_skew": verified.clock_skew,
            "agent_version": verified.agent_version,
        }
        if via == "report":
            params["report_digest"] = None
        row = conn.execute(DEVICE_SEEN, params).first()
        if row is None:
            return None
        seen.append(row)
        return RegisteredDevice(device_id, row.sign_key, row.state, bool(row.owner_active))

    def judge() -> ProtocolError | None:
        context = detection.answer_context(via, remote_addr, now)
        refusal = detection.judge_report(
            session, service.settings, device_id, seen[0], verified.platform, now, context
        )
        return ProtocolError(refusal) if refusal is not None else None

    # Single use, then the state table shared with sign-in, then detection.
    challenges.accept_once(session, verified, via=via, registry=registry, judge=judge)
    return seen[0]


def store_facts(
    service: Services,
    session: Session,
    device_id: str,
    user_id: str,
    facts: dict[str, Any],
    now: dt.datetime,
) -> None:
    """Evaluate the checks whose inputs changed and store a report's facts (both versions).

    Runs under the device's row lock: reads the bookkeeping its previous report
    left, writes the latest facts (a few bytes when the content repeats the
    stored document) and a history slot when the content changed.
    """
    conn = session.connection()
    stored = conn.execute(_FACTS_STATE, {"device_id": device_id}).first()
    digests = FactDigests(facts)
    content = digests.content()
    inputs = _evaluate(service, session, device_id, user_id, facts, digests, stored)
    seq = (stored.report_seq if stored else 0) + 1
    row = {
        "report_seq": seq,
        "collected_at": _collected_at(facts),
        "received_at": now,
        "inputs": inputs,
    }
    if stored is not None and stored.digest == content:
        volatile = {k: facts[k] for k in VOLATILE if k in facts}
        conn.execute(_FACTS_UPDATE, {**row, "b_device_id": device_id, "volatile": volatile or None})
        return
    history_seq = (stored.history_seq if stored else 0) + 1
    full = {
        **row,
        "facts": facts,
        "digest": content,
        "history_seq": history_seq,
        "schema_version": str(facts.get("schema_version", ""))[:16],
        "volatile": None,
    }
    if stored is None:
        conn.execute(_FACTS_NEW, {**full, "device_id": device_id})
    else:
        conn.execute(_FACTS_UPDATE, {**full, "b_device_id": device_id})
    conn.execute(
        _HISTORY_UPSERT.statement(conn.dialect.name),
        {
            "device_id": device_id,
            "slot": history_seq % FACTS_HISTORY,
            "report_seq": seq,
            "collected_at": row["collected_at"],
            "received_at": now,
            "facts": facts,
        },
    )


def _evaluate(
    service: Services,
    session: Session,
    device_id: str,
    user_id: str,
    facts: dict[str, Any],
    digests: FactDigests,
    stored: Any,
) -> str | None:
    """Evaluate the posture checks on fresh facts (the posture surface's hook).

    Returns the digest of the checks' inputs, stored with the facts so that the
    next report can tell whether anything needs evaluating at all.
    """
    if service.posture is None:
        return None
    previous = stored.inputs if stored is not None else None
    return service.posture.ingest(
        session, device_id, user_id, facts, digests=digests, previous=previous
    )


# Statements of the ingest path, built once (SQLAlchemy caches their compiled form).
_facts = table_of(DeviceFacts)
_history = table_of(DeviceFactsHistory)
_devices = table_of(Device)

_FACTS_STATE = select(
    _facts.c.report_seq, _facts.c.digest, _facts.c.inputs, _facts.c.history_seq
).where(_facts.c.device_id == bindparam("device_id"))
# UPDATEs set the columns named in the parameters (besides the ``b_`` keys).
_FACTS_UPDATE = update(_facts).where(_facts.c.device_id == bindparam("b_device_id"))
_FACTS_NEW = insert(_facts)
# last_seen is not refreshed for a trusted device gone stale: detection sees it returned old.
DEVICE_SEEN = (
    update(_devices)
    .where(_devices.c.id == bindparam("b_device_id"))
    .values(
        last_seen=case(
            (
                and_(
                    _devices.c.state == "trusted",
                    _devices.c.last_seen < bindparam("b_stale_before"),
                ),
                _devices.c.last_seen,
            ),
            else_=bindparam("b_now"),
        )
    )
    .returning(
        _devices.c.sign_key,
        _devices.c.state,
        select(User.active)
        .where(User.id == _devices.c.user_id)
        .scalar_subquery()
        .label("owner_active"),
        _devices.c.user_id,
        _devices.c.last_seen,
        _devices.c.hardware_uuid,
        _devices.c.serial,
        _devices.c.agent_instance,
        _devices.c.agent_instance_prev,
        _devices.c.agent_instance_at,
        _devices.c.report_counter,
        _devices.c.report_digest,
    )
)
# One row per (device, slot) of the facts history ring: the new report overwrites the slot.
_HISTORY_UPSERT = Upsert(
    _history, ["device_id", "slot"], ("report_seq", "collected_at", "received_at", "facts")
)
