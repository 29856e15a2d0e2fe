"""Check files: the built-in catalog, errors at the right file:line, never a stray exception."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posture_checks.loader import BUILTIN_DIR, load_directory
from posture_checks.model import (
    CheckValidationError,
    expression_paths,
    parse_check,
    parse_duration,
)

GOOD = """\
id: sample
title: Sample
description: A sample check.
platforms: [linux, macos]
severity: high
expression: firewall.enabled
enforcement:
  mode: warn_then_block
  deadline_days: 7
max_fact_age: 1h
remediation:
  default: Turn the firewall on ({{ os.name }}).
"""


def issues_of(text, source="c.yaml"):
    with pytest.raises(CheckValidationError) as info:
        parse_check(textwrap.dedent(text), source)
    return [(i.line, i.message) for i in info.value.issues]


def test_good_check_parses_and_compiles_once():
    check = parse_check(GOOD, "c.yaml")
    assert check.id == "sample"
    assert check.platforms == ("linux", "macos")
    assert check.enforcement.mode == "warn_then_block"
    assert check.enforcement.deadline_days == 7
    assert check.max_fact_age == dt.timedelta(hours=1)
    assert check.paths == ("firewall.enabled",)
    assert check.program is not None and check.program.source == "firewall.enabled"
    assert (check.line, check.expression_line) == (1, 6)


def test_builtin_catalog():
    checks, issues = load_directory(BUILTIN_DIR)
    assert issues == []
    assert len(checks) >= 15
    ids = {c.id for c in checks}
    assert len(ids) == len(checks)
    # The field's common set (field notes, "Posture: what the field checks").
    for wanted in [
        "os-version-minimum",
        "disk-encryption",
        "screen-lock",
        "firewall",
        "edr-running",
        "auto-updates",
        "browser-current",
        "secure-boot-integrity",
        "tpm-present",
        "managed-device",
        "required-apps",
        "banned-apps",
        "serial-in-inventory",
        "agent-current",
        "ssh-keys-encrypted",
    ]:
        assert wanted in ids
    for check in checks:
        # Remediation text for every platform the check applies to.
        assert all(p in check.remediation for p in check.platforms), check.id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id: x\ntitle: [unclosed\n", (2, "YAML")),
        ("- a list\n- not a mapping\n", (1, "a check must be a mapping")),
        (GOOD.replace("severity: high", "severity: urgent"), (5, "severity must be one of")),
        (
            GOOD.replace("title: Sample\n", "title: Sample\ncolour: red\n"),
            (3, "unknown field 'colour'"),
        ),
        (
            GOOD.replace("platforms: [linux, macos]", "platforms:\n  - linux\n  - beos"),
            (6, "unknown platform 'beos'"),
        ),
        (GOOD.replace("  deadline_days: 7\n", ""), (8, "needs deadline_days")),
        (
            GOOD.replace("mode: warn_then_block", "mode: block"),
            (9, "only applies to warn_then_block"),
        ),
        (
            GOOD.replace("max_fact_age: 1h", "max_fact_age: soon"),
            (10, "max_fact_age must be a duration"),
        ),
        (GOOD.replace("max_fact_age: 1h", "max_fact_age: 365d"), (10, "at most 90d")),
        (GOOD.replace("id: sample", "id: Not An Id"), (1, "id 'Not An Id' must match")),
        (
            GOOD.replace("firewall.enabled", "firewall.enabld"),
            (6, "unknown fact 'firewall.enabld'"),
        ),
        (GOOD.replace("firewall.enabled", "vars.limit > 3"), (6, "vars.limit is not declared")),
        (
            GOOD.replace("({{ os.name }})", "({{ os.nme }})"),
            (12, "unknown placeholder {{ os.nme }}"),
        ),
        (GOOD.replace("  default: ", "  beos: "), (12, "must be default or a platform")),
    ],
)
def test_errors_point_at_the_right_line(text, expected):
    found = issues_of(text)
    line, fragment = expected
    assert any(ln == line and fragment in msg for ln, msg in found), found


def test_missing_fields_are_listed():
    found = issues_of("id: only-an-id\n")
    messages = {m for _, m in found}
    assert "missing required field 'expression'" in messages
    assert "missing required field 'remediation'" in messages


def test_syntax_error_inside_a_block_expression_reports_the_file_line():
    text = GOOD.replace(
        "expression: firewall.enabled",
        "expression: |\n  firewall.enabled &&\n  (screen_lock.all_enabled ||",
    )
    (line, message), *_ = issues_of(text)
    assert line == 8  # the second expression line, where the parser gave up
    assert message.startswith("expression does not compile")


def test_unknown_fact_on_a_later_line_of_a_block_expression():
    text = GOOD.replace(
        "expression: firewall.enabled",
        "expression: |\n  firewall.enabled &&\n  screen_lock.all_enabled &&\n  disk.encrypted",
    )
    assert (9, "unknown fact 'disk' (facts: see docs/facts.md)") in issues_of(text)


def test_remediation_must_cover_every_platform():
    text = GOOD.replace("  default: ", "  linux: ")
    assert any("no text for macos" in m for _, m in issues_of(text))


def test_duplicate_ids_in_one_directory(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text("# same id\n" + GOOD)
    checks, issues = load_directory(tmp_path)
    assert [c.source for c in checks] == [str(tmp_path / "a.yaml")]
    assert [(i.source, i.line) for i in issues] == [(str(tmp_path / "b.yaml"), 2)]
    assert "duplicate id 'sample'" in issues[0].message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("30m", 1800), ("6h", 21600), ("7d", 604800), ("1d12h", 129600)],
)
def test_durations(value, seconds):
    assert parse_duration(value).total_seconds() == seconds


@pytest.mark.parametrize("value", [0, -5, "", "1w", True, None, "h", 10**9])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_paths_ignore_strings_keywords_and_methods():
    paths, macro = expression_paths(
        'os.version.startsWith("1.2") && "a.b" in packages.installed && '
        "disk_encryption.volumes.all(v, v.encrypted) && x in vars.allowed"
    )
    assert paths == [
        "os.version",
        "packages.installed",
        "disk_encryption.volumes",
        "v",
        "v.encrypted",
        "x",
        "vars.allowed",
    ]
    assert macro == {"v"}


def test_bytes_that_are_not_utf8():
    with pytest.raises(CheckValidationError) as info:
        parse_check(b"id: \xff\xfe\n", "bin.yaml")
    assert str(info.value) == "bin.yaml:1: not UTF-8 (byte 4)"


def _parse_or_validation_error(text):
    try:
        parse_check(text, "fuzz.yaml")
    except CheckValidationError as exc:
        assert exc.issues and all(i.line >= 1 for i in exc.issues)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_loader_never_raises_on_arbitrary_text(text):
    _parse_or_validation_error(text)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_loader_never_raises_on_arbitrary_bytes(data):
    _parse_or_validation_error(data)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "id",
        "title",
        "description",
        "platforms",
        "expression",
        "severity",
        "enforcement",
        "remediation",
        "max_fact_age",
        "variables",
        "fail_closed",
        "other",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(fields, yaml_values, max_size=12))
def test_loader_never_raises_on_wrongly_typed_fields(fields_):
    base = yaml.safe_load(GOOD)
    base.update(fields_)
    _parse_or_validation_error(yaml.safe_dump(base))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="()[]{}.!&|<>=\"' abcxyz_019,?:", max_size=60))
def test_loader_never_raises_on_hostile_expressions(expression):
    _parse_or_validation_error(GOOD.replace("firewall.enabled", yaml.safe_dump(expression).strip()))


def test_deeply_nested_yaml_is_a_validation_error():
    _parse_or_validation_error("a: " + "[" * 5000 + "]" * 5000)
    _parse_or_validation_error("&a [*a]")
