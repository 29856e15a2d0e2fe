"""Benchmark: the admin console's pages at fleet scale (issue 6: fast on 100,000 devices).

Seeds a migrated database with N devices (owned by N/20 users, with failing
check results on a tenth of them and audit events) and times, through the real
Flask app and a bootstrap-signed-in test client, each console page a person
clicks: the overview, the device list and its next page, state and platform
filters, searches by serial, hostname and user prefix, exact id, the pending
queue, a device's detail, the audit log. Prints the median of a few runs.

Usage: python bench/admin_console.py [--devices 100000] [--database-url URL]
(the default is a fresh SQLite file in a temporary directory).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

PLATFORMS = ("linux", "macos", "windows")
STATES = ("trusted",) * 17 + ("pending", "revoked", "denied")


def seed(url: str, devices: int) -> dict[str, str]:
    """Insert ``devices`` devices and their owners into the migrated database at ``url``."""
    from idp_service.platform.db import Database
    from idp_service.platform.models import AuditEvent, Device, User, utcnow
    from idp_service.posture.tables import CheckResultRow

    db = Database(url)
    now = utcnow()
    n_users = max(1, devices // 20)
    users = [
        {
            "id": str(uuid.uuid4()),
            "user_name": f"user{i:06}@example.com",
            "user_name_lower": f"user{i:06}@example.com",
            "email": f"user{i:06}@example.com",
            "active": True,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n_users)
    ]
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for i in range(devices):
        device_id = str(uuid.uuid4())
        seen = now - dt.timedelta(seconds=i * 7)
        rows.append(
            {
                "id": device_id,
                "user_id": users[i % n_users]["id"],
                "state": STATES[i % len(STATES)],
                "sign_key": os.urandom(32),
                "box_key": os.urandom(32),
                "hardware_uuid": str(uuid.uuid4()),
                "serial": f"SN{i:08}",
                "hostname": f"host-{i:06}",
                "platform": PLATFORMS[i % 3],
                "agent_version": "0.1.0",
                "first_seen": seen,
                "last_seen": seen,
                "created_at": seen,
                "updated_at": seen,
            }
        )
        if i % 10 == 0:
            results.append(
                {
                    "device_id": device_id,
                    "check_id": f"check-{i % 7}",
                    "status": "fail",
                    "evaluated_at": seen,
                    "first_failed_at": seen,
                }
            )
        events.append(
            {
                "at": seen,
                "action": "device.register",
                "outcome": "ok",
                "device_id": device_id,
                "user_id": users[i % n_users]["id"],
            }
        )
    with db.session() as s:
        for table, values in (
            (User, users),
            (Device, rows),
            (CheckResultRow, results),
            (AuditEvent, events),
        ):
            for start in range(0, len(values), 5000):
                s.execute(insert(table), values[start : start + 5000])
    with db.engine.begin() as conn:  # statistics, as a long-running database has them
        conn.exec_driver_sql("ANALYZE")
    db.dispose()
    return {"device_id": rows[len(rows) // 2]["id"], "user": users[n_users // 3]["user_name"]}


def time_pages(url: str, sample: dict[str, str], *, runs: int = 5) -> dict[str, float]:
    """Median milliseconds of each console page, rendered by the real app."""
    import re

    from idp_service.admin import bootstrap
    from idp_service.app import create_app
    from idp_service.platform.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            Settings.from_env({"DEVICETRUST_DATABASE_URL": url, "DEVICETRUST_DATA_DIR": tmp})
        )
        db = app.extensions["devicetrust"].db
        with db.session() as s:
            token, _ = bootstrap.issue(s, actor="bench")
        client = app.test_client()
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin/bootstrap").text)
        resp = client.post("/admin/bootstrap", data={"token": token, "csrf": csrf.group(1)})
        assert resp.status_code == 303, resp.status_code
        first = client.get("/admin/devices").text
        nxt = re.search(r'id="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
        pages = {
            "overview": "/admin/",
            "devices (first page)": "/admin/devices",
            "devices (next page)": nxt,
            "devices state=pending": "/admin/devices?state=pending",
            "devices platform=macos": "/admin/devices?platform=macos",
            "search serial prefix": "/admin/devices?q=SN0004",
            "search hostname prefix": "/admin/devices?q=host-0999",
            "search user prefix": f"/admin/devices?q={sample['user'][:9]}",
            "search exact id": f"/admin/devices?q={sample['device_id']}",
            "search no match": "/admin/devices?q=zzz-nothing",
            "pending queue": "/admin/pending",
            "device detail": f"/admin/devices/{sample['device_id']}",
            "users": "/admin/users",
            "audit log": "/admin/audit",
            "audit by device": f"/admin/audit?device_id={sample['device_id']}",
        }
        timings: dict[str, float] = {}
        for name, path in pages.items():
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                resp = client.get(path)
                samples.append((time.perf_counter() - t0) * 1000)
                assert resp.status_code == 200, (path, resp.status_code)
            timings[name] = statistics.median(samples)
        db.dispose()
    return timings


def run(url: str, devices: int) -> str:
    """Migrate, seed, time; the report as text."""
    from idp_service.platform.migrate import upgrade

    upgrade(url)
    t0 = time.perf_counter()
    sample = seed(url, devices)
    seeded = time.perf_counter() - t0
    timings = time_pages(url, sample)
    backend = url.split(":", 1)[0]
    lines = [f"admin console, {devices} devices on {backend} (seeded in {seeded:.1f} s)"]
    lines += [f"  {name:26} {ms:8.1f} ms" for name, ms in timings.items()]
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test runs this); figures mean nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.devices = 300
    if args.database_url:
        print(run(args.database_url, args.devices))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(run(f"sqlite:///{tmp}/bench.db", args.devices))


if __name__ == "__main__":
    main()
