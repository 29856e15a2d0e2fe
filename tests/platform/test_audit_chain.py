"""The audit log is tamper-evident: edited, inserted and deleted rows are all detected,
and the database itself refuses ordinary updates and deletes. SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from idp_service.platform import audit, audit_chain


def _db(app):
    return app.extensions["devicetrust"].db


def _events(app, n):
    with _db(app).session() as s:
        for i in range(n):
            audit.record(s, "test.event", "ok", actor="tester", details={"i": i, "note": "é"})


def _untriggered(app, sql, **params):
    """Run a statement with the append-only triggers out of the way (an attacker with
    the table owner's rights)."""
    db = _db(app)
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
            conn.execute(text(sql), params)
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_no_delete"))
            conn.execute(text("DROP TRIGGER audit_events_seal_only"))
            conn.execute(text(sql), params)


def test_intact_log_verifies_and_exports_in_chain_order(service_ctx):
    _events(service_ctx, 25)
    report = audit_chain.verify(_db(service_ctx))
    assert report.ok and report.rows >= 25 and len(report.head) == 64
    rows = list(audit_chain.export(_db(service_ctx)))
    assert [r["chain_seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1]["chain_hash"] == report.head
    json.dumps(rows)  # JSON-ready
    # New rows extend the chain; the old head stays in it.
    _events(service_ctx, 3)
    again = audit_chain.verify(_db(service_ctx))
    assert again.ok and again.rows == report.rows + 3


def test_database_refuses_updates_and_deletes(service_ctx):
    _events(service_ctx, 2)
    audit_chain.seal(_db(service_ctx))
    db = _db(service_ctx)
    for sql in (
        "UPDATE audit_events SET outcome = 'denied'",
        "DELETE FROM audit_events",
        "UPDATE audit_events SET chain_hash = 'x'",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            with db.engine.begin() as conn:
                conn.execute(text(sql))
    assert audit_chain.verify(db).ok


def test_edited_row_is_detected(service_ctx):
    _events(service_ctx, 5)
    audit_chain.seal(_db(service_ctx))
    _untriggered(
        service_ctx,
        "UPDATE audit_events SET outcome = 'denied' WHERE id = "
        "(SELECT MIN(id) FROM audit_events WHERE action = 'test.event')",
    )
    report = audit_chain.verify(_db(service_ctx))
    assert not report.ok
    assert any("does not match its MAC (edited)" in p for p in report.problems)


def test_deleted_row_is_detected(service_ctx):
    _events(service_ctx, 5)
    audit_chain.seal(_db(service_ctx))
    _untriggered(
        service_ctx,
        "DELETE FROM audit_events WHERE id = "
        "(SELECT MAX(id) - 2 FROM audit_events WHERE action = 'test.event')",
    )
    report = audit_chain.verify(_db(service_ctx))
    assert any("missing (deleted)" in p for p in report.problems)


def test_inserted_row_is_detected_even_with_a_made_up_mac(service_ctx):
    _events(service_ctx, 3)
    db = _db(service_ctx)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_events (at, action, outcome, actor, mac) "
                "VALUES (:at, 'device.approve', 'ok', 'intruder', :mac)"
            ),
            {"at": "2026-01-01 00:00:00.000000", "mac": "ab" * 32},
        )
    report = audit_chain.verify(db)
    assert any("does not match its MAC" in p for p in report.problems)


def test_mac_needs_the_key():
    values = {"at": __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC),
              "action": "a", "outcome": "ok"}  # fmt: skip
    assert audit_chain.row_mac(values, b"k" * 32) != audit_chain.row_mac(values, b"j" * 32)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_verify_and_export(service_ctx, tmp_path):
    import subprocess
    import sys

    from tests.procs import base_env

    _events(service_ctx, 4)
    settings = service_ctx.extensions["devicetrust"].settings
    env = base_env(
        DEVICETRUST_DATABASE_URL=settings.database_url,
        DEVICETRUST_DATA_DIR=str(settings.data_dir),
    )

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "idp_service", "audit", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    ok = cli("verify", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    lines = cli("export").stdout.splitlines()
    assert len(lines) >= 4 and json.loads(lines[0])["chain_seq"] == 1
    _untriggered(service_ctx, "UPDATE audit_events SET actor = 'someone else' WHERE id = 1")
    bad = cli("verify")
    assert bad.returncode == 1 and "TAMPERED" in bad.stdout


def test_every_writer_of_the_audit_log_signs_its_rows(tmp_path, database_url):
    """A real sign-in (hot path), a SCIM request, API and enrollment events: all verify."""
    import subprocess
    import sys
    import time

    import httpx

    from tests.procs import make_agent, start_service

    svc = start_service(tmp_path, database_url)
    agent = make_agent(tmp_path, "audited")
    try:
        agent.enroll(svc.url, svc.enroll_code("ivy@example.com"))
        agent.start()
        browser = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
        txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
        challenge = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
        httpx.post(
            f"http://127.0.0.1:{agent.port}/v1/challenge",
            json={"challenge": challenge},
            headers={"Origin": svc.url},
        )
        deadline = time.monotonic() + 10
        while browser.get(f"/login/{txn}/status").json()["status"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        token = json.loads(svc.cli("scim-token", "create", "audit-test", "--json").stdout)["token"]
        scim = httpx.get(f"{svc.url}/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
        assert scim.status_code == 200
        verify = subprocess.run(
            [sys.executable, "-m", "idp_service", "audit", "verify", "--json"],
            env=svc.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        report = json.loads(verify.stdout)
        assert report["ok"], report["problems"]
        assert report["rows"] >= 5
    finally:
        agent.stop()
        svc.stop()
