"""docs/architecture.md stays true: its diagram is rendered from the current source,
and every package and module it names exists."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_the_svg_was_rendered_from_the_current_dot_source() -> None:
    svg = (DOCS / "architecture.svg").read_text(encoding="utf-8")
    found = re.search(r"<!-- source: docs/architecture.dot sha256=([0-9a-f]{64}) -->", svg)
    assert found, "docs/architecture.svg was not made by `make docs`"
    digest = hashlib.sha256((DOCS / "architecture.dot").read_bytes()).hexdigest()
    assert found.group(1) == digest, "docs/architecture.dot changed: run `make docs`"


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz (make system-deps)")
def test_the_dot_source_renders() -> None:
    done = subprocess.run(
        ["dot", "-Tsvg", str(DOCS / "architecture.dot")], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"<svg" in done.stdout


def test_every_path_the_page_names_exists() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    named = set(
        re.findall(
            r"`((?:idp_service|trust_protocol|posture_checks|agent|scim|tests)/[\w/.]*)`", text
        )
    )
    named |= {
        "idp_service/" + p
        for p in re.findall(r"`((?:signin|saml|devices|platform|web|directory)/[\w/.]+)`", text)
    }
    assert named, "the page names no paths"
    future = {"idp_service/oidc/", "tests/oidc/"}  # the worked example of a new surface
    missing = sorted(p for p in named - future if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
