"""From a check result to what login does: allow, warn or block. Pure functions, no I/O.

=================  ===========  =======  ==============================  =======
result             report_only  notify   warn_then_block                 block
=================  ===========  =======  ==============================  =======
PASS/INAPPLICABLE  allow        allow    allow                           allow
FAIL, STALE        allow        warn     warn; block once past deadline  block
UNKNOWN, ERROR     allow        warn     warn                            warn
=================  ===========  =======  ==============================  =======

* The deadline is ``first_failed_at + deadline_days``; the caller tracks when
  the check started failing for the device (``None`` means it fails now for
  the first time).
* STALE counts as a failure: facts too old cannot show compliance, and the
  login page's "recheck now" refreshes them.
* A check with ``fail_closed: true`` treats UNKNOWN and ERROR as FAIL.
* An active exemption turns any decision into allow (the reason is kept).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from posture_checks.evaluator import CheckResult, Status
from posture_checks.exemptions import Exemption
from posture_checks.model import Check


class Action(enum.IntEnum):
    """What happens at login; larger is stricter."""

    ALLOW = 0
    WARN = 1
    BLOCK = 2

    @property
    def label(self) -> str:
        """``allow``, ``warn`` or ``block``."""
        return self.name.lower()


@dataclass(frozen=True)
class Decision:
    """The action for one check, why, and (for warn_then_block) the deadline."""

    check_id: str
    action: Action
    reason: str
    deadline: dt.datetime | None = None
    exemption: Exemption | None = None


def decide(
    check: Check,
    result: CheckResult,
    *,
    first_failed_at: dt.datetime | None,
    now: dt.datetime,
    exemption: Exemption | None = None,
) -> Decision:
    """The login action for ``result`` of ``check``."""
    mode = check.enforcement.mode
    status = result.status
    if status in (Status.PASS, Status.INAPPLICABLE):
        return Decision(check.id, Action.ALLOW, status.value.lower())
    failing = status in (Status.FAIL, Status.STALE) or (
        check.fail_closed and status in (Status.UNKNOWN, Status.ERROR)
    )
    if exemption is not None and exemption.active(now):
        until = exemption.expires_at.isoformat()
        return Decision(
            check.id, Action.ALLOW, f"exempt until {until}: {exemption.reason}", None, exemption
        )
    if mode == "report_only":
        return Decision(check.id, Action.ALLOW, f"{status.value} (report only)")
    if not failing:
        return Decision(check.id, Action.WARN, f"{status.value}: {result.reason}")
    if mode == "notify":
        return Decision(check.id, Action.WARN, f"{status.value} (notify)")
    if mode == "block":
        return Decision(check.id, Action.BLOCK, f"{status.value} (block)")
    days = check.enforcement.deadline_days or 0
    deadline = (first_failed_at or now) + dt.timedelta(days=days)
    if now >= deadline:
        return Decision(check.id, Action.BLOCK, f"{status.value} past its deadline", deadline)
    return Decision(check.id, Action.WARN, f"{status.value}; blocks after the deadline", deadline)


def overall(decisions: Iterable[Decision]) -> Action:
    """The strictest action among ``decisions`` (allow when there are none)."""
    return max((d.action for d in decisions), default=Action.ALLOW)
