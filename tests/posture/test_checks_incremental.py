"""Input keys of incremental evaluation: they change exactly when a check's result could."""

from __future__ import annotations

import copy
import json

from posture_checks.incremental import (
    VOLATILE,
    FactDigests,
    catalog_fingerprint,
    combined_key,
    fingerprint,
    input_key,
)
from posture_checks.model import parse_check

DOC = {
    "schema_version": 1,
    "collected_at": "2026-11-22T04:00:00Z",
    "uptime_seconds": 3600,
    "os": {"family": "linux", "version": "12"},
    "firewall": {"enabled": True, "products": [{"name": "nftables", "enabled": True}]},
    "packages": {"installed": {"bash": "5.2", "curl": "7.88"}, "count": 2},
    "ratio": 0.5,
}


def _check(expression="firewall.enabled", variables=None, check_id="fw"):
    spec = {
        "id": check_id,
        "title": "T",
        "description": "D",
        "platforms": ["linux"],
        "severity": "high",
        "expression": expression,
        "enforcement": "block",
        "max_fact_age": "1h",
        "remediation": "Fix it.",
    }
    if variables is not None:
        spec["variables"] = variables
    return parse_check(json.dumps(spec))


def _key(check, doc):
    return input_key(fingerprint(check), check.roots, FactDigests(doc))


def test_equal_documents_have_equal_digests_however_they_were_built():
    parsed = json.loads(json.dumps(DOC))
    assert FactDigests(parsed).content() == FactDigests(copy.deepcopy(DOC)).content()
    assert FactDigests(parsed).section("packages") == FactDigests(DOC).section("packages")


def test_content_ignores_only_the_per_report_fields():
    base = FactDigests(DOC).content()
    for name in VOLATILE:
        assert FactDigests({**DOC, name: "other"}).content() == base
    changes = [
        {**DOC, "ratio": 0.25},
        {**DOC, "ratio": 1},  # a float and an int differ
        {**DOC, "schema_version": "1"},
        {**DOC, "packages": {"installed": {"bash": "5.2.1", "curl": "7.88"}, "count": 2}},
        {**DOC, "firewall": {"enabled": True, "products": []}},
        {**DOC, "new": None},
        {k: v for k, v in DOC.items() if k != "ratio"},
    ]
    assert len({FactDigests(d).content() for d in changes} | {base}) == len(changes) + 1


def test_input_key_follows_the_sections_the_check_reads():
    fw = _check()
    assert _key(fw, DOC) == _key(fw, {**DOC, "packages": {}, "uptime_seconds": 1})
    assert _key(fw, DOC) != _key(fw, {**DOC, "firewall": {"enabled": False}})
    # The platform is an input of every check, whatever its roots.
    assert _key(fw, DOC) != _key(fw, {**DOC, "os": {"family": "macos", "version": "12"}})
    assert _key(fw, DOC) == _key(fw, {**DOC, "os": {"family": "linux", "version": "13"}})


def test_input_key_follows_the_check():
    fw = _check()
    assert _key(fw, DOC) == _key(_check(), DOC)
    assert _key(fw, DOC) != _key(_check("!firewall.enabled"), DOC)
    assert _key(fw, DOC) != _key(_check(variables={"x": 1}), DOC)
    assert _key(fw, DOC) != _key(_check(check_id="fw2"), DOC)


def test_combined_key_covers_catalog_content_and_volatile_roots():
    fw, up = _check(), _check("uptime_seconds < 10", check_id="up")
    cat = catalog_fingerprint([fingerprint(fw)])
    both = catalog_fingerprint([fingerprint(fw), fingerprint(up)])
    key = combined_key(cat, [fw], FactDigests(DOC))
    assert key == combined_key(cat, [fw], FactDigests({**DOC, "uptime_seconds": 1}))
    assert key != combined_key(cat, [fw], FactDigests({**DOC, "ratio": 2.0}))
    assert key != combined_key(both, [fw, up], FactDigests(DOC))
    # A check reading a per-report field makes that field part of the combined key.
    with_up = combined_key(both, [fw, up], FactDigests(DOC))
    assert with_up != combined_key(both, [fw, up], FactDigests({**DOC, "uptime_seconds": 1}))
