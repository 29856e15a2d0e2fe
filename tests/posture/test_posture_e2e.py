"""Posture enforced at sign-in, end to end: real service, real agent reporting a recorded
device's facts, real Chromium. A failing fact blocks with remediation; after the fact is
fixed (a fixture switch) "Recheck now" lets the sign-in through."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from idp_service.platform.db import make_engine
from idp_service.posture.tables import CheckResultRow, DeviceFacts
from tests.browser import support as browser
from tests.procs import free_port, make_agent, start_service

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "posture" / "linux"

BLOCKING_CHECK = """\
id: system-disk-encrypted
title: System disk is encrypted
description: The system volume is encrypted at rest.
platforms: [linux, macos, windows]
severity: critical
expression: disk_encryption.system_volume_encrypted
enforcement: block
max_fact_age: 1h
remediation:
  default: Encrypt the system disk.
  linux: |
    The root filesystem of **{{ hostname }}** is not encrypted. Reinstall with
    *Encrypt the new installation* (LUKS), then press **Recheck now**.
"""


def _use_fixture(device_dir: Path, name: str) -> None:
    if device_dir.exists():
        shutil.rmtree(device_dir)
    shutil.copytree(FIXTURES / name, device_dir, symlinks=True)


@pytest.fixture
def setup(tmp_path, database_url):
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "system-disk-encrypted.yaml").write_text(BLOCKING_CHECK)
    device_dir = tmp_path / "recorded-device"
    _use_fixture(device_dir, "unencrypted")
    port = free_port()
    svc = start_service(
        tmp_path,
        database_url,
        agent_ports=[port],
        extra_env={"DEVICETRUST_CHECKS_DIR": str(checks), "DEVICETRUST_BUILTIN_CHECKS": "none"},
    )
    agent = make_agent(tmp_path, "posture", port=port)
    agent.enroll(svc.url, svc.enroll_code("hana@example.com"))
    agent.start("--replay", str(device_dir))
    yield svc, agent, device_dir
    agent.stop()
    svc.stop()


def _wait_for_report(svc, device_id: str, seq: int = 1) -> None:
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                row = conn.execute(
                    select(DeviceFacts.report_seq).where(DeviceFacts.device_id == device_id)
                ).first()
            if row is not None and row.report_seq >= seq:
                return
            time.sleep(0.2)
        raise AssertionError("the agent never reported")
    finally:
        engine.dispose()


def _results(svc, device_id: str) -> dict[str, str]:
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(CheckResultRow.check_id, CheckResultRow.status).where(
                    CheckResultRow.device_id == device_id
                )
            ).all()
    finally:
        engine.dispose()
    return dict(rows)


def _verified_login(svc, agent):
    client = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
    txn = client.get("/login").headers["location"].rsplit("/", 1)[-1]
    challenge = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    envelope = httpx.post(
        f"http://127.0.0.1:{agent.port}/v1/challenge",
        json={"challenge": challenge},
        headers={"Origin": svc.url},
    ).json()["response"]
    assert client.post(f"/login/{txn}/response", content=envelope).json()["status"] == "verified"
    return client, txn


@pytest.mark.browser
def test_failing_fact_blocks_then_recheck_lets_the_sign_in_through(setup, artifacts):
    svc, agent, device_dir = setup
    device_id = agent.cli_json("id")["device_id"]
    _wait_for_report(svc, device_id)
    # Evaluated at ingest, on the server, from the facts alone.
    assert _results(svc, device_id) == {"system-disk-encrypted": "FAIL"}
    with browser.chromium() as b:
        page = b.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{svc.url}/login")
        page.wait_for_selector("h1.bad", timeout=15000)
        assert page.locator("h1").inner_text() == "This device needs attention"
        section = page.locator('[data-check="system-disk-encrypted"]')
        assert "Blocks sign-in" in section.inner_text()
        assert "root filesystem of unencrypted is not encrypted" in section.inner_text()
        page.screenshot(path=str(artifacts / "posture-blocked.png"), full_page=True)

        _use_fixture(device_dir, "luks2")  # the user fixes the device
        page.click("#recheck")
        page.wait_for_selector("h1.ok", timeout=20000)
        assert page.locator("h1").inner_text() == "Device verified"
        page.screenshot(path=str(artifacts / "posture-fixed.png"))
        assert errors == []
    assert _results(svc, device_id) == {"system-disk-encrypted": "PASS"}


def test_cancelling_a_blocked_sign_in_denies_it(setup):
    svc, agent, _ = setup
    device_id = agent.cli_json("id")["device_id"]
    _wait_for_report(svc, device_id)
    client, txn = _verified_login(svc, agent)
    blocked = client.get(f"/login/{txn}/continue")
    assert blocked.status_code == 403 and "system-disk-encrypted" in blocked.text
    denied = client.post(f"/login/{txn}/continue", data={"choice": "cancel"})
    assert denied.status_code == 200 and "security requirements" in denied.text
    assert client.get(f"/login/{txn}/status").json()["code"] == "posture_blocked"
    # A denied sign-in stays denied.
    assert "Device verified" not in client.get(f"/login/{txn}/continue").text


def test_recheck_needs_the_enrolled_service_origin(setup):
    svc, agent, _ = setup
    url = f"http://127.0.0.1:{agent.port}/v1/recheck"
    foreign = httpx.post(url, content=b"{}", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "origin_not_allowed"
    ok = httpx.post(url, content=b"{}", headers={"Origin": svc.url}, timeout=30)
    assert ok.status_code == 200 and ok.json()["status"] == "reported"
    again = httpx.post(url, content=b"{}", headers={"Origin": svc.url})
    assert again.status_code == 429


def test_an_exemption_lets_a_failing_device_in_until_it_is_removed(setup):
    svc, agent, _ = setup
    device_id = agent.cli_json("id")["device_id"]
    _wait_for_report(svc, device_id)
    bad = svc.cli(
        "exemptions", "add", "--check", "system-disk-encrypted", "--days", "3",
        "--reason", "x", check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "exactly one of" in bad.stderr
    added = svc.cli_json(
        "exemptions", "add", "--check", "system-disk-encrypted", "--device", device_id,
        "--days", "3", "--reason", "replacement laptop ordered",
    )  # fmt: skip
    client, txn = _verified_login(svc, agent)
    assert "Device verified" in client.get(f"/login/{txn}/continue").text
    listed = svc.cli_json("exemptions", "list")
    assert [e["id"] for e in listed] == [added["id"]]
    svc.cli("exemptions", "remove", str(added["id"]), "--reason", "laptop replaced")
    client, txn = _verified_login(svc, agent)
    assert client.get(f"/login/{txn}/continue").status_code == 403
