"""Every console and API view of posture results, fed by what ingest really writes.

A real agent reports a recorded device (an unencrypted Linux laptop) to the
real service; nothing is inserted by hand. Then the overview's "Failing checks"
panel, the device page's coloured status pills, the checks page (mode, counts
per status, each a link to the filtered devices list), that list itself, and
the admin API's posture reads must all show what the evaluator produced.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from idp_service.platform.db import make_engine
from idp_service.posture.tables import CheckResultRow
from tests.admin_helpers import csrf_of
from tests.procs import free_port, make_agent, start_service

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "posture" / "linux"

CHECK = """\
id: {id}
title: {title}
description: D
platforms: [linux, macos, windows]
severity: high
expression: {expression}
enforcement: {enforcement}
max_fact_age: {age}
remediation: Fix it.
"""
CHECKS = {
    "disk-encrypted": ("System disk is encrypted", "disk_encryption.system_volume_encrypted"),
    "is-linux": ("Runs Linux", 'os.family == "linux"'),
}


@pytest.fixture
def reported(tmp_path, database_url):
    """A service with two checks, and one real agent that has reported a failing device."""
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "disk-encrypted.yaml").write_text(
        CHECK.format(
            id="disk-encrypted",
            title=CHECKS["disk-encrypted"][0],
            expression=CHECKS["disk-encrypted"][1],
            enforcement="{mode: warn_then_block, deadline_days: 7}",
            age="1d",
        )
    )
    (checks / "is-linux.yaml").write_text(
        CHECK.format(
            id="is-linux",
            title=CHECKS["is-linux"][0],
            expression=CHECKS["is-linux"][1],
            enforcement="report_only",
            age="90s",
        )
    )
    device_dir = tmp_path / "recorded-device"
    shutil.copytree(FIXTURES / "unencrypted", device_dir, symlinks=True)
    port = free_port()
    svc = start_service(
        tmp_path,
        database_url,
        agent_ports=[port],
        extra_env={"DEVICETRUST_CHECKS_DIR": str(checks), "DEVICETRUST_BUILTIN_CHECKS": "none"},
    )
    agent = make_agent(tmp_path, "views", port=port)
    try:
        agent.enroll(svc.url, svc.enroll_code("vera@example.com"))
        agent.start("--replay", str(device_dir))
        device_id = agent.cli_json("id")["device_id"]
        _wait_for_results(svc, device_id, 2)
        yield svc, device_id
    finally:
        agent.stop()
        svc.stop()


def _wait_for_results(svc, device_id: str, n: int) -> None:
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(CheckResultRow.check_id).where(CheckResultRow.device_id == device_id)
                ).all()
            if len(rows) >= n:
                return
            time.sleep(0.2)
        raise AssertionError("the agent's report never produced results\n" + svc.log())
    finally:
        engine.dispose()


def _console(svc) -> httpx.Client:
    """A console session opened with a one-time bootstrap token from the CLI."""
    token = svc.cli_json("admin", "bootstrap")["token"]
    client = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=15)
    csrf = csrf_of(client.get("/admin/bootstrap").text)
    resp = client.post("/admin/bootstrap", data={"token": token, "csrf": csrf})
    assert resp.status_code == 303, resp.text
    return client


def test_read_views_show_what_the_agent_report_wrote(reported):
    svc, device_id = reported
    client = _console(svc)

    # Overview: the failing check is listed (its count links to the checks page).
    overview = client.get("/admin/").text
    assert "No failing checks" not in overview
    row = re.search(r"<code>disk-encrypted</code></td><td><a[^>]*>(\d+)</a>", overview)
    assert row and row.group(1) == "1"
    assert (
        "<code>is-linux</code>" not in overview.split("<h2>Failing checks</h2>")[1].split("<h2>")[0]
    )

    # Device page: the stored status is shown, coloured by its lowercase pill class.
    page = client.get(f"/admin/devices/{device_id}").text
    assert '<span class="pill fail">FAIL</span>' in page
    assert '<span class="pill pass">PASS</span>' in page

    # Checks page: mode, durations as people write them, counts per status as links.
    checks = client.get("/admin/checks").text
    disk = checks.split('id="check-disk-encrypted"')[1].split("</tr>")[0]
    linux = checks.split('id="check-is-linux"')[1].split("</tr>")[0]
    assert "warn then block (7 d)" in disk and "<td>24 h</td>" in disk
    assert "report only" in linux and "<td>90 s</td>" in linux
    link = re.search(r'id="count-disk-encrypted-fail" class="pill fail" href="([^"]+)">1<', disk)
    assert link, disk
    assert 'id="count-disk-encrypted-pass"' not in disk
    assert re.search(r'id="count-is-linux-pass" class="pill pass" href="[^"]+">1<', linux)
    assert "day," not in checks and "0:00:00" not in checks

    # The count's link opens the devices list filtered by that check and status.
    listed = client.get(link.group(1).replace("&amp;", "&")).text
    assert device_id in listed and 'id="check-filter"' in listed
    passing = client.get("/admin/devices", params={"check": "disk-encrypted", "status": "PASS"})
    assert passing.status_code == 200 and device_id not in passing.text
    bad = client.get("/admin/devices", params={"check": "disk-encrypted", "status": "nope"})
    assert bad.status_code == 400 and "bad_status" in bad.text

    # The admin API reads the same rows.
    token = svc.cli_json("api-token", "create", "views", "--scope", "read")["token"]
    api = httpx.Client(
        base_url=svc.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=15
    )
    summary = api.get("/overview").json()
    assert summary["failing_checks"] == [{"check_id": "disk-encrypted", "devices": 1}]
    detail = api.get(f"/devices/{device_id}").json()
    statuses = {r["check_id"]: r["status"] for r in detail["checks"]}
    assert statuses == {"disk-encrypted": "FAIL", "is-linux": "PASS"}
    assert detail["device"]["platform"] == "linux"
