"""The fact and check documentation stays in step with the schema and the catalog."""

from __future__ import annotations

from pathlib import Path

from posture_checks.loader import BUILTIN_DIR, load_directory
from trust_protocol.facts_schema import iter_paths

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_fact_path_is_documented():
    text = (DOCS / "facts.md").read_text()
    missing = [path for path, _ in iter_paths() if "*" not in path and f"`{path}`" not in text]
    assert missing == []


def test_every_catalog_check_is_in_the_table():
    text = (DOCS / "checks.md").read_text()
    checks, _ = load_directory(BUILTIN_DIR)
    assert [c.id for c in checks if f"| `{c.id}` |" not in text] == []
