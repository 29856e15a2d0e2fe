"""Report ceremony v2 end to end: a real service process and a real agent process (through a
recording HTTP proxy on loopback, which can also lose an answer), on SQLite.

One device lives through every recovery the protocol promises (docs/protocol.md §16.6):
the agent restarts and resumes its counter; its state is restored from an old backup (the
service answers ``report_counter_stale``, the agent re-establishes its counter with a
challenge-based reset); the answer to a delta is lost on the network (the next delta builds
on a document the service no longer holds: ``report_resync``, then the whole document); and
the service's database is restored to an older point (``report_resync`` again). After each,
the service holds exactly the agent's document.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Device
from idp_service.posture.tables import DeviceFacts
from tests.devices.test_report_replay_e2e import RecordingProxy, _ProxyHandler, _wait
from tests.procs import AgentProc, free_port, make_agent, start_service
from trust_protocol import report_v2

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "posture" / "linux"


class LossyProxy(RecordingProxy):
    """The recording proxy, which can forward a request and then lose its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = _LossyHandler
        self.lose: set[str] = set()  # paths whose next answer is lost


class _LossyHandler(_ProxyHandler):
    server: LossyProxy

    def _forward(self) -> None:
        from urllib.parse import urlsplit

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
        rows = conn.execute(select(AuditEvent.action, AuditEvent.outcome, AuditEvent.code)).all()
    return [tuple(r) for r in rows if r[0].startswith("device.report")]


def _agent_state(agent: AgentProc) -> dict:
    return json.loads((agent.state_dir / "report_state.json").read_text())


def test_agent_recovers_from_restart_backup_lost_answer_and_service_restore(
    tmp_path, sqlite_url, proxy
):
    svc = start_service(tmp_path, sqlite_url)
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    db_path = sqlite_url.removeprefix("sqlite:///")
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
        db_backup = tmp_path / "db-backup.sqlite"
        with sqlite3.connect(db_path) as live, sqlite3.connect(db_backup) as copy:
            live.backup(copy)
        luks2 = _stored_document(engine, device_id)
        assert first.report_digest == report_v2.document_digest(luks2)

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
        codes = _audit_codes(engine)
        assert ("device.report", "rejected", "report_counter_stale") in codes
        assert ("device.report_counter_reset", "ok", None) in codes
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
        assert ("device.report", "rejected", "report_resync") in _audit_codes(engine)
        assert _agent_state(agent)["digest"] == lost.report_digest
        assert _stored_document(engine, device_id) == unencrypted

        # The service's database restored to the first report's point: counter 1 and the
        # luks2 document. The agent's counter is above it; its unchanged report claims a
        # document the service no longer holds: resync, the whole document, and done.
        with sqlite3.connect(db_backup) as copy, sqlite3.connect(db_path) as live:
            copy.backup(live)
        assert _device(engine, device_id).report_counter == 1
        proc = run("unencrypted")
        assert _wait(lambda: _device(engine, device_id).report_counter >= 9), proc.log()
        proc.stop()
        assert _stored_document(engine, device_id) == unencrypted
        assert _device(engine, device_id).report_digest == lost.report_digest
        # The restored audit log predates every resync: this one is the restore's.
        assert ("device.report", "rejected", "report_resync") in _audit_codes(engine)
        assert _device(engine, device_id).state == "trusted"
    finally:
        for proc in running:
            proc.stop()
        svc.stop()
        engine.dispose()
