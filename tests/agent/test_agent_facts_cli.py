"""`devicetrust-agent facts` prints this device's facts, as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.posture_helpers import FIXTURES
from trust_protocol.facts_schema import validate_facts

ROOT = Path(__file__).resolve().parents[2]


def run_agent(*args):
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_facts_command_prints_valid_facts():
    proc = run_agent("facts")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert validate_facts(facts) == []
    assert facts["os"]["family"] == "linux"
    assert facts["agent"]["version"]


def test_facts_command_replays_a_recorded_device():
    proc = run_agent("facts", "--replay", str(FIXTURES / "windows" / "win11_managed"))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["os"]["family"] == "windows"
    assert facts["disk_encryption"]["system_volume_encrypted"] is True
