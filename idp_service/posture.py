"""Posture on the service: evaluate checks at ingest and again at sign-in, and decide.

The server decides trust. Agents send facts (``idp_service/report.py``); this
module evaluates the security team's checks (``posture_checks``) over them --
at ingest, to keep results and their history for the console, and at sign-in,
on the latest facts and the clock of that moment, so that facts older than a
check's ``max_fact_age`` count as STALE rather than as an old PASS.

Which checks apply: the files in ``DEVICETRUST_CHECKS_DIR`` (reloaded when they
change, without a restart) plus the built-in catalog entries named by
``DEVICETRUST_BUILTIN_CHECKS`` (``all``, ``none`` or a comma-separated list).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import markdown
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from idp_service import audit
from idp_service.config import Settings
from idp_service.storage.db import upsert
from idp_service.storage.models import utcnow
from idp_service.storage.posture_tables import (
    CheckResultHistory,
    CheckResultRow,
    DeviceFacts,
    ExemptionRow,
)
from posture_checks.enforcement import Action, Decision, decide, overall
from posture_checks.evaluator import CheckResult, Status, evaluate_all, prepare_facts
from posture_checks.exemptions import Exemption, find_exemption
from posture_checks.loader import BUILTIN_DIR, CatalogLoader
from posture_checks.model import Check
from posture_checks.remediation import render_remediation

FAILING = {Status.FAIL, Status.STALE}


def _failing(check: Check, status: Status) -> bool:
    return status in FAILING or (check.fail_closed and status in (Status.UNKNOWN, Status.ERROR))


@dataclass(frozen=True)
class CheckOutcome:
    """One check's result at sign-in, what it means for the login, and how to fix it."""

    check: Check
    result: CheckResult
    decision: Decision
    remediation_html: str


@dataclass(frozen=True)
class LoginPosture:
    """The posture verdict for one sign-in."""

    action: Action
    outcomes: list[CheckOutcome] = field(default_factory=list)
    facts_received_at: dt.datetime | None = None

    @property
    def blocking(self) -> list[CheckOutcome]:
        """Outcomes that deny the sign-in."""
        return [o for o in self.outcomes if o.decision.action is Action.BLOCK]

    @property
    def warnings(self) -> list[CheckOutcome]:
        """Outcomes the user is told about but may continue past."""
        return [o for o in self.outcomes if o.decision.action is Action.WARN]

    def summary(self) -> dict[str, Any]:
        """A compact summary for SAML attributes and audit details."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.result.status.value] = counts.get(o.result.status.value, 0) + 1
        return {
            "action": self.action.label,
            "results": counts,
            "blocking": [o.check.id for o in self.blocking],
            "warnings": [o.check.id for o in self.warnings],
        }


class Posture:
    """The loaded catalog plus the evaluation and storage logic."""

    def __init__(self, settings: Settings) -> None:
        self.builtin = settings.builtin_checks
        self.loader = CatalogLoader(settings.checks_dirs, include_builtin=self.builtin != ())

    def checks(self) -> list[Check]:
        """The checks in force now (reloaded from disk when files change)."""
        catalog = self.loader.current()
        if self.builtin == ("all",):
            return list(catalog.checks)
        builtin = str(BUILTIN_DIR)
        return [
            c for c in catalog.checks if not c.source.startswith(builtin) or c.id in self.builtin
        ]

    # -- ingest -----------------------------------------------------------------------------
    def ingest(
        self, session: Session, device_id: str, user_id: str, facts: dict[str, Any]
    ) -> dict[str, Any]:
        """Evaluate fresh facts and store each check's result (history on change)."""
        checks = self.checks()
        if not checks:
            return {}
        now = utcnow()
        # Age is judged from when the service received the facts, not from the device's claim.
        results = evaluate_all(checks, facts, now=now, observed_at=now)
        previous = {
            row.check_id: row
            for row in session.scalars(
                select(CheckResultRow).where(CheckResultRow.device_id == device_id)
            )
        }
        changed = []
        for check, result in zip(checks, results, strict=True):
            before = previous.get(check.id)
            failing = _failing(check, result.status)
            first_failed = None
            if failing:
                was_failing = before is not None and before.first_failed_at is not None
                first_failed = before.first_failed_at if was_failing else now
            upsert(
                session,
                CheckResultRow,
                {
                    "device_id": device_id,
                    "check_id": check.id,
                    "status": result.status.value,
                    "reason": result.reason[:2000],
                    "evaluated_at": now,
                    "first_failed_at": first_failed,
                },
                ["device_id", "check_id"],
            )
            if before is None or before.status != result.status.value:
                changed.append((check.id, before.status if before else None, result.status.value))
                session.add(
                    CheckResultHistory(
                        device_id=device_id,
                        check_id=check.id,
                        status=result.status.value,
                        reason=result.reason[:2000],
                        at=now,
                    )
                )
        if changed:
            audit.record(
                session,
                "posture.change",
                "ok",
                user_id=user_id,
                device_id=device_id,
                details={"changes": [{"check": c, "from": a, "to": b} for c, a, b in changed]},
            )
        return {}

    # -- sign-in ----------------------------------------------------------------------------
    def for_login(
        self,
        session: Session,
        device_id: str,
        user_id: str,
        user_name: str,
        groups: list[str],
    ) -> LoginPosture:
        """Evaluate the latest facts now and decide what the sign-in may do."""
        checks = self.checks()
        if not checks:
            return LoginPosture(Action.ALLOW)
        now = utcnow()
        latest = session.get(DeviceFacts, device_id)
        facts = latest.facts if latest is not None else None
        # Age is judged from when the service received the facts, not the device's claim.
        prepared = prepare_facts(facts, latest.received_at if latest is not None else None)
        results = evaluate_all(checks, prepared, now=now)
        first_failed = {
            row.check_id: row.first_failed_at
            for row in session.scalars(
                select(CheckResultRow).where(CheckResultRow.device_id == device_id)
            )
        }
        exemptions = self._exemptions(session, device_id, user_name, groups, now)
        outcomes = []
        for check, result in zip(checks, results, strict=True):
            exemption = find_exemption(
                exemptions, check.id, device_id=device_id, user=user_name, groups=groups, now=now
            )
            decision = decide(
                check,
                result,
                first_failed_at=first_failed.get(check.id),
                now=now,
                exemption=exemption,
            )
            html = ""
            if decision.action is not Action.ALLOW:
                html = markdown.markdown(render_remediation(check, facts or {}))
            outcomes.append(CheckOutcome(check, result, decision, html))
        return LoginPosture(
            overall(o.decision for o in outcomes),
            outcomes,
            latest.received_at if latest is not None else None,
        )

    @staticmethod
    def _exemptions(
        session: Session, device_id: str, user_name: str, groups: list[str], now: dt.datetime
    ) -> list[Exemption]:
        rows = session.scalars(
            select(ExemptionRow).where(
                ExemptionRow.expires_at > now,
                or_(
                    (ExemptionRow.scope == "device") & (ExemptionRow.subject == device_id),
                    (ExemptionRow.scope == "user") & (ExemptionRow.subject == user_name),
                    (ExemptionRow.scope == "group") & (ExemptionRow.subject.in_(groups or [""])),
                ),
            )
        )
        return [
            Exemption(r.check_id, r.scope, r.subject, r.expires_at, r.reason, r.created_by)
            for r in rows
        ]


def summary_for_device(session: Session, device_id: str) -> dict[str, str]:
    """``{"posture": ...}``: ``compliant``, ``failing:<ids>``, or ``unknown`` before any report.

    Built from the results stored at the device's last report.
    """
    rows = session.execute(
        select(CheckResultRow.check_id, CheckResultRow.status).where(
            CheckResultRow.device_id == device_id
        )
    ).all()
    if not rows:
        return {"posture": "unknown"}
    failing = sorted(r.check_id for r in rows if r.status in {s.value for s in FAILING})
    return {"posture": "failing:" + ",".join(failing) if failing else "compliant"}


def init(service: Any) -> Posture:
    """Load the catalog once per process and hook evaluation into report ingest."""
    posture = Posture(service.settings)
    service.extras["posture"] = posture
    service.extras["posture_ingest"] = posture.ingest
    return posture


def add_exemption(
    session: Session,
    *,
    check_id: str,
    scope: str,
    subject: str,
    expires_at: dt.datetime,
    reason: str,
    actor: str,
) -> ExemptionRow:
    """Waive ``check_id`` ("*" for every check) for a device, user or group until a time."""
    from idp_service.errors import ApiError
    from posture_checks.exemptions import ExemptionError, parse_exemption

    try:
        parsed = parse_exemption(
            {
                "check_id": check_id,
                "scope": scope,
                "subject": subject,
                "expires_at": expires_at,
                "reason": reason,
            }
        )
    except ExemptionError as exc:
        raise ApiError("bad_exemption", str(exc)) from None
    if parsed.expires_at <= utcnow():
        raise ApiError("bad_exemption", "expires_at must be in the future")
    row = ExemptionRow(
        check_id=parsed.check_id,
        scope=parsed.scope,
        subject=parsed.subject,
        reason=parsed.reason,
        expires_at=parsed.expires_at,
        created_by=actor,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        "exemption.add",
        "ok",
        actor=actor,
        details={**parsed.to_dict(), "id": row.id},
    )
    return row


def exemption_json(row: ExemptionRow) -> dict[str, Any]:
    """An exemption as the CLI and API show it."""
    return {
        "id": row.id,
        "check_id": row.check_id,
        "scope": row.scope,
        "subject": row.subject,
        "reason": row.reason,
        "expires_at": row.expires_at.isoformat(),
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


def remove_exemption(session: Session, exemption_id: int, *, reason: str, actor: str) -> None:
    """End an exemption now, audited."""
    from idp_service.errors import ApiError

    if not reason.strip():
        raise ApiError("reason_required", "Removing an exemption needs a reason.")
    row = session.get(ExemptionRow, exemption_id)
    if row is None:
        raise ApiError("exemption_not_found", f"no exemption {exemption_id}", 404)
    session.delete(row)
    audit.record(
        session,
        "exemption.remove",
        "ok",
        actor=actor,
        details={"id": exemption_id, "check_id": row.check_id, "reason": reason},
    )
