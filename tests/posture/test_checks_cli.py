"""`devicetrust checks lint` and `devicetrust checks test`, through the real devicetrust CLI."""

from __future__ import annotations

import json

from click.testing import CliRunner

from agent.collectors import collect_facts
from idp_service.cli import cli
from posture_checks.loader import BUILTIN_DIR
from tests.posture_helpers import recorded_host

BAD = """\
id: bad
title: Bad
description: d
platforms: [linux]
severity: low
expression: |
  firewall.enabled &&
  os.version > 12
enforcement: block
max_fact_age: 1h
remediation: r
"""


def invoke(*args):
    # The table fits the terminal; a wide one keeps every WHY whole, whatever runs the test.
    runner = CliRunner(env={"COLUMNS": "240"})
    return runner.invoke(cli, ["checks", *args], catch_exceptions=False)


def test_lint_builtin_catalog_is_clean():
    out = invoke("lint", str(BUILTIN_DIR))
    assert out.exit_code == 0, out.output
    assert "17 checks ok, 0 errors" in out.output


def test_lint_reports_file_and_line_and_fails(tmp_path):
    (tmp_path / "broken.yaml").write_text("id: x\nseverity: [low, high\n")
    (tmp_path / "bad.yaml").write_text(BAD)
    out = invoke("lint", str(tmp_path))
    assert out.exit_code == 1
    lines = out.output.splitlines()
    assert any(line.startswith(f"{tmp_path / 'broken.yaml'}:2: YAML: ") for line in lines), lines
    # The type error is caught by the dry run on example facts, at the expression.
    assert any(
        line.startswith(f"{tmp_path / 'bad.yaml'}:6: on example linux facts: wrong type")
        for line in lines
    ), lines
    data = json.loads(invoke("lint", "--json", str(tmp_path)).output)
    assert {e["line"] for e in data["errors"]} == {2, 6}


def test_test_prints_a_table_and_json(tmp_path):
    facts = collect_facts(recorded_host("linux/unencrypted", tmp_path))
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    out = invoke("test", str(BUILTIN_DIR), "--facts", str(path), "--now", "2025-01-01T00:10:00Z")
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line.split()[1] for line in out.output.splitlines()[1:]}
    assert rows["disk-encryption"] == "FAIL"
    assert rows["windows-defender-realtime"] == "INAPPLICABLE"
    assert rows["ssh-keys-encrypted"] == "FAIL"  # two keys without a passphrase
    assert "disk_encryption.system_volume_encrypted = false" in out.output

    late = invoke(
        "test", str(BUILTIN_DIR), "--facts", str(path), "--json", "--now", "2025-03-01T00:00:00Z"
    )
    results = {r["check_id"]: r for r in json.loads(late.output)["results"]}
    assert results["firewall"]["status"] == "STALE"
    fresh = invoke(
        "test", str(BUILTIN_DIR), "--facts", str(path), "--json", "--ignore-age", "--remediation",
        "--now", "2025-03-01T00:00:00Z",
    )  # fmt: skip
    results = {r["check_id"]: r for r in json.loads(fresh.output)["results"]}
    assert results["firewall"]["status"] == "FAIL"
    assert "ufw enable" in results["firewall"]["remediation"]


def test_test_with_variable_overrides(tmp_path):
    facts = collect_facts(recorded_host("linux/lvm_on_luks", tmp_path))
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    (tmp_path / "vars.json").write_text(
        json.dumps({"serial-in-inventory": {"inventory_serials": ["PF3LX0ZQ"]}})
    )
    args = [
        "test",
        str(BUILTIN_DIR),
        "--facts",
        str(tmp_path / "facts.json"),
        "--json",
        "--ignore-age",
    ]
    before = {r["check_id"]: r["status"] for r in json.loads(invoke(*args).output)["results"]}
    after = {
        r["check_id"]: r["status"]
        for r in json.loads(invoke(*args, "--vars", str(tmp_path / "vars.json")).output)["results"]
    }
    assert (before["serial-in-inventory"], after["serial-in-inventory"]) == ("FAIL", "PASS")


def test_test_rejects_non_json_facts(tmp_path):
    (tmp_path / "facts.json").write_text("not json")
    out = CliRunner().invoke(
        cli, ["checks", "test", str(BUILTIN_DIR), "--facts", str(tmp_path / "facts.json")]
    )
    assert out.exit_code == 2
    assert "not JSON" in out.output
