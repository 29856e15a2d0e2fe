"""Posture at ingest is incremental: a check is evaluated again exactly when its inputs change.

Its inputs are the check itself, the platform and the fact sections it reads. A
report that repeats the stored document evaluates nothing and rewrites only the
per-report fields; a changed section re-evaluates the checks that read it; an
edited, added or removed check is applied at the next report; sign-in still
judges the latest document, per-report fields included. Runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from unittest.mock import ANY

import pytest
from sqlalchemy import func, select

from idp_service.app import create_app
from idp_service.platform.config import Settings
from idp_service.platform.models import AuditEvent
from idp_service.posture.tables import (
    CheckResultHistory,
    CheckResultRow,
    DeviceFacts,
    DeviceFactsHistory,
)
from posture_checks.evaluator import Status
from tests.devices.test_report_ceremony import _enrolled, _report

CHECK = """\
id: {id}
title: T
description: D
platforms: [linux, macos]
severity: high
expression: {expression}
enforcement: block
max_fact_age: 1h
remediation: Fix it.
"""


def _write(checks_dir, check_id, expression):
    text = CHECK.format(id=check_id, expression=json.dumps(expression))  # JSON is YAML
    (checks_dir / f"{check_id}.yaml").write_text(text)


@pytest.fixture
def app(migrated_url, tmp_path):
    checks = tmp_path / "checks"
    checks.mkdir()
    _write(checks, "firewall", "firewall.enabled")
    _write(checks, "disk", "disk_encryption.system_volume_encrypted")
    _write(checks, "packages", '!("telnetd" in packages.installed)')
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": migrated_url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            "DEVICETRUST_CHECKS_DIR": str(checks),
            "DEVICETRUST_BUILTIN_CHECKS": "none",
        }
    )
    app = create_app(settings)
    app.extensions["devicetrust"].posture.loader.min_interval = 0  # see edits at once
    app.checks_dir = checks
    yield app
    app.extensions["devicetrust"].db.dispose()


def _facts(uptime=100):
    return {
        "schema_version": 1,
        "collected_at": dt.datetime.now(dt.UTC).isoformat(),
        "uptime_seconds": uptime,
        "os": {"family": "linux", "name": "Debian", "version": "12"},
        "firewall": {"enabled": True},
        "disk_encryption": {"system_volume_encrypted": True},
        "packages": {"manager": "dpkg", "installed": {f"pkg{i}": "1.0" for i in range(500)}},
    }


class Device:
    def __init__(self, app, name="inc"):
        self.app = app
        self.client = app.test_client()
        self.keys = _enrolled(app, self.client, name)
        self.db = app.extensions["devicetrust"].db

    def report(self, facts):
        facts = copy.deepcopy(facts)
        facts["collected_at"] = dt.datetime.now(dt.UTC).isoformat()
        sealed = _report(self.app, self.client, self.keys, facts)
        resp = self.client.post("/agent/v1/report", data=sealed)
        assert resp.status_code == 200, resp.json

    def results(self):
        with self.db.session() as s:
            rows = s.scalars(
                select(CheckResultRow).where(CheckResultRow.device_id == self.keys.device_id)
            ).all()
            return {r.check_id: (r.status, r.evaluated_at, r.inputs) for r in rows}

    def count(self, model, **where):
        with self.db.session() as s:
            q = select(func.count()).select_from(model)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return s.execute(q).scalar_one()

    def latest(self):
        with self.db.session() as s:
            return s.get(DeviceFacts, self.keys.device_id)


def test_repeated_report_evaluates_nothing_and_writes_little(app):
    device = Device(app)
    facts = _facts()
    device.report(facts)
    first = device.results()
    assert {k: v[0] for k, v in first.items()} == {
        "firewall": "PASS",
        "disk": "PASS",
        "packages": "PASS",
    }
    history = device.count(DeviceFactsHistory, device_id=device.keys.device_id)
    changes = device.count(CheckResultHistory, device_id=device.keys.device_id)
    stored = device.latest()

    for uptime in (400, 700):
        device.report({**facts, "uptime_seconds": uptime})

    assert device.results() == first  # nothing re-evaluated: same evaluated_at everywhere
    assert device.count(DeviceFactsHistory, device_id=device.keys.device_id) == history
    assert device.count(CheckResultHistory, device_id=device.keys.device_id) == changes
    latest = device.latest()
    assert latest.report_seq == 3 and latest.received_at > stored.received_at
    assert latest.stored["uptime_seconds"] == 100  # the stored document was not rewritten...
    assert latest.facts["uptime_seconds"] == 700  # ...but the latest values are kept
    assert latest.facts["collected_at"] != stored.facts["collected_at"]
    assert latest.facts == {**facts, "uptime_seconds": 700, "collected_at": ANY}
    assert latest.collected_at > stored.collected_at


def test_changed_section_re_evaluates_exactly_its_checks(app):
    device = Device(app)
    facts = _facts()
    device.report(facts)
    before = device.results()

    facts["firewall"] = {"enabled": False}
    device.report(facts)
    after = device.results()
    assert after["firewall"][0] == "FAIL" and after["firewall"][1] > before["firewall"][1]
    assert after["disk"] == before["disk"] and after["packages"] == before["packages"]
    assert device.count(DeviceFactsHistory, device_id=device.keys.device_id) == 2
    with device.db.session() as s:
        audit = s.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "posture.change",
                AuditEvent.device_id == device.keys.device_id,
            )
        ).all()
    assert audit[-1].details["changes"] == [{"check": "firewall", "from": "PASS", "to": "FAIL"}]

    # One package more: only the check reading packages runs, and its result flips.
    facts["packages"]["installed"]["telnetd"] = "0.17"
    device.report(facts)
    again = device.results()
    assert again["packages"][0] == "FAIL" and again["packages"][1] > after["packages"][1]
    assert again["firewall"] == after["firewall"] and again["disk"] == after["disk"]

    # A new platform re-evaluates everything (INAPPLICABLE decides before any fact).
    facts["os"] = {"family": "windows", "version": "10"}
    device.report(facts)
    assert {v[0] for v in device.results().values()} == {"INAPPLICABLE"}


def test_catalog_edits_apply_at_the_next_report(app):
    device = Device(app)
    facts = _facts()
    device.report(facts)
    before = device.results()

    _write(app.checks_dir, "disk", "!disk_encryption.system_volume_encrypted")  # edited
    _write(app.checks_dir, "screen", "screen_lock.all_enabled")  # added; the fact is absent
    (app.checks_dir / "packages.yaml").unlink()  # removed: its row is left as it was
    device.report(facts)  # the same facts
    after = device.results()
    assert after["disk"][0] == "FAIL" and after["disk"][1] > before["disk"][1]
    assert after["screen"][0] == "UNKNOWN"
    assert after["firewall"] == before["firewall"] and after["packages"] == before["packages"]

    device.report(facts)
    assert device.results() == after


def test_checks_reading_per_report_fields_run_every_time(app):
    _write(app.checks_dir, "uptime", "uptime_seconds < 1000")
    device = Device(app)
    facts = _facts(uptime=100)
    device.report(facts)
    assert device.results()["uptime"][0] == "PASS"
    device.report({**facts, "uptime_seconds": 5000})
    assert device.results()["uptime"][0] == "FAIL"
    assert device.results()["firewall"][0] == "PASS"

    # Sign-in judges the latest document, per-report fields included.
    posture = app.extensions["devicetrust"].posture
    with device.db.session() as s:
        verdict = posture.for_login(s, device.keys.device_id, "u", "inc@example.com", [])
    statuses = {o.check.id: o.result.status for o in verdict.outcomes}
    assert statuses["uptime"] is Status.FAIL and statuses["firewall"] is Status.PASS


def test_results_from_before_the_upgrade_are_recomputed(app):
    device = Device(app)
    facts = _facts()
    device.report(facts)
    first = device.results()
    # Rows written before input keys existed carry none, nor do their facts.
    with device.db.session() as s:
        s.execute(CheckResultRow.__table__.update().values(inputs=None, status="FAIL"))
        s.execute(DeviceFacts.__table__.update().values(inputs=None, digest=None))
    device.report(facts)
    again = device.results()
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in first.items()}
    assert all(v[2] is not None and v[1] > first[k][1] for k, v in again.items())


@pytest.mark.postgres
def test_concurrent_reports_of_one_device_leave_results_matching_the_latest_facts(
    postgres_url, tmp_path
):
    """Reports of one device are applied one at a time (the device row is locked first), so
    a report that repeats older facts can never keep a result computed for other facts."""
    from concurrent.futures import ThreadPoolExecutor

    from idp_service.platform.migrate import upgrade

    upgrade(postgres_url)
    checks = tmp_path / "checks"
    checks.mkdir()
    _write(checks, "firewall", "firewall.enabled")
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": postgres_url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            "DEVICETRUST_CHECKS_DIR": str(checks),
            "DEVICETRUST_BUILTIN_CHECKS": "none",
        }
    )
    app = create_app(settings)
    try:
        device = Device(app, "race")
        device.report(_facts())
        for _ in range(5):
            sealed = []
            for i in range(8):
                facts = _facts(uptime=i)
                facts["firewall"] = {"enabled": i % 2 == 0}
                sealed.append(_report(app, device.client, device.keys, facts))

            def post(envelope):
                return app.test_client().post("/agent/v1/report", data=envelope).status_code

            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(post, sealed)) == {200}
            latest = device.latest()
            expected = "PASS" if latest.facts["firewall"]["enabled"] else "FAIL"
            assert device.results()["firewall"][0] == expected
    finally:
        app.extensions["devicetrust"].db.dispose()
