"""Posture on the service: evaluate checks at ingest and again at sign-in, and decide.

The server decides trust. Agents send facts (``idp_service/devices/report.py``); this
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
import nh3
from sqlalchemy import bindparam, insert, or_, select
from sqlalchemy.orm import Session

from idp_service.platform import audit, metrics
from idp_service.platform.config import Settings
from idp_service.platform.db import Upsert
from idp_service.platform.driver import Statement
from idp_service.platform.models import Device, table_of, utcnow
from idp_service.posture.tables import CheckResultHistory, CheckResultRow, DeviceFacts, ExemptionRow
from posture_checks.enforcement import Action, Decision, decide, overall
from posture_checks.evaluator import FAILING, CheckResult, Status, evaluate_all, prepare_facts
from posture_checks.exemptions import Exemption, find_exemption
from posture_checks.incremental import (
    FactDigests,
    catalog_fingerprint,
    combined_key,
    fingerprint,
    input_key,
)
from posture_checks.loader import BUILTIN_DIR, CatalogLoader
from posture_checks.model import Check
from posture_checks.remediation import render_remediation

# What rendered remediation may contain: Markdown's own output, links only to
# http(s) and mailto. The HTML is sanitised after rendering, whatever produced
# it (the check's text, a placeholder's value, raw HTML in the Markdown).
_REMEDIATION_HTML = nh3.Cleaner(
    tags={"p", "a", "em", "strong", "code", "pre", "kbd", "ul", "ol", "li", "blockquote"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "hr", "br"},
    attributes={"a": {"href", "title"}},
    url_schemes={"http", "https", "mailto"},
    url_relative="deny",
    link_rel="noopener noreferrer",
)


def remediation_html(text: str) -> str:
    """Remediation Markdown as HTML safe to put on a page: http, https and mailto links only."""
    return _REMEDIATION_HTML.clean(markdown.markdown(text))


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
        self._fingerprints: dict[str, tuple[Check, str]] = {}
        self._catalog_key: tuple[list[Check], str] | None = None

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
    def _fingerprint(self, check: Check) -> str:
        cached = self._fingerprints.get(check.id)
        if cached is None or cached[0] is not check:
            cached = (check, fingerprint(check))
            self._fingerprints[check.id] = cached
        return cached[1]

    def _catalog_fingerprint(self, checks: list[Check]) -> str:
        cached = self._catalog_key
        if (
            cached is None
            or len(cached[0]) != len(checks)
            or any(a is not b for a, b in zip(cached[0], checks, strict=True))
        ):
            cached = (checks, catalog_fingerprint([self._fingerprint(c) for c in checks]))
            self._catalog_key = cached
        return cached[1]

    def ingest(
        self,
        session: Session,
        device_id: str,
        user_id: str,
        facts: dict[str, Any],
        *,
        digests: FactDigests | None = None,
        previous: str | None = None,
    ) -> str | None:
        """Evaluate fresh facts and store each check's result (history on change).

        Only the checks whose inputs changed since their stored result are
        evaluated (``posture_checks.incremental``); ``previous`` is the combined
        key returned by the device's last ingest, and when it is unchanged
        nothing is read or written here at all. Returns the new combined key
        (None when no check is in force).
        """
        checks = self.checks()
        if not checks:
            return None
        digests = digests or FactDigests(facts)
        combined = combined_key(self._catalog_fingerprint(checks), checks, digests)
        if combined == previous:
            return combined
        keys = {c.id: input_key(self._fingerprint(c), c.roots, digests) for c in checks}
        conn = session.connection()
        stored = {row.check_id: row for row in conn.execute(_RESULTS, {"device_id": device_id})}
        due = [c for c in checks if c.id not in stored or stored[c.id].inputs != keys[c.id]]
        if not due:
            return combined
        now = utcnow()
        # Age is judged from when the service received the facts, not from the device's claim.
        prepared = prepare_facts(facts, now, roots={root for c in due for root in c.roots})
        results = evaluate_all(due, prepared, now=now)
        metrics.check_results(r.status.value for r in results)
        rows, history, changed = [], [], []
        for check, result in zip(due, results, strict=True):
            before = stored.get(check.id)
            first_failed = None
            if _failing(check, result.status):
                if before is not None and before.first_failed_at is not None:
                    first_failed = before.first_failed_at  # still failing since then
                else:
                    first_failed = now
            reason = result.reason[:2000]
            rows.append(
                {
                    "device_id": device_id,
                    "check_id": check.id,
                    "status": result.status.value,
                    "reason": reason,
                    "evaluated_at": now,
                    "first_failed_at": first_failed,
                    "inputs": keys[check.id],
                }
            )
            if before is None or before.status != result.status.value:
                changed.append((check.id, before.status if before else None, result.status.value))
                history.append(
                    {
                        "device_id": device_id,
                        "check_id": check.id,
                        "status": result.status.value,
                        "reason": reason,
                        "at": now,
                    }
                )
        conn.execute(_RESULTS_UPSERT.statement(conn.dialect.name), rows)
        if history:
            conn.execute(_HISTORY_INSERT, history)
            audit.record(
                session,
                "posture.change",
                "ok",
                user_id=user_id,
                device_id=device_id,
                details={"changes": [{"check": c, "from": a, "to": b} for c, a, b in changed]},
            )
        return combined

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
        # Age is judged from when the service received the facts, not the device's claim,
        # or from when a v2 report last confirmed them unchanged (which writes no facts).
        received = latest.received_at if latest is not None else None
        if received is not None:
            confirmed = session.scalar(
                select(Device.facts_confirmed_at).where(Device.id == device_id)
            )
            if confirmed is not None and confirmed > received:
                received = confirmed
        prepared = prepare_facts(facts, received)
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
                html = remediation_html(render_remediation(check, facts or {}))
            outcomes.append(CheckOutcome(check, result, decision, html))
        return LoginPosture(overall(o.decision for o in outcomes), outcomes, received)

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


_results = table_of(CheckResultRow)
_RESULTS = select(
    _results.c.check_id, _results.c.status, _results.c.inputs, _results.c.first_failed_at
).where(_results.c.device_id == bindparam("device_id"))
_HISTORY_INSERT = insert(table_of(CheckResultHistory))
# A report rewrites each check's row: INSERT ... ON CONFLICT (device_id, check_id) DO UPDATE.
_RESULTS_UPSERT = Upsert(
    _results,
    ["device_id", "check_id"],
    ("status", "reason", "evaluated_at", "first_failed_at", "inputs"),
)


_RESULTS_OF_DEVICE = Statement(
    "SELECT check_id, status FROM check_results WHERE device_id = :device_id"
)
_FAILING_VALUES = frozenset(s.value for s in FAILING)


def summary_for_device(session: Session, device_id: str) -> dict[str, str]:
    """``{"posture": ...}``: ``compliant``, ``failing:<ids>``, or ``unknown`` before any report.

    Built from the results stored at the device's last report.
    """
    rows = _RESULTS_OF_DEVICE.rows(session, device_id=device_id)  # every sign-in reads this
    if not rows:
        return {"posture": "unknown"}
    failing = sorted(check_id for check_id, status in rows if status in _FAILING_VALUES)
    return {"posture": "failing:" + ",".join(failing) if failing else "compliant"}


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
    from idp_service.platform.errors import Invalid
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
        raise Invalid("bad_exemption", str(exc)) from None
    if parsed.expires_at <= utcnow():
        raise Invalid("bad_exemption", "expires_at must be in the future")
    if len(parsed.check_id) > 128 or len(parsed.subject) > 256:
        raise Invalid("bad_exemption", "check_id is at most 128 characters, subject 256")
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
    from idp_service.platform.errors import Invalid

    if not reason.strip():
        raise Invalid("reason_required", "Removing an exemption needs a reason.")
    end_exemption(session, exemption_id, reason=reason, actor=actor)


def end_exemption(session: Session, exemption_id: int, *, reason: str, actor: str) -> None:
    """Delete an exemption, audited (``exemption.remove``); 404 ``exemption_not_found``.

    The caller has checked ``reason`` (:func:`remove_exemption` refuses a blank one; the
    admin API's schema asks for a non-empty string).
    """
    from idp_service.platform.errors import NotFound

    row = session.get(ExemptionRow, exemption_id)
    if row is None:
        raise NotFound("exemption_not_found", f"no exemption {exemption_id}")
    session.delete(row)
    audit.record(
        session,
        "exemption.remove",
        "ok",
        actor=actor,
        details={"id": exemption_id, "check_id": row.check_id, "reason": reason},
    )
