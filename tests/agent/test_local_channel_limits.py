"""The local channel's limits and restarts, against real agent processes on loopback.

Strict bodies (deep nesting is a 400, not a dropped connection), a refused body
closing its connection, the cap on concurrent connections, the total deadline
per connection (a client trickling bytes is cut off), an immediate restart with
the old connections in TIME_WAIT, and a second agent on a busy port named in the
error. Every wait is for an event (an answer, a closed socket), never a fixed sleep.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import httpx
import psutil
import pytest

from agent.local_channel import MAX_CONNECTIONS, MAX_REQUEST
from tests.procs import make_agent, start_service


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("channel-limits")
    svc = start_service(tmp, f"sqlite:///{tmp / 'db.sqlite'}")
    agent = make_agent(tmp, "limits")
    agent.enroll(svc.url, svc.enroll_code("limits@example.com"))
    agent.start("--no-callback")
    yield svc, agent
    agent.stop()
    svc.stop()


def _url(agent, path: str) -> str:
    return f"http://127.0.0.1:{agent.port}{path}"


def test_deeply_nested_body_is_malformed_not_a_dropped_connection(enrolled):
    svc, agent = enrolled
    for body in (
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"challenge": "a", "challenge": "b"}',
        b'\xef\xbb\xbf{"challenge": "a"}',
        b'{"challenge": "\\ud800"}',
        b'{"challenge": NaN}',
    ):
        r = httpx.post(_url(agent, "/v1/challenge"), content=body, headers={"Origin": svc.url})
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed", body[:30]
    assert "Traceback" not in agent.log()


def test_refused_body_closes_the_connection_and_the_client_goes_on(enrolled):
    svc, agent = enrolled
    with httpx.Client() as client:
        for _ in range(3):
            r = client.post(
                _url(agent, "/v1/challenge"),
                content=b"x" * (MAX_REQUEST * 4),
                headers={"Origin": svc.url},
            )
            assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
            assert r.headers["connection"] == "close"
            assert client.get(_url(agent, "/v1/ping")).json()["agent"] == "devicetrust"
        # A refusal before the body is read (bad Host) closes too.
        r = client.post(
            _url(agent, "/v1/challenge"), content=b"{}" * 100, headers={"Host": "evil.example"}
        )
        assert r.status_code == 403 and r.headers["connection"] == "close"
        assert client.get(_url(agent, "/v1/ping")).status_code == 200


def _ping_raw(port: int) -> bytes:
    """A ping that asks the agent to close (so the agent's side ends in TIME_WAIT)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


def test_connections_beyond_the_cap_get_a_quick_503(enrolled):
    _, agent = enrolled
    idle = [
        socket.create_connection(("127.0.0.1", agent.port), timeout=10)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        # Each idle connection holds a slot; the agent accepts in order, so the next is refused.
        with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as extra:
            answer = b""
            while chunk := extra.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"Connection: close" in answer and b'"busy"' in answer
    finally:
        for s in idle:
            s.close()
    # The slots come back once those connections are gone.
    for _ in range(200):
        if _ping_raw(agent.port).startswith(b"HTTP/1.1 200 "):
            break
    else:
        pytest.fail("the agent did not serve again after the idle connections closed")


def test_a_client_trickling_bytes_is_cut_off_at_the_connection_deadline(enrolled):
    _, agent = enrolled
    cut = threading.Event()
    sent = []

    with socket.create_connection(("127.0.0.1", agent.port), timeout=30) as s:

        def trickle() -> None:
            # One byte every 0.5 s, well inside the 2 s per-read timeout, for up to 5 minutes.
            line = b"GET /v1/ping?" + b"a" * 600
            for byte in line:
                if cut.wait(0.5):
                    return
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    return
                sent.append(byte)

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            data = s.recv(4096)  # blocks until the agent answers or closes
        except ConnectionResetError:
            data = b""
        cut.set()
        thread.join(10)
    assert data == b""  # closed without an answer
    assert len(sent) < 600  # ... while the client was still trickling


def test_restart_right_after_stop_binds_despite_time_wait(tmp_path):
    agent = make_agent(tmp_path, "restart")
    agent.start()
    try:
        for _ in range(5):
            assert _ping_raw(agent.port).startswith(b"HTTP/1.1 200 ")
        waiting = [
            c
            for c in psutil.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == agent.port and c.status == psutil.CONN_TIME_WAIT
        ]
        assert waiting, "the agent's side of the closed connections should be in TIME_WAIT"
        agent.stop()
        agent.start()  # the same port, at once
        assert _ping_raw(agent.port).startswith(b"HTTP/1.1 200 ")
    finally:
        agent.stop()


def test_second_agent_on_a_busy_port_is_named(tmp_path):
    first = make_agent(tmp_path, "first")
    first.start()
    try:
        second = make_agent(tmp_path, "second", port=first.port)
        out = subprocess.run(
            [sys.executable, "-m", "agent", "--state-dir", str(second.state_dir), "run"],
            env=second.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0
        assert f"127.0.0.1:{first.port} is in use by another devicetrust agent" in out.stderr
        assert f"pid {first.proc.pid}" in out.stderr
        # The first one is unharmed.
        assert _ping_raw(first.port).startswith(b"HTTP/1.1 200 ")
    finally:
        first.stop()
