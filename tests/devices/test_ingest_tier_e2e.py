"""The report ingest tier (``devicetrust serve-ingest``, granian) end to end, on PostgreSQL.

A real service process and, beside it, the ingest tier on the same database. A real agent
enrolls through the tier and reports through it: its first report is the whole document,
the next ones unchanged reports that the quick path takes. The tier is then attacked over
the wire with keep-alive clients: oversized, malformed, replayed and forged reports get
their stable codes and audit events, a body refused unread ends its connection, and no
worker dies.
"""

from __future__ import annotations

import time

import pytest
import requests
from sqlalchemy import select

from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Device
from tests.procs import AgentProc, free_port, make_agent, start_ingest, start_service
from trust_protocol import DeviceKeys, report_v2
from trust_protocol.encoding import b64d

pytestmark = pytest.mark.postgres
FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "posture"


def _wait(check, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _device(engine, device_id):
    with engine.connect() as conn:
        return conn.execute(
            select(Device.report_counter, Device.report_digest, Device.state).where(
                Device.id == device_id
            )
        ).one()


def _rejections(engine) -> list[str | None]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEvent.code).where(
                AuditEvent.action == "device.report", AuditEvent.outcome == "rejected"
            )
        ).all()
    return [r[0] for r in rows]


def test_a_real_agent_reports_through_the_tier_and_attacks_get_their_codes(tmp_path, postgres_url):
    svc = start_service(tmp_path, postgres_url)
    tier = start_ingest(tmp_path, svc, workers=2)
    engine = make_engine(postgres_url)
    agent = make_agent(tmp_path, "tier")
    running: list[AgentProc] = []
    try:
        code = svc.enroll_code("tier@example.com")
        assert agent.enroll(tier.url, code)["state"] == "trusted"
        device_id = agent.cli_json("id")["device_id"]
        for expected in (1, 2, 3):  # the whole document, then unchanged reports
            port = free_port()
            proc = AgentProc(
                state_dir=agent.state_dir,
                port=port,
                env={**agent.env, "DEVICETRUST_AGENT_PORTS": str(port)},
            )
            proc.start(
                "--replay", str(FIXTURES / "linux" / "luks2"), "--no-approvals", "--no-updates"
            )
            running.append(proc)
            assert _wait(lambda e=expected: _device(engine, device_id).report_counter >= e), (
                proc.log() + tier.log()
            )
            proc.stop()
        counter, digest, state = _device(engine, device_id)
        assert (counter, state) == (3, "trusted") and digest is not None
        assert "/agent/v2/report" not in svc.log()  # every report went to the tier

        with requests.Session() as session:
            info = session.get(tier.url + "/agent/v1/server").json()
            box = b64d(info["report"]["box_key"], length=32)
            # Forged: a well-formed unchanged report for this device, signed by another key.
            forged = report_v2.seal_report(
                report_v2.ReportBody(
                    device_id=device_id,
                    counter=counter + 100,
                    clock=time.time(),
                    agent_version="x",
                    platform={},
                    digest=digest,
                ),
                DeviceKeys.generate("forger").signing_key,
                box,
            )
            for body, status, code in (
                (forged, 403, "device_key_mismatch"),
                (b'{"v": 2, "epk": "AAAA", "box": "AAAA"}', 400, "malformed"),
                (b"[" * 5000 + b"]" * 5000, 400, "malformed"),
                (b"\xff\xfe not json", 400, "malformed"),
            ):
                r = session.post(tier.url + "/agent/v2/report", data=body)
                assert r.status_code == status, (r.status_code, r.text)
                assert r.json()["error"]["code"] == code
                assert r.headers.get("connection", "keep-alive").lower() != "close"
            # Oversized: refused unread, and the connection is ended, not left to guess.
            for path, size in (
                ("/agent/v2/report", report_v2.MAX_SMALL + 1),
                ("/agent/v2/report/full", report_v2.MAX_FULL + 1),
            ):
                r = session.post(tier.url + path, data=b"x" * size)
                assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", path
                assert r.headers["connection"].lower() == "close", path
                assert session.get(tier.url + "/healthz").status_code == 200
        assert _device(engine, device_id) == (counter, digest, "trusted")  # nothing moved
        rejected = _rejections(engine)
        for code in ("device_key_mismatch", "malformed", "too_large"):
            assert code in rejected, rejected
        assert "Traceback" not in tier.log() and " 500" not in tier.log()
    finally:
        for proc in running:
            proc.stop()
        tier.stop()
        svc.stop()
        engine.dispose()
