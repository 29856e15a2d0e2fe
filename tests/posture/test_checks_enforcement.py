"""Enforcement decisions, exemptions and remediation rendering (pure logic)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from posture_checks.enforcement import Action, decide, overall
from posture_checks.evaluator import CheckResult, Status
from posture_checks.exemptions import ExemptionError, find_exemption, parse_exemption
from posture_checks.model import parse_check
from posture_checks.remediation import escape_markdown, render_remediation

NOW = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def check(mode="block", deadline=None, fail_closed=False, remediation="Fix it."):
    enforcement = {"mode": mode} if deadline is None else {"mode": mode, "deadline_days": deadline}
    return parse_check(
        json.dumps(
            {
                "id": "c",
                "title": "T",
                "description": "D",
                "platforms": ["linux", "macos"],
                "severity": "high",
                "expression": "firewall.enabled",
                "enforcement": enforcement,
                "max_fact_age": "1h",
                "remediation": remediation,
                "fail_closed": fail_closed,
            }
        )
    )


def result(status):
    return CheckResult("c", status, "because", NOW)


TABLE = {
    # result: (report_only, notify, block)
    Status.PASS: (Action.ALLOW, Action.ALLOW, Action.ALLOW),
    Status.INAPPLICABLE: (Action.ALLOW, Action.ALLOW, Action.ALLOW),
    Status.FAIL: (Action.ALLOW, Action.WARN, Action.BLOCK),
    Status.STALE: (Action.ALLOW, Action.WARN, Action.BLOCK),
    Status.UNKNOWN: (Action.ALLOW, Action.WARN, Action.WARN),
    Status.ERROR: (Action.ALLOW, Action.WARN, Action.WARN),
}


@pytest.mark.parametrize("status", list(TABLE))
def test_decision_table(status):
    got = tuple(
        decide(check(mode), result(status), first_failed_at=None, now=NOW).action
        for mode in ("report_only", "notify", "block")
    )
    assert got == TABLE[status]


def test_warn_then_block_blocks_only_past_its_deadline():
    c = check("warn_then_block", deadline=7)
    first = NOW - dt.timedelta(days=3)
    early = decide(c, result(Status.FAIL), first_failed_at=first, now=NOW)
    assert early.action is Action.WARN
    assert early.deadline == first + dt.timedelta(days=7)
    just_before = decide(
        c, result(Status.FAIL), first_failed_at=NOW - dt.timedelta(days=7, seconds=-1), now=NOW
    )
    at_deadline = decide(
        c, result(Status.FAIL), first_failed_at=NOW - dt.timedelta(days=7), now=NOW
    )
    assert (just_before.action, at_deadline.action) == (Action.WARN, Action.BLOCK)
    # Failing for the first time right now starts the clock now.
    assert decide(
        c, result(Status.FAIL), first_failed_at=None, now=NOW
    ).deadline == NOW + dt.timedelta(days=7)
    # Unknown never blocks unless the check fails closed.
    late = NOW - dt.timedelta(days=30)
    assert decide(c, result(Status.UNKNOWN), first_failed_at=late, now=NOW).action is Action.WARN


def test_fail_closed_turns_unknown_and_error_into_failures():
    c = check("block", fail_closed=True)
    for status in (Status.UNKNOWN, Status.ERROR):
        assert decide(c, result(status), first_failed_at=None, now=NOW).action is Action.BLOCK


def test_exemption_allows_until_it_expires():
    exemption = parse_exemption(
        {
            "check_id": "c",
            "scope": "user",
            "subject": "alice",
            "expires_at": "2025-03-02T00:00:00Z",
            "reason": "new laptop on order",
        }
    )
    decision = decide(
        check(), result(Status.FAIL), first_failed_at=None, now=NOW, exemption=exemption
    )
    assert decision.action is Action.ALLOW
    assert "new laptop on order" in decision.reason
    later = NOW + dt.timedelta(days=2)
    expired = decide(
        check(), result(Status.FAIL), first_failed_at=None, now=later, exemption=exemption
    )
    assert expired.action is Action.BLOCK


def test_find_exemption_by_scope_and_expiry():
    records = [
        {
            "check_id": "c",
            "scope": "device",
            "subject": "dev-1",
            "expires_at": "2025-04-01T00:00:00Z",
            "reason": "r1",
        },
        {
            "check_id": "*",
            "scope": "group",
            "subject": "lab",
            "expires_at": "2025-05-01T00:00:00Z",
            "reason": "r2",
        },
        {
            "check_id": "c",
            "scope": "user",
            "subject": "bob",
            "expires_at": "2025-02-01T00:00:00Z",
            "reason": "old",
        },
        {
            "check_id": "other",
            "scope": "user",
            "subject": "alice",
            "expires_at": "2026-01-01T00:00:00Z",
            "reason": "r3",
        },
    ]
    exemptions = [parse_exemption(r) for r in records]
    assert find_exemption(exemptions, "c", now=NOW, device_id="dev-1").reason == "r1"
    # Both match: the one lasting longest wins.
    assert (
        find_exemption(exemptions, "c", now=NOW, device_id="dev-1", groups=["lab"]).reason == "r2"
    )
    assert find_exemption(exemptions, "c", now=NOW, user="bob") is None  # expired
    assert find_exemption(exemptions, "c", now=NOW, user="alice") is None  # other check
    assert find_exemption(exemptions, "other", now=NOW, user="alice").reason == "r3"
    assert find_exemption(exemptions, "c", now=NOW, device_id="dev-2", groups=["staff"]) is None


@pytest.mark.parametrize(
    "record",
    [
        {},
        {
            "check_id": "c",
            "scope": "planet",
            "subject": "x",
            "expires_at": "2025-01-01T00:00:00Z",
            "reason": "r",
        },
        {
            "check_id": "c",
            "scope": "user",
            "subject": "",
            "expires_at": "2025-01-01T00:00:00Z",
            "reason": "r",
        },
        {
            "check_id": "c",
            "scope": "user",
            "subject": "a",
            "expires_at": "2025-01-01T00:00:00",
            "reason": "r",
        },
        {"check_id": "c", "scope": "user", "subject": "a", "expires_at": "soon", "reason": "r"},
        {
            "check_id": "c",
            "scope": "user",
            "subject": "a",
            "expires_at": "2025-01-01T00:00:00Z",
            "reason": " ",
        },
    ],
)
def test_malformed_exemptions_are_refused(record):
    with pytest.raises(ExemptionError):
        parse_exemption(record)


def test_overall_is_the_strictest():
    decisions = [
        decide(check("notify"), result(Status.FAIL), first_failed_at=None, now=NOW),
        decide(check("block"), result(Status.PASS), first_failed_at=None, now=NOW),
    ]
    assert overall(decisions) is Action.WARN
    assert overall([]) is Action.ALLOW


def test_remediation_fills_placeholders_per_platform_and_escapes_device_values():
    c = parse_check(
        json.dumps(
            {
                "id": "c",
                "title": "T",
                "description": "D",
                "platforms": ["linux", "macos"],
                "severity": "high",
                "expression": "firewall.enabled",
                "enforcement": "block",
                "max_fact_age": "1h",
                "remediation": {
                    "default": "Host {{ hostname }} runs {{ os.version }}; limit {{ vars.limit }}.",
                    "macos": "Mac {{ hardware.serial }}.",
                },
                "variables": {"limit": 900},
            }
        )
    )
    hostile = "[x](javascript:alert(1))<script>"
    text = render_remediation(c, {"hostname": hostile, "os": {"family": "linux"}})
    assert "<script>" not in text and "](" not in text
    assert text.startswith("Host \\[x\\]\\(javascript:alert\\(1\\)\\)&lt;script&gt;")
    assert "runs unknown" in text  # no such fact on this device
    assert text.endswith("limit 900.")
    assert (
        render_remediation(c, {"os": {"family": "macos"}, "hardware": {"serial": "C02"}})
        == "Mac C02."
    )
    assert escape_markdown("a*b_c") == "a\\*b\\_c"
