"""Clone, duplicate and staleness detection: flag a device for review, suspend or deny by policy.

What is looked for (issue 6, section 2):

* ``hardware_mismatch``: one device key answered with other hardware identifiers
  (``platform.hardware_uuid`` / ``platform.serial``) than the registry holds: a
  copied key, most likely. Judged at sign-in and at each report.
* ``duplicate_hardware``: a new key registered from hardware another (not revoked)
  device already claims. Judged at registration; the *new* device is flagged.
* ``concurrent_agents``: answers for one device alternate between two agent
  process instances (A, B, A) within ``DEVICETRUST_CONCURRENT_AGENT_WINDOW``;
  a restart (A then B) never does that. Agents send a random per-process
  ``platform.instance`` (docs/protocol.md §6.1).
* ``stale``: not seen for ``DEVICETRUST_STALE_AFTER``.

Each finding writes a :class:`~idp_service.devices.flag_tables.DeviceFlag` with
its evidence and an audit event, and by policy changes the device's state in
the same transaction: clones are ``suspended`` (``DEVICETRUST_CLONE_POLICY``),
stale devices ``denied`` (``DEVICETRUST_STALE_POLICY``); with policy ``flag``
the state is left alone. The decisions are pure functions; the writes are
:func:`apply`, :func:`registration_state` and :func:`sweep_stale`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from idp_service.devices import states
from idp_service.devices.flag_tables import DeviceFlag
from idp_service.platform import audit
from idp_service.platform.config import Settings
from idp_service.platform.db import Database
from idp_service.platform.errors import Conflict, Invalid, NotFound
from idp_service.platform.models import Device, utcnow
from trust_protocol.device_keys import fingerprint
from trust_protocol.response import VerifiedResponse

log = logging.getLogger(__name__)

CLONE_KINDS = ("hardware_mismatch", "duplicate_hardware", "concurrent_agents")
SYSTEM = "system"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Finding:
    """One thing detection noticed about a device, with the evidence to show an admin."""

    kind: str
    evidence: dict[str, Any] = field(default_factory=dict)


# Values firmware vendors leave in DMI/SMBIOS when they never set a real one. Many
# machines share them, so matching on them would call different machines "the same
# hardware" (a false clone or duplicate); they count as unknown.
_PLACEHOLDERS = frozenset(
    {
        "to be filled by o.e.m.",
        "to be filled by oem",
        "default string",
        "system serial number",
        "system product name",
        "not specified",
        "not applicable",
        "not available",
        "none",
        "null",
        "n/a",
        "na",
        "0",
        "0123456789",
        "123456789",
        "chassis serial number",
        "invalid",
        "unknown",
        "03000200-0400-0500-0006-000700080009",
    }
)


def _known(value: str | None) -> str | None:
    """A value, or None when unknown (agents send "" for unknown)."""
    return value if value else None


def _hardware_id(value: str | None) -> str | None:
    """A hardware UUID or serial, or None when unknown: empty, a vendor placeholder,
    or a UUID of all zeros or all Fs."""
    if not value:
        return None
    folded = value.strip().casefold()
    if folded in _PLACEHOLDERS:
        return None
    hex_digits = folded.replace("-", "")
    if len(hex_digits) == 32 and set(hex_digits) in ({"0"}, {"f"}):
        return None
    return value


def instance_of(platform: Mapping[str, str]) -> str | None:
    """The answering agent process's instance id (``platform.instance``), or None.

    Untrusted input (the protocol allows 256 characters); kept to the column's 64.
    """
    return _known(platform.get("instance", "")[:64])


# -- pure decisions ---------------------------------------------------------------------------


def hardware_finding(
    stored_uuid: str | None, stored_serial: str | None, seen: Mapping[str, str]
) -> Finding | None:
    """``hardware_mismatch`` when a known identifier differs from the known stored one."""
    pairs = {
        "hardware_uuid": (_hardware_id(stored_uuid), _hardware_id(seen.get("hardware_uuid"))),
        "serial": (_hardware_id(stored_serial), _hardware_id(seen.get("serial"))),
    }
    differing = [k for k, (a, b) in pairs.items() if a is not None and b is not None and a != b]
    if not differing:
        return None
    return Finding(
        "hardware_mismatch",
        {
            "stored": {k: a for k, (a, _) in pairs.items()},
            "seen": {k: b for k, (_, b) in pairs.items()},
            "differs": differing,
        },
    )


def next_instances(
    current: str | None,
    prev: str | None,
    switched_at: dt.datetime | None,
    seen: str | None,
    now: dt.datetime,
) -> tuple[str | None, str | None, dt.datetime | None]:
    """The remembered ``(instance, previous one, switched at)`` after ``seen`` answered."""
    if not seen or seen == current:
        return current, prev, switched_at
    return seen, current, now


def alternation_finding(
    current: str | None,
    prev: str | None,
    switched_at: dt.datetime | None,
    seen: str | None,
    now: dt.datetime,
    window: float,
) -> Finding | None:
    """``concurrent_agents`` when ``seen`` is the instance that was replaced within ``window``.

    Answers A, B, A: B took over from A at ``switched_at`` and now A answers again.
    A restart is A, B, B, ...: instance ids are random per process, so A never returns.
    """
    if not seen or seen == current or prev is None or seen != prev or switched_at is None:
        return None
    if now - switched_at > dt.timedelta(seconds=window):
        return None
    return Finding(
        "concurrent_agents",
        {
            "instances": [prev, current, seen],
            "switched_at": switched_at.isoformat(),
            "returned_at": now.isoformat(),
            "window_seconds": int(window),
        },
    )


def stale_finding(last_seen: dt.datetime, now: dt.datetime, stale_after: float) -> Finding | None:
    """``stale`` when the device was last seen more than ``stale_after`` seconds ago."""
    if now - last_seen <= dt.timedelta(seconds=stale_after):
        return None
    return Finding(
        "stale",
        {"last_seen": last_seen.isoformat(), "stale_after_seconds": int(stale_after)},
    )


def judge_answer(
    device: Any, platform: Mapping[str, str], now: dt.datetime, settings: Settings
) -> list[Finding]:
    """Everything wrong with a trusted device's verified answer (sign-in or report).

    ``device`` is a :class:`Device` or a row with its ``hardware_uuid``, ``serial``,
    ``agent_instance*`` and ``last_seen`` (as it was before this answer).
    """
    found = [
        hardware_finding(device.hardware_uuid, device.serial, platform),
        alternation_finding(
            device.agent_instance,
            device.agent_instance_prev,
            device.agent_instance_at,
            instance_of(platform),
            now,
            settings.concurrent_window,
        ),
        stale_finding(device.last_seen, now, settings.stale_after),
    ]
    return [f for f in found if f is not None]


def policy_outcome(findings: list[Finding], settings: Settings) -> tuple[str | None, str | None]:
    """``(new state, refusal code)`` the policies give for ``findings``; ``(None, None)`` to
    leave the device alone. A clone under ``suspend`` wins over staleness under ``deny``."""
    kinds = {f.kind for f in findings}
    if kinds & set(CLONE_KINDS) and settings.clone_policy == "suspend":
        return "suspended", "device_suspended"
    if "stale" in kinds and settings.stale_policy == "deny":
        return "denied", "device_denied"
    return None, None


# -- writes -----------------------------------------------------------------------------------


def open_flags(session: Session, device_id: str) -> list[DeviceFlag]:
    """The device's flags that wait for review, oldest first."""
    return list(
        session.scalars(
            select(DeviceFlag)
            .where(DeviceFlag.device_id == device_id, DeviceFlag.resolved_at.is_(None))
            .order_by(DeviceFlag.id)
        )
    )


def add_flag(
    session: Session, device: Device, finding: Finding, *, context: Mapping[str, Any]
) -> DeviceFlag:
    """Record ``finding`` (with ``context``: when, via, remote address) and audit it.

    An open flag of the same kind is updated instead (``count``, ``last_at``), so a
    flagged device that keeps answering does not grow the table.
    """
    evidence = {**finding.evidence, **context}
    existing = session.scalars(
        select(DeviceFlag).where(
            DeviceFlag.device_id == device.id,
            DeviceFlag.kind == finding.kind,
            DeviceFlag.resolved_at.is_(None),
        )
    ).first()
    if existing is not None:
        updated = dict(existing.evidence)
        updated["count"] = int(updated.get("count", 1)) + 1
        updated["last"] = evidence
        existing.evidence = updated
        return existing
    flag = DeviceFlag(device_id=device.id, kind=finding.kind, evidence=evidence)
    session.add(flag)
    session.flush()
    audit.record(
        session,
        "device.flag",
        "ok",
        code=finding.kind,
        actor=SYSTEM,
        user_id=device.user_id,
        device_id=device.id,
        remote_addr=context.get("remote_addr"),
        details={"flag_id": flag.id, "kind": finding.kind, "evidence": evidence},
    )
    return flag


# The state each policy outcome moves a device to, as a transition of states.py.
POLICY_TRANSITIONS = {"suspended": "suspend", "denied": "deny_stale"}


def set_state(session: Session, device: Device, state: str, reason: str) -> None:
    """The system changes a device's state (suspend, or deny as stale), audited."""
    if device.state == state:
        return
    states.move(
        session,
        device,
        POLICY_TRANSITIONS[state],
        reason=reason,
        actor=SYSTEM,
        request_reason=f"system: {state}",  # no code can trust it now
        details={"reason": reason},
    )


def _reason(findings: list[Finding], state: str, device: Device) -> str:
    if state == "denied":
        return f"stale: not seen since {device.last_seen.isoformat(timespec='seconds')}"
    kinds = ", ".join(f.kind for f in findings if f.kind in CLONE_KINDS)
    return f"suspended pending review: {kinds}"


def apply(
    session: Session,
    device: Device,
    findings: list[Finding],
    settings: Settings,
    *,
    context: Mapping[str, Any],
) -> str | None:
    """Flag ``findings`` on ``device`` and apply the policies; return the refusal code, if any.

    Runs in the caller's transaction; the caller commits it even when it then refuses.
    """
    for finding in findings:
        add_flag(session, device, finding, context=context)
    state, code = policy_outcome(findings, settings)
    if state is not None:
        set_state(session, device, state, _reason(findings, state, device))
    return code


def judge_report(
    session: Session,
    settings: Settings,
    device_id: str,
    row: Any,
    platform: Mapping[str, str],
    now: dt.datetime,
    context: Mapping[str, Any],
) -> str | None:
    """Detection at report ingest, on the device row the ingest's update returned.

    Writes only when something changed: a new agent instance, or a finding (flagged,
    and by policy suspended or denied). Returns the refusal code, if any; the caller
    commits before refusing, so the flag and the state change stand.
    """
    findings = judge_answer(row, platform, now, settings) if row.state == "trusted" else []
    seen = instance_of(platform)
    instances = next_instances(
        row.agent_instance, row.agent_instance_prev, row.agent_instance_at, seen, now
    )
    if not findings and instances[0] == row.agent_instance:
        return None
    device = session.get(Device, device_id)
    if device is None:  # pragma: no cover - the ingest just updated it
        raise LookupError(device_id)
    device.agent_instance, device.agent_instance_prev, device.agent_instance_at = instances
    refusal = apply(session, device, findings, settings, context=context) if findings else None
    if refusal is None:
        device.last_seen = now  # a stale device allowed by policy was seen now
    return refusal


def answer_context(via: str, remote_addr: str | None, now: dt.datetime) -> dict[str, Any]:
    """The circumstances recorded with a finding."""
    return {"at": now.isoformat(), "via": via, "remote_addr": remote_addr}


def duplicates(
    session: Session, device_id: str, platform: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Other registered, not revoked devices claiming this hardware (same hardware UUID, or
    same serial on the same OS)."""
    hw_uuid = _hardware_id(platform.get("hardware_uuid"))
    serial = _hardware_id(platform.get("serial"))
    same: list[Any] = []
    if hw_uuid is not None:
        same.append(Device.hardware_uuid == hw_uuid)
    if serial is not None:
        same.append(and_(Device.serial == serial, Device.platform == platform.get("os")))
    if not same:
        return []
    rows = session.scalars(
        select(Device)
        .where(or_(*same), Device.id != device_id, Device.state != "revoked")
        .order_by(Device.first_seen)
        .limit(20)
    )
    return [
        {
            "device_id": d.id,
            "state": d.state,
            "user_id": d.user_id,
            "hardware_uuid": d.hardware_uuid,
            "serial": d.serial,
            "sign_key_fingerprint": fingerprint(d.sign_key),
        }
        for d in rows
    ]


def registration_state(
    session: Session, settings: Settings, verified: VerifiedResponse, state: str
) -> tuple[str, Finding | None]:
    """The state a new device starts in, given the registration policy chose ``state``.

    Hardware another device already claims gives a ``duplicate_hardware`` finding
    (to record with :func:`record_registration` once the device exists), and under
    the ``suspend`` policy the new device starts ``suspended``.
    """
    others = duplicates(session, verified.device_id, verified.platform)
    if not others:
        return state, None
    finding = Finding("duplicate_hardware", {"others": others})
    return ("suspended" if settings.clone_policy == "suspend" else state), finding


def record_registration(
    session: Session, device_id: str, finding: Finding | None, remote_addr: str | None
) -> None:
    """Write the flag of :func:`registration_state`'s finding, if any (device added already)."""
    if finding is None:
        return
    session.flush()
    device = session.get(Device, device_id)
    if device is None:  # pragma: no cover - the caller just added it
        raise LookupError(device_id)
    add_flag(session, device, finding, context=answer_context("register", remote_addr, utcnow()))
    if device.state == "suspended":
        device.state_reason = "suspended pending review: duplicate_hardware"


# -- admin decisions --------------------------------------------------------------------------


def on_decision(session: Session, device: Device, action: str, *, reason: str, actor: str) -> int:
    """An admin decided about ``device``: resolve its open flags; returns how many.

    Approving or re-trusting accepts what was flagged: hardware identifiers seen in an
    open ``hardware_mismatch`` flag become the registered ones (a replaced board, a
    migrated VM), and the staleness clock restarts (``last_seen`` becomes now).
    """
    flags = open_flags(session, device.id)
    now = utcnow()
    if action in ("approve", "retrust"):
        for flag in flags:
            if flag.kind == "hardware_mismatch":
                seen = (flag.evidence.get("last") or flag.evidence).get("seen") or {}
                device.hardware_uuid = seen.get("hardware_uuid") or device.hardware_uuid
                device.serial = seen.get("serial") or device.serial
        device.last_seen = now
        # The instances seen so far are accepted as they are: start remembering afresh.
        device.agent_instance_prev = None
    resolve(session, flags, resolution=f"{action}: {reason}", actor=actor)
    return len(flags)


def resolve(session: Session, flags: list[DeviceFlag], *, resolution: str, actor: str) -> None:
    """Mark ``flags`` resolved (audited with the device's decision by the caller)."""
    now = utcnow()
    for flag in flags:
        flag.resolved_at = now
        flag.resolved_by = actor
        flag.resolution = resolution


def mark_reviewed(session: Session, device_id: str, *, reason: str, actor: str) -> list[int]:
    """Resolve a device's open flags without changing its state (policy ``flag``), audited."""
    if not reason.strip():
        raise Invalid("reason_required", "Every device decision needs a reason.")
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("device_not_found", f"no device {device_id!r}")
    if device.state == "suspended":
        raise Conflict("bad_transition", "a suspended device is approved, denied or revoked")
    flags = open_flags(session, device_id)
    if not flags:
        raise Conflict("no_open_flags", "this device has no flags waiting for review")
    resolve(session, flags, resolution=f"reviewed: {reason}", actor=actor)
    audit.record(
        session,
        "device.flags_reviewed",
        "ok",
        actor=actor,
        user_id=device.user_id,
        device_id=device.id,
        details={"flag_ids": [f.id for f in flags], "reason": reason},
    )
    return [f.id for f in flags]


def flag_json(flag: DeviceFlag) -> dict[str, Any]:
    """A flag as the API shows it."""
    return {
        "id": flag.id,
        "kind": flag.kind,
        "evidence": flag.evidence,
        "created_at": flag.created_at.isoformat(),
        "resolved_at": flag.resolved_at.isoformat() if flag.resolved_at else None,
        "resolved_by": flag.resolved_by,
        "resolution": flag.resolution,
    }


# -- staleness sweep --------------------------------------------------------------------------

STALE_STATES = ("trusted", "pending")
SWEEP_BATCH = 500


def sweep_stale(
    db: Database, settings: Settings, *, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Flag (and by policy deny) every trusted or pending device not seen for ``stale_after``.

    Devices with an open ``stale`` flag that the policy left alone are skipped.
    Returns what was done, one entry per device.
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=settings.stale_after)
    done: list[dict[str, Any]] = []
    flagged = select(DeviceFlag.device_id).where(
        DeviceFlag.kind == "stale", DeviceFlag.resolved_at.is_(None)
    )
    while True:
        with db.session() as session:
            devices = list(
                session.scalars(
                    select(Device)
                    .where(
                        Device.last_seen < cutoff,
                        Device.state.in_(STALE_STATES),
                        Device.id.not_in(flagged),
                    )
                    .order_by(Device.id)
                    .limit(SWEEP_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            for device in devices:
                finding = stale_finding(device.last_seen, now, settings.stale_after)
                if finding is None:  # pragma: no cover - the query selected stale ones
                    continue
                before = device.state
                apply(
                    session,
                    device,
                    [finding],
                    settings,
                    context={"at": now.isoformat(), "via": "sweep"},
                )
                done.append(
                    {
                        "device_id": device.id,
                        "last_seen": device.last_seen.isoformat(),
                        "from": before,
                        "to": device.state,
                    }
                )
        if len(devices) < SWEEP_BATCH:
            return done
