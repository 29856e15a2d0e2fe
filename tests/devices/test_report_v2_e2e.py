"""Report ceremony v2 end to end: a real service process and a real agent process (through a
recording HTTP proxy on loopback, which can also lose an answer), on SQLite and PostgreSQL.

One device lives through every recovery the protocol promises (docs/protocol.md §16.6):
the agent restarts and resumes its counter; its state is restored from an old backup (the
service answers ``report_counter_stale``, the agent re-establishes its counter with a
challenge-based reset); the answer to a delta is lost on the network (the next delta builds
on a document the service no longer holds: ``report_resync``, then the whole document); and
the service's database is restored to an older point (``report_resync`` again). After each,
the service holds exactly the agent's document, and every report the proxy saw is opened
to check that no counter was ever accepted twice.

The database backup is a real one of each kind: SQLite's online backup API, restored into
the live file under the running service; on PostgreSQL a ``pg_dump --format=custom`` taken
while the service runs, restored the way docs/deploy.md says (service stopped, database
dropped and created, ``pg_restore``, ``devicetrust audit checkpoint --restore``, service
started again on the same address).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from idp_service.devices.flag_tables import DeviceFlag
from idp_service.platform.db import make_engine
from idp_service.platform.keys import BOX_SECRET
from idp_service.platform.models import AuditEvent, Device, ServerSecret
from idp_service.posture.tables import DeviceFacts
from tests.conftest import PG_HOST, PG_PORT, PG_USER, _pg_admin
from tests.devices.test_report_replay_e2e import RecordingProxy, _ProxyHandler, _wait
from tests.procs import AgentProc, ServiceProc, free_port, make_agent, start_service
from trust_protocol import report_v2
from trust_protocol.report_keys import report_box_secret

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "posture" / "linux"
REPORT_PATHS = ("/agent/v2/report", "/agent/v2/report/full")


class LossyProxy(RecordingProxy):
    """The recording proxy, which can forward a request and then lose its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = _LossyHandler
        self.lose: set[str] = set()  # paths whose next answer is lost


class _LossyHandler(_ProxyHandler):
    server: LossyProxy

    def _forward(self) -> None:
        import httpx

        path = urlsplit(self.path).path
        if path not in self.server.lose:
            super()._forward()
            return
        self.server.lose.discard(path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = httpx.post(
            self.path, content=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        with self.server.lock:
            self.server.seen.append((path, body, -reply.status_code))  # delivered, answer lost
        self.close_connection = True  # the connection drops before the answer

    do_GET = do_POST = _forward


@pytest.fixture
def proxy():
    server = LossyProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class SqliteBackup:
    """SQLite's online backup API, both ways, with the service running."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.path = url.removeprefix("sqlite:///")
        self.copy = tmp / "db-backup.sqlite"

    def take(self) -> None:
        with sqlite3.connect(self.path) as live, sqlite3.connect(self.copy) as copy:
            live.backup(copy)

    def restore(self, svc: ServiceProc, engine) -> ServiceProc:
        with sqlite3.connect(self.copy) as copy, sqlite3.connect(self.path) as live:
            copy.backup(live)
        svc.cli("audit", "checkpoint", "--restore")
        return svc


class PostgresBackup:
    """``pg_dump --format=custom`` of the live database; restored as docs/deploy.md says."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.name = urlsplit(url).path.lstrip("/")
        self.dump = tmp / "db-backup.dump"
        self.tmp = tmp
        self.conn = ["-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER]

    def take(self) -> None:
        subprocess.run(
            ["pg_dump", *self.conn, "--format=custom", f"--file={self.dump}", self.name],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def restore(self, svc: ServiceProc, engine) -> ServiceProc:
        svc.stop()
        engine.dispose()
        port = urlsplit(svc.url).port
        assert port is not None
        shutil.move(svc.log_path, self.tmp / "service-before-restore.log")
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        subprocess.run(
            ["pg_restore", *self.conn, "--exit-on-error", "--single-transaction"]
            + ["--no-owner", "-d", self.name, str(self.dump)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        svc.cli("audit", "checkpoint", "--restore")
        return start_service(self.tmp, svc.env["DEVICETRUST_DATABASE_URL"], port=port)


def _device(engine, device_id):
    with engine.connect() as conn:
        return conn.execute(
            select(Device.report_counter, Device.report_digest, Device.state).where(
                Device.id == device_id
            )
        ).one()


def _stored_document(engine, device_id):
    with engine.connect() as conn:
        facts = conn.execute(
            select(DeviceFacts.stored).where(DeviceFacts.device_id == device_id)
        ).scalar_one()
    return {k: v for k, v in facts.items() if k not in report_v2.VOLATILE}


def _audit_codes(engine):
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEvent.action, AuditEvent.outcome, AuditEvent.code).order_by(AuditEvent.id)
        ).all()
    return [tuple(r) for r in rows if r[0].startswith("device.report")]


def _agent_state(agent: AgentProc) -> dict:
    return json.loads((agent.state_dir / "report_state.json").read_text())


def _reports_seen(proxy: LossyProxy, box_secret: bytes) -> list[tuple[str, int, str, int]]:
    """Every v2 report that went through the proxy, opened: (kind, counter, digest, status);
    a status below zero is a report the service answered but whose answer was lost."""
    with proxy.lock:
        seen = list(proxy.seen)
    reports = []
    for path, envelope, status in seen:
        if path in REPORT_PATHS:
            body = report_v2.open_report(envelope, report_box_secret=box_secret).body
            reports.append((body.kind, body.counter, body.digest, status))
    return reports


def test_agent_recovers_from_restart_backup_lost_answer_and_service_restore(
    tmp_path, database_url, proxy
):
    svc = start_service(tmp_path, database_url)
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    backup_kind = SqliteBackup if database_url.startswith("sqlite") else PostgresBackup
    db_backup = backup_kind(database_url, tmp_path)
    agent = make_agent(tmp_path, "v2", http_proxy=proxy.url)
    for name in ("no_proxy", "NO_PROXY"):
        agent.env.pop(name, None)
    running: list[AgentProc] = []

    def run(fixture: str) -> AgentProc:
        """Start a new agent process on the same state (a restart); it reports at once."""
        for old in running:
            old.stop()
        port = free_port()
        proc = AgentProc(
            state_dir=agent.state_dir,
            port=port,
            env={**agent.env, "DEVICETRUST_AGENT_PORTS": str(port)},
        )
        proc.start("--replay", str(FIXTURES / fixture), "--no-approvals", "--no-updates")
        running.append(proc)
        return proc

    try:
        assert agent.enroll(svc.url, svc.enroll_code("v2@example.com"))["state"] == "trusted"
        device_id = agent.cli_json("id")["device_id"]
        with engine.connect() as conn:
            secret = conn.execute(
                select(ServerSecret.material).where(ServerSecret.name == BOX_SECRET)
            ).scalar_one()
        box_secret = report_box_secret(bytes(secret))

        # First report: the whole document, once (v2 is advertised, so the agent speaks it).
        proc = run("luks2")
        assert _wait(lambda: _device(engine, device_id).report_counter >= 1), proc.log()
        first = _device(engine, device_id)
        assert proxy.bodies("/agent/v2/report/full") and not proxy.bodies("/agent/v1/report")
        mode = stat.S_IMODE((agent.state_dir / "report_state.json").stat().st_mode)
        assert mode == 0o600
        proc.stop()
        backup = tmp_path / "agent-backup"
        shutil.copytree(agent.state_dir, backup)
        db_backup.take()
        luks2 = _stored_document(engine, device_id)
        assert first.report_digest == report_v2.document_digest(luks2)
        assert _audit_codes(engine) == []  # accepted reports are not audited one by one

        # Restart and resume: the counter goes on; an unchanged report writes no facts.
        for expected in (2, 3):
            proc = run("luks2")
            assert _wait(lambda e=expected: _device(engine, device_id).report_counter >= e)
            proc.stop()
        assert _agent_state(agent)["counter"] == 3
        assert len(proxy.bodies("/agent/v2/report/full")) == 1

        # State restored from the old backup: counter 1 again. The service refuses it as
        # stale, the agent resets its counter with a challenge, and reports.
        for name in ("report_state.json", "report_acked.json"):
            shutil.copy2(backup / name, agent.state_dir / name)
        proc = run("luks2")
        assert _wait(lambda: _device(engine, device_id).report_counter >= 4), proc.log()
        proc.stop()
        assert _audit_codes(engine) == [
            ("device.report", "rejected", "report_counter_stale"),
            ("device.report_counter_reset", "ok", None),
        ]
        assert len(proxy.bodies("/agent/v2/report/reset")) == 1
        assert _device(engine, device_id).state == "trusted"

        # A lost answer: the service takes the delta, the agent never hears of it.
        proxy.lose.add("/agent/v2/report")
        proc = run("unencrypted")
        assert _wait(lambda: _device(engine, device_id).report_counter >= 5), proc.log()
        lost = _device(engine, device_id)
        unencrypted = _stored_document(engine, device_id)
        assert unencrypted != luks2 and lost.report_digest == report_v2.document_digest(unencrypted)
        assert _agent_state(agent)["digest"] == first.report_digest  # it never heard
        proc.stop()
        # The next report is built on the old document: resync, then the whole document.
        proc = run("unencrypted")
        assert _wait(lambda: _device(engine, device_id).report_counter >= 7), proc.log()
        proc.stop()
        assert _audit_codes(engine)[2:] == [("device.report", "rejected", "report_resync")]
        assert _agent_state(agent)["digest"] == lost.report_digest
        assert _stored_document(engine, device_id) == unencrypted

        # The service's database restored to the first report's point: counter 1 and the
        # luks2 document. The agent's counter is above it; its unchanged report claims a
        # document the service no longer holds: resync, the whole document, and done.
        # A checkpoint signed before the restore anchors audit rows the restore loses; the
        # restore acknowledges that with a `restore` checkpoint (docs/admin.md).
        svc.cli("audit", "checkpoint")
        checkpoints = Path(svc.env["DEVICETRUST_DATA_DIR"]) / "audit-checkpoints.jsonl"
        svc = db_backup.restore(svc, engine)
        assert _device(engine, device_id).report_counter == 1
        assert _stored_document(engine, device_id) == luks2
        assert _audit_codes(engine) == []  # the restored log predates every refusal
        proc = run("unencrypted")
        assert _wait(lambda: _device(engine, device_id).report_counter >= 9), proc.log()
        proc.stop()
        after = _device(engine, device_id)
        assert (after.report_counter, after.report_digest, after.state) == (
            9,
            lost.report_digest,
            "trusted",
        )
        assert _stored_document(engine, device_id) == unencrypted
        assert _agent_state(agent) | {"box_key": None} == {
            "counter": 9,
            "digest": lost.report_digest,
            "box_key": None,
        }
        assert _audit_codes(engine) == [("device.report", "rejected", "report_resync")]
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(DeviceFacts)).scalar_one() == 1
            assert conn.execute(select(func.count()).select_from(DeviceFlag)).scalar_one() == 0

        # Every report on the wire, opened: which was taken, which refused, and why. No
        # counter was accepted twice, and none went backwards, across all four recoveries.
        d_luks2, d_unenc = first.report_digest, lost.report_digest
        assert _reports_seen(proxy, box_secret) == [
            ("full", 1, d_luks2, 200),
            ("unchanged", 2, d_luks2, 200),  # restart
            ("unchanged", 3, d_luks2, 200),  # restart
            ("unchanged", 2, d_luks2, 409),  # state from the backup: stale, then a reset
            ("unchanged", 4, d_luks2, 200),
            ("delta", 5, d_unenc, -200),  # taken, answer lost
            ("delta", 6, d_unenc, 409),  # built on luks2: resync
            ("full", 7, d_unenc, 200),
            ("unchanged", 8, d_unenc, 409),  # the service restored to counter 1: resync
            ("full", 9, d_unenc, 200),
        ]
        # The audit log verifies against every checkpoint published, the lost rows reported
        # as restored, not as tampering.
        verified = svc.cli_json("audit", "verify", "--checkpoints", str(checkpoints))
        assert verified["ok"] and verified["restored"] and not verified["missing"], verified
    finally:
        for proc in running:
            proc.stop()
        svc.stop()
        engine.dispose()
