"""Evaluating checks over facts: every result kind, CEL edge cases, hostile documents."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posture_checks.evaluator import Status, evaluate, evaluate_all, prepare_facts
from posture_checks.functions import parse_version, version_at_least, version_compare
from posture_checks.loader import BUILTIN_DIR, load_directory
from posture_checks.model import parse_check
from trust_protocol.facts_schema import example_document

NOW = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
CATALOG, _ = load_directory(BUILTIN_DIR)


def make(expression, platforms=("linux", "macos", "windows"), max_age="1h", variables=None):
    doc = {
        "id": "t",
        "title": "T",
        "description": "D",
        "platforms": list(platforms),
        "severity": "low",
        "expression": expression,
        "enforcement": "block",
        "max_fact_age": max_age,
        "remediation": "Fix it.",
    }
    if variables is not None:
        doc["variables"] = variables
    return parse_check(json.dumps(doc), "t.yaml")


def facts(platform="linux", age=dt.timedelta(minutes=5), **changes):
    doc = example_document(platform)
    doc["collected_at"] = (NOW - age).isoformat().replace("+00:00", "Z")
    for path, value in changes.items():
        target = doc
        *parents, last = path.split("__")
        for part in parents:
            target = target[part]
        target[last] = value
    return doc


def run(check, doc, **kw):
    return evaluate(check, doc, now=NOW, **kw)


def test_pass_and_fail_say_why():
    check = make("firewall.enabled")
    passed = run(check, facts(firewall__enabled=True))
    failed = run(check, facts(firewall__enabled=False))
    assert (passed.status, passed.reason) == (Status.PASS, "firewall.enabled = true")
    assert (failed.status, failed.reason) == (Status.FAIL, "firewall.enabled = false")
    assert failed.facts_used == {"firewall.enabled": False}
    assert failed.fact_age_seconds == 300


@pytest.mark.parametrize(
    "doc_change",
    [
        {"firewall__enabled": None},  # null: unknown, not false
        {"firewall": None},
        {"firewall": {}},
    ],
)
def test_missing_fact_is_unknown_never_an_exception(doc_change):
    result = run(make("firewall.enabled"), facts(**doc_change))
    assert result.status is Status.UNKNOWN
    assert result.reason in ("missing fact: firewall.enabled", "missing fact: firewall")


def test_missing_top_level_section_is_unknown():
    doc = facts()
    del doc["screen_lock"]
    result = run(make("screen_lock.all_enabled"), doc)
    assert (result.status, result.reason) == (Status.UNKNOWN, "missing fact: screen_lock")


def test_has_treats_null_as_absent():
    check = make("!has(management.mdm_enrolled) || management.mdm_enrolled")
    assert run(check, facts(management__mdm_enrolled=None)).status is Status.PASS
    assert run(check, facts(management__mdm_enrolled=False)).status is Status.FAIL


def test_or_with_a_true_side_does_not_need_the_missing_fact():
    check = make("management.mdm_enrolled || management.domain_joined")
    doc = facts(management__mdm_enrolled=None, management__domain_joined=True)
    assert run(check, doc).status is Status.PASS
    doc = facts(management__mdm_enrolled=None, management__domain_joined=False)
    assert run(check, doc).status is Status.UNKNOWN


@pytest.mark.parametrize(
    ("expression", "change", "fragment"),
    [
        ("os.version > 5", {}, "wrong type"),  # string vs int
        ("firewall.enabled", {"firewall__enabled": "yes"}, "returned str"),
        (
            "screen_lock.max_timeout_seconds <= 900",
            {"screen_lock__max_timeout_seconds": "300"},
            "wrong type",
        ),
        ("uptime_seconds / 0 > 1", {}, "division by zero"),
        ("os.name.matches('[')", {}, "matches()"),
        ("console_users[5] == 'x'", {}, "index out of range"),
        ("uptime_seconds", {}, "returned int"),
        ("version_at_least(os.name, '1.0')", {"os__name": "Debian"}, "version_at_least()"),
    ],
)
def test_wrong_types_and_expression_errors_are_error(expression, change, fragment):
    result = run(make(expression), facts(**change))
    assert result.status is Status.ERROR, result
    assert fragment in result.reason


def test_unknown_function_is_error_not_unknown():
    check = make("firewall.enabled")
    object.__setattr__(check, "program", __import__("cel").compile("frobnicate(firewall.enabled)"))
    result = run(check, facts())
    assert (result.status, result.reason) == (Status.ERROR, "unknown function frobnicate()")


def test_platform_mismatch_is_inapplicable_and_no_platform_is_unknown():
    check = make("firewall.enabled", platforms=["macos"])
    assert run(check, facts("linux")).status is Status.INAPPLICABLE
    doc = facts()
    doc["os"]["family"] = None
    assert run(check, doc).reason == "missing fact: os.family"


def test_old_facts_are_stale_whatever_they_say():
    check = make("firewall.enabled", max_age="1h")
    fresh = run(check, facts(age=dt.timedelta(minutes=59)))
    stale = run(check, facts(age=dt.timedelta(hours=2)))
    assert fresh.status is Status.PASS
    assert stale.status is Status.STALE
    assert stale.fact_age_seconds == 7200
    assert "7200s old" in stale.reason


def test_no_collection_time_is_stale_and_server_time_wins():
    check = make("firewall.enabled")
    doc = facts()
    doc["collected_at"] = "yesterday-ish"
    assert run(check, doc).status is Status.STALE
    # The server passes its own receive time: the agent's clock does not matter.
    doc["collected_at"] = "2000-01-01T00:00:00Z"
    received = NOW - dt.timedelta(seconds=30)
    (result,) = evaluate_all([check], doc, now=NOW, observed_at=received)
    assert (result.status, result.fact_age_seconds) == (Status.PASS, 30)


def test_variables_default_and_override():
    check = make("hardware.serial in vars.allowed", variables={"allowed": ["PF3ABCDE"]})
    assert run(check, facts()).status is Status.PASS
    (result,) = evaluate_all([check], facts(), now=NOW, variables={"t": {"allowed": ["OTHER"]}})
    assert result.status is Status.FAIL


def test_expressions_are_compiled_once(monkeypatch):
    import cel

    check = make("firewall.enabled && screen_lock.all_enabled")

    def no_compiling(_):
        raise AssertionError("compiled at evaluation time")

    monkeypatch.setattr(cel, "compile", no_compiling)
    results = evaluate_all([check] * 3, facts(), now=NOW)
    assert [r.status for r in results] == [Status.PASS] * 3


def test_version_functions():
    assert version_at_least("14.10", "14.9")
    assert not version_at_least("14.2.1", "14.3")
    assert version_at_least("1:115.6.0esr-1~deb12u1", "115.6")
    assert version_at_least("10.0.22631.4602", "10.0.19045")
    assert version_compare("121.0b3", "121.0") == 0
    assert version_compare("2.0", "2") == 0
    with pytest.raises(ValueError):
        parse_version("latest")
    with pytest.raises(ValueError):
        parse_version(12)


def test_catalog_on_every_platform_example():
    for platform in ("linux", "macos", "windows"):
        results = evaluate_all(CATALOG, facts(platform), now=NOW)
        statuses = {r.check_id: r.status for r in results}
        assert Status.ERROR not in statuses.values(), (platform, statuses)
        assert statuses["firewall"] is Status.PASS
        expected = Status.INAPPLICABLE if platform != "windows" else Status.PASS
        assert statuses["windows-defender-realtime"] is expected


def test_hostile_documents_do_not_crash():
    check = make("firewall.enabled")
    deep: object = True
    for _ in range(100_000):  # would overflow the CEL converter's stack unbounded
        deep = [deep]
    cases = [
        None,
        [],
        "facts",
        {"os": "linux"},
        {**facts(), "firewall": {"enabled": "\ud800"}},
        {**facts(), "deep": deep},
        {**facts(), "big": 2**200, "nan": float("nan")},
        {**facts(), 7: "non-string key"},
    ]
    for doc in cases:
        result = run(check, doc)
        assert result.status in set(Status)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
SECTIONS = list(example_document())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    platform=st.sampled_from(["linux", "macos", "windows", "beos"]),
    replacements=st.dictionaries(st.sampled_from(SECTIONS), json_values, max_size=6),
)
def test_any_fact_document_gives_a_result_for_every_catalog_check(platform, replacements):
    doc = facts(platform)
    doc.update(replacements)
    results = evaluate_all(CATALOG, doc, now=NOW)
    assert [r.check_id for r in results] == [c.id for c in CATALOG]
    assert all(isinstance(r.status, Status) for r in results)


def _paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))
    yield prefix


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_leaf_of_a_real_document_may_be_anything(data):
    doc = facts(data.draw(st.sampled_from(["linux", "macos", "windows"])))
    paths = [p for p in _paths(doc) if p]
    mutated = copy.deepcopy(doc)
    for path in data.draw(st.lists(st.sampled_from(paths), max_size=4)):
        target = mutated
        try:
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    for result in evaluate_all(CATALOG, mutated, now=NOW):
        assert isinstance(result.status, Status)
        json.dumps(result.to_dict())


@settings(max_examples=100, deadline=None)
@given(st.from_type(object) | json_values)
def test_prepare_facts_accepts_anything(value):
    prepared = prepare_facts(value)
    assert isinstance(prepared.document, dict)


def test_a_device_cannot_supply_the_check_variables():
    check = make("hardware.serial in vars.allowed", variables={"allowed": ["SOMETHING-ELSE"]})
    doc = facts()
    doc["vars"] = {"allowed": [doc["hardware"]["serial"]]}
    assert run(check, doc).status is Status.FAIL


def test_big_maps_are_cleaned_like_small_ones():
    installed = {f"pkg{i}": f"1.{i}" for i in range(40)}
    assert (
        prepare_facts({"packages": {"installed": installed}}).document["packages"]["installed"]
        == installed
    )
    installed["bad\ud800"] = "1"
    installed["null"] = None
    cleaned = prepare_facts({"packages": {"installed": installed}}).document["packages"][
        "installed"
    ]
    assert "bad?" in cleaned and "null" not in cleaned and len(cleaned) == 41
