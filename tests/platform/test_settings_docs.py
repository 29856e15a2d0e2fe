"""docs/deploy.md's settings tables stay true: every setting of the model is listed with
a type, nothing else is, and every default written there as one value is the default
the service uses (read through the same validators as a real value)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from idp_service.platform import config
from idp_service.platform.config import PREFIX, Inputs

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
ROW = re.compile(r"^\| `(DEVICETRUST_[A-Z_]+)` \| ([^|]+) \| ([^|]+) \| (.+) \|$")
TYPES = re.compile(
    r"(path|URL|text|secret text|flag|integer|duration|minutes or duration|one of|host:port"
    r"|rate limit|list of (origins|ports|paths|check ids|seconds|host names))"
)


def _rows() -> dict[str, tuple[str, str, str]]:
    rows: dict[str, tuple[str, str, str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        found = ROW.match(line)
        if found:
            name, kind, default, meaning = (g.strip() for g in found.groups())
            assert name not in rows, f"{name} is listed twice"
            rows[name] = (kind, default, meaning)
    return rows


def test_every_setting_is_documented_and_nothing_else():
    documented = set(_rows())
    model = {PREFIX + name.upper() for name in Inputs.model_fields} | {config.CONFIG_VARIABLE}
    assert documented - model == set(), "documented but not a setting"
    assert model - documented == set(), "a setting docs/deploy.md does not list"


@pytest.mark.parametrize("name", sorted(_rows()))
def test_each_row_has_a_type_a_default_and_a_meaning(name):
    kind, default, meaning = _rows()[name]
    assert TYPES.fullmatch(kind), f"{name}: unknown type {kind!r}"
    assert default and len(meaning) > 10


@pytest.mark.parametrize("name", sorted(n for n in _rows() if n != config.CONFIG_VARIABLE))
def test_a_documented_default_is_the_real_one(name):
    _, default, _ = _rows()[name]
    literal = re.fullmatch(r"`([^`]*)`", default)
    field = name[len(PREFIX) :].lower()
    expected = Inputs.model_fields[field].default
    if literal is None:  # prose ("SQLite in the data dir"): a default computed from others
        assert expected in (None, "", ()), f"{name}: write the default {expected!r} in backticks"
        return
    with config._reading({name: literal.group(1)}, None):
        parsed = getattr(Inputs(), field)
    assert parsed == expected, f"{name}: the page says {default}, the service uses {expected!r}"


def test_the_deployment_diagram_was_rendered_from_its_current_source():
    svg = (DOC.parent / "deploy.svg").read_text(encoding="utf-8")
    found = re.search(r"<!-- source: docs/deploy.dot sha256=([0-9a-f]{64}) -->", svg)
    assert found, "docs/deploy.svg was not made by `make docs`"
    digest = hashlib.sha256((DOC.parent / "deploy.dot").read_bytes()).hexdigest()
    assert found.group(1) == digest, "docs/deploy.dot changed: run `make docs`"
    assert "](deploy.svg)" in DOC.read_text(encoding="utf-8")


def test_every_repository_path_the_page_names_exists():
    text = DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:packaging|idp_service|tests|docs)/[\w./-]+)`", text))
    assert "packaging/container/Containerfile" in named
    missing = [p for p in named if not (DOC.parents[1] / p).exists()]
    assert not missing, missing
