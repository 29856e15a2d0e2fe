"""The device's key files: 0600 in a 0700 directory, and the agent refuses anything looser."""

from __future__ import annotations

import os
import stat

import pytest

from agent.keys import KeyPermissionError, load_or_create
from tests.procs import make_agent


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_private_keys_with_tight_modes(tmp_path):
    state = tmp_path / "nested" / "state"
    keys, created = load_or_create(state)
    assert created
    assert _mode(state) == 0o700
    assert _mode(state / "sign.key") == 0o600
    assert _mode(state / "box.key") == 0o600
    again, created_again = load_or_create(state)
    assert not created_again
    assert again.device_id == keys.device_id
    assert again.sign_public == keys.sign_public and again.box_public == keys.box_public


@pytest.mark.parametrize(
    ("target", "mode", "fix"),
    [
        ("dir", 0o755, "chmod 700"),
        ("dir", 0o710, "chmod 700"),
        ("sign.key", 0o644, "chmod 600"),
        ("box.key", 0o640, "chmod 600"),
        ("sign.key", 0o604, "chmod 600"),
    ],
)
def test_looser_permissions_are_refused_with_a_fix(tmp_path, target, mode, fix):
    state = tmp_path / "state"
    load_or_create(state)
    path = state if target == "dir" else state / target
    os.chmod(path, mode)
    with pytest.raises(KeyPermissionError) as info:
        load_or_create(state)
    assert fix in str(info.value) and str(path) in str(info.value)


def test_cli_refuses_to_run_and_says_how_to_fix(tmp_path):
    agent = make_agent(tmp_path, "perm")
    agent.cli("id")
    os.chmod(agent.state_dir / "sign.key", 0o644)
    for command in (["id"], ["run"]):
        out = agent.cli(*command, check=False)
        assert out.returncode != 0
        assert f"chmod 600 {agent.state_dir / 'sign.key'}" in out.stderr


def test_id_shows_device_id_and_fingerprints(tmp_path):
    agent = make_agent(tmp_path, "ids")
    data = agent.cli_json("id")
    keys, _ = load_or_create(agent.state_dir)
    assert data["device_id"] == keys.device_id
    assert data["sign_key"] == keys.fingerprints()["sign_key"]
    assert data["sign_key"].startswith("SHA256:")
