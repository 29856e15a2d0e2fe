"""A captured posture report replayed after the agent restarted, end to end, on SQLite and
PostgreSQL: a real service process, a real agent process whose traffic passes through a
recording HTTP proxy (an observer on the wire), then a restarted agent (a new random
``platform.instance``). The agent speaks report v2 (the service advertises it), so the
captured report is a v2 report and its replay gets 409 ``report_counter_stale``; it must
change nothing but the audit log: the counter is judged before clone detection, which would
otherwise take the replayed instance for a second agent and suspend the device
(docs/protocol.md §13, §16). v1's single use is tested in test_report_ceremony.py.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from idp_service.devices.flag_tables import DeviceFlag
from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Base, Device
from idp_service.posture.tables import DeviceFacts
from tests.procs import AgentProc, free_port, make_agent, start_service

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "posture" / "linux"


class RecordingProxy(ThreadingHTTPServer):
    """A forward HTTP proxy on loopback that passes requests on and keeps their bodies."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, bytes, int]] = []  # (path, request body, response status)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self, path: str, status: int = 200) -> list[bytes]:
        with self.lock:
            return [body for p, body, s in self.seen if p == path and s == status]


class _ProxyHandler(BaseHTTPRequestHandler):
    server: RecordingProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "content-length", "proxy-connection", "connection")
        }
        reply = httpx.request(self.command, self.path, content=body, headers=headers, timeout=30)
        with self.server.lock:
            self.server.seen.append((urlsplit(self.path).path, body, reply.status_code))
        self.send_response(reply.status_code)
        for key in ("content-type",):
            if key in reply.headers:
                self.send_header(key, reply.headers[key])
        self.send_header("Content-Length", str(len(reply.content)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.content)

    do_GET = do_POST = _forward

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def proxy():
    server = RecordingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def _snapshot(engine, device_id):
    """Everything a report or detection may change, and the size of every table."""
    with engine.connect() as conn:
        device = conn.execute(select(Device).where(Device.id == device_id)).one()
        facts = conn.execute(select(DeviceFacts).where(DeviceFacts.device_id == device_id)).one()
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }
    return {
        "device": {c.name: getattr(device, c.name) for c in Device.__table__.columns},
        "facts": {c.name: getattr(facts, c.name) for c in DeviceFacts.__table__.columns},
        "counts": counts,
    }


def test_replayed_report_after_agent_restart_is_refused_and_changes_nothing(
    tmp_path, database_url, proxy
):
    svc = start_service(tmp_path, database_url)
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    # The agent talks to its service through the proxy (urllib honours http_proxy).
    first = make_agent(tmp_path, "replayed", http_proxy=proxy.url)
    for name in ("no_proxy", "NO_PROXY"):
        first.env.pop(name, None)
    second = None
    try:
        assert first.enroll(svc.url, svc.enroll_code("rhea@example.com"))["state"] == "trusted"
        device_id = first.cli_json("id")["device_id"]
        first.start("--replay", str(FIXTURES / "luks2"), "--no-approvals")
        captured = _wait(lambda: proxy.bodies("/agent/v2/report/full"))
        assert captured, "the agent's report never went through the proxy:\n" + first.log()
        envelope = captured[0]
        first.stop()

        # The agent restarts: a new process, a new random instance id, and a report of its own.
        port = free_port()  # the old one may linger in TIME_WAIT
        env = {k: v for k, v in first.env.items() if k != "http_proxy"}
        env["DEVICETRUST_AGENT_PORTS"] = str(port)
        second = AgentProc(state_dir=first.state_dir, port=port, env=env)
        second.start("--replay", str(FIXTURES / "luks2"), "--no-approvals")

        def reported_twice():
            with engine.connect() as conn:
                counter = conn.execute(
                    select(Device.report_counter).where(Device.id == device_id)
                ).scalar_one_or_none()
            return counter is not None and counter >= 2

        assert _wait(reported_twice), "the restarted agent never reported:\n" + second.log()
        second.stop()
        with engine.connect() as conn:
            row = conn.execute(select(Device).where(Device.id == device_id)).one()
        assert row.state == "trusted"
        # The restart was seen: the captured answer's instance is now the previous one.
        assert row.agent_instance_prev is not None and row.agent_instance_prev != row.agent_instance

        before = _snapshot(engine, device_id)
        replay = httpx.post(svc.url + "/agent/v2/report/full", content=envelope, timeout=10)
        assert replay.status_code == 409, replay.text
        assert replay.json()["error"]["code"] == "report_counter_stale"
        after = _snapshot(engine, device_id)

        assert after["device"] == before["device"]
        assert after["device"]["state"] == "trusted"
        assert after["facts"] == before["facts"]
        changed = {t for t in before["counts"] if before["counts"][t] != after["counts"][t]}
        assert changed == {"audit_events"}
        assert after["counts"]["audit_events"] == before["counts"]["audit_events"] + 1
        with engine.connect() as conn:
            flags = conn.execute(
                select(func.count())
                .select_from(DeviceFlag)
                .where(DeviceFlag.device_id == device_id)
            ).scalar_one()
            last = conn.execute(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).one()
        assert flags == 0
        assert (last.action, last.outcome, last.code) == (
            "device.report",
            "rejected",
            "report_counter_stale",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
        svc.stop()
        engine.dispose()
