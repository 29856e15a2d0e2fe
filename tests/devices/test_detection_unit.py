"""The pure decisions of clone, duplicate and staleness detection.

(idp_service/devices/detection.py)
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idp_service.devices import detection
from idp_service.platform.config import Settings, parse_duration

T0 = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)


def test_hardware_mismatch_needs_a_known_value_on_both_sides():
    seen = {"hardware_uuid": "hw-2", "serial": "SN-1"}
    found = detection.hardware_finding("hw-1", "SN-1", seen)
    assert found is not None and found.kind == "hardware_mismatch"
    assert found.evidence == {
        "stored": {"hardware_uuid": "hw-1", "serial": "SN-1"},
        "seen": {"hardware_uuid": "hw-2", "serial": "SN-1"},
        "differs": ["hardware_uuid"],
    }
    assert (
        detection.hardware_finding("hw-1", "SN-1", {"hardware_uuid": "hw-1", "serial": "SN-1"})
        is None
    )
    # Unknown ("" from the agent, NULL in the registry) never counts as different.
    assert detection.hardware_finding("hw-1", "SN-1", {"hardware_uuid": "", "serial": ""}) is None
    assert detection.hardware_finding(None, "", {"hardware_uuid": "hw-9", "serial": "X"}) is None
    assert detection.hardware_finding("hw-1", "SN-1", {}) is None
    both = detection.hardware_finding("a", "b", {"hardware_uuid": "c", "serial": "d"})
    assert both is not None and both.evidence["differs"] == ["hardware_uuid", "serial"]


@pytest.mark.parametrize(
    "placeholder",
    [
        "To be filled by O.E.M.",
        "Default string",
        "System Serial Number",
        " Not Specified ",
        "0",
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "03000200-0400-0500-0006-000700080009",
    ],
)
def test_firmware_placeholders_count_as_unknown(placeholder):
    # Thousands of machines share these: matching on them would make false clones.
    assert (
        detection.hardware_finding(
            placeholder, placeholder, {"hardware_uuid": "hw-real", "serial": "SN-real"}
        )
        is None
    )
    assert (
        detection.hardware_finding(
            "hw-real", "SN-real", {"hardware_uuid": placeholder, "serial": placeholder}
        )
        is None
    )
    assert detection._hardware_id(placeholder) is None
    assert detection._hardware_id("4C4C4544-0042-3510-8052-B4C04F564E32") is not None
    assert detection._hardware_id("AAAAAAAA") is not None  # only the all-0/all-F UUIDs


def test_instances_alternating_within_the_window_are_two_agents():
    window = 3600
    # A answered, then B took over at T0: A again within the hour is two agents.
    found = detection.alternation_finding("B", "A", T0, "A", T0 + dt.timedelta(minutes=5), window)
    assert found is not None and found.kind == "concurrent_agents"
    assert found.evidence["instances"] == ["A", "B", "A"]
    assert found.evidence["window_seconds"] == 3600
    # ... but not after the window, not B itself, not a third instance (a restart), not unknown.
    late = T0 + dt.timedelta(hours=2)
    assert detection.alternation_finding("B", "A", T0, "A", late, window) is None
    assert detection.alternation_finding("B", "A", T0, "B", T0, window) is None
    assert detection.alternation_finding("B", "A", T0, "C", T0, window) is None
    assert detection.alternation_finding("B", "A", T0, None, T0, window) is None
    assert detection.alternation_finding("A", None, None, "B", T0, window) is None


def test_a_restart_sequence_never_alternates():
    current = prev = at = None
    now = T0
    for seen in ["A", "A", "B", "B", "C", "C", "C"]:
        now += dt.timedelta(seconds=10)
        assert detection.alternation_finding(current, prev, at, seen, now, 3600) is None
        current, prev, at = detection.next_instances(current, prev, at, seen, now)
    assert (current, prev) == ("C", "B")


@given(st.lists(st.sampled_from(["A", "B", None]), min_size=1, max_size=30))
def test_alternation_is_found_exactly_when_an_instance_returns(sequence):
    current = prev = at = None
    replaced: set[str] = set()
    now = T0
    for seen in sequence:
        now += dt.timedelta(seconds=1)
        found = detection.alternation_finding(current, prev, at, seen, now, 3600)
        # The instance that was just replaced came back: exactly A, B, A.
        assert (found is not None) == (seen is not None and seen != current and seen == prev)
        if seen is not None and seen != current and current is not None:
            replaced.add(current)
        current, prev, at = detection.next_instances(current, prev, at, seen, now)
        if found is not None:
            assert seen in replaced


def test_staleness():
    assert detection.stale_finding(T0, T0 + dt.timedelta(days=29), 30 * 86400) is None
    found = detection.stale_finding(T0, T0 + dt.timedelta(days=31), 30 * 86400)
    assert found is not None and found.evidence["last_seen"] == T0.isoformat()


def _device(**kw):
    base = {
        "hardware_uuid": "hw-1",
        "serial": "SN-1",
        "agent_instance": "A",
        "agent_instance_prev": None,
        "agent_instance_at": T0,
        "last_seen": T0,
    }
    return SimpleNamespace(**{**base, **kw})


def test_judge_answer_collects_every_finding_and_the_policy_decides():
    settings = Settings(stale_after=86400)
    now = T0 + dt.timedelta(days=2)
    device = _device(agent_instance="B", agent_instance_prev="A", agent_instance_at=now)
    platform = {"hardware_uuid": "hw-2", "serial": "SN-1", "instance": "A"}
    kinds = [f.kind for f in detection.judge_answer(device, platform, now, settings)]
    assert kinds == ["hardware_mismatch", "concurrent_agents", "stale"]
    clean = {"hardware_uuid": "hw-1", "serial": "SN-1", "instance": "A"}
    assert detection.judge_answer(_device(), clean, T0, settings) == []

    findings = detection.judge_answer(device, platform, now, settings)
    assert detection.policy_outcome(findings, settings) == ("suspended", "device_suspended")
    stale_only = [f for f in findings if f.kind == "stale"]
    assert detection.policy_outcome(stale_only, settings) == ("denied", "device_denied")
    flag = Settings(clone_policy="flag", stale_policy="flag")
    assert detection.policy_outcome(findings, flag) == (None, None)
    # A clone under "flag" but staleness under "deny": denied.
    mixed = Settings(clone_policy="flag", stale_policy="deny")
    assert detection.policy_outcome(findings, mixed) == ("denied", "device_denied")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("15m", 900),
        ("90s", 90),
        ("3600", 3600),
        (" 2D ", 172800),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text, "X") == seconds


@pytest.mark.parametrize("text", ["", "d", "0", "-5", "1.5h", "10w", "abc", "1e3"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="X must be a positive duration"):
        parse_duration(text, "X")


@given(st.text(max_size=12))
def test_duration_parser_never_crashes(text):
    try:
        assert parse_duration(text, "X") > 0
    except ValueError:
        pass


def test_settings_read_the_policies_and_refuse_unknown_ones():
    s = Settings.from_env(
        {
            "DEVICETRUST_CLONE_POLICY": "flag",
            "DEVICETRUST_STALE_POLICY": "flag",
            "DEVICETRUST_STALE_AFTER": "12h",
            "DEVICETRUST_CONCURRENT_AGENT_WINDOW": "10m",
        }
    )
    assert (s.clone_policy, s.stale_policy, s.stale_after, s.concurrent_window) == (
        "flag",
        "flag",
        43200,
        600,
    )
    defaults = Settings.from_env({})
    assert (defaults.clone_policy, defaults.stale_policy, defaults.stale_after) == (
        "suspend",
        "deny",
        30 * 86400,
    )
    with pytest.raises(ValueError, match="CLONE_POLICY"):
        Settings.from_env({"DEVICETRUST_CLONE_POLICY": "ignore"})
    with pytest.raises(ValueError, match="STALE_POLICY"):
        Settings.from_env({"DEVICETRUST_STALE_POLICY": "revoke"})
    with pytest.raises(ValueError, match="STALE_AFTER"):
        Settings.from_env({"DEVICETRUST_STALE_AFTER": "soon"})


def test_instance_ids_are_bounded_untrusted_input():
    assert detection.instance_of({"instance": "x" * 256}) == "x" * 64
    assert detection.instance_of({"instance": ""}) is None
    assert detection.instance_of({}) is None
