"""`make run`'s demo: the service and an enrolled agent come up, and Ctrl-C stops both.

Also: a port already in use is named before anything starts (with how to pick
another), and the default output is what a person needs, the routine log lines
only with ``--verbose``.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.procs import base_env, free_port

ROUTINE = re.compile(r"\bINFO\b|alembic|Added job|Scheduler started|Running on http")


def _env(tmp_path, port: int, agent_port: int, sp_port: int) -> dict[str, str]:
    return base_env(
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "data"),
        DEVICETRUST_PUBLIC_URL=f"http://127.0.0.1:{port}",
        DEVICETRUST_AGENT_PORTS=str(agent_port),
        DEVICETRUST_DEMO_SP_PORT=str(sp_port),
    )


def _run_until_ready(env: dict[str, str], *args: str) -> tuple[str, list, int]:
    """Start the demo, wait for its ready banner, Ctrl-C it; (all output, children, status)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "idp_service", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    children: list = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        port = env["DEVICETRUST_PUBLIC_URL"].rsplit(":", 1)[1]
        agent_port = env["DEVICETRUST_AGENT_PORTS"]
        assert len(children) >= 2, "".join(lines)
        assert httpx.get(f"http://127.0.0.1:{agent_port}/v1/ping").json()["enrolled"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    return "".join(lines) + rest, children, proc.returncode


def test_demo_starts_enrolled_agent_and_stops_cleanly(tmp_path):
    port, agent_port, sp_port = free_port(), free_port(), free_port()
    output, children, status = _run_until_ready(_env(tmp_path, port, agent_port, sp_port))
    assert f"http://127.0.0.1:{port}/login" in output, output
    assert f"http://127.0.0.1:{sp_port}/" in output, output
    assert "trusted" in output and "devicetrust is running." in output
    assert status == 0
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    # What a person needs, not the processes' routine log lines (Alembic, APScheduler, ...).
    assert not ROUTINE.search(output), output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) <= 10, output


def test_demo_verbose_shows_the_log_lines(tmp_path):
    port, agent_port, sp_port = free_port(), free_port(), free_port()
    env = _env(tmp_path, port, agent_port, sp_port)
    output, _, status = _run_until_ready(env, "--verbose")
    assert status == 0
    assert f"http://127.0.0.1:{port}/login" in output
    # Alembic, the agent and gunicorn log at INFO; APScheduler's per-run lines stay off.
    for line in ("INFO alembic", "local channel listening", "[INFO]"):
        assert line in output, output


@pytest.mark.parametrize("taken", ["service", "sp", "agent"])
def test_demo_names_a_taken_port_and_starts_nothing(tmp_path, taken):
    port, agent_port, sp_port = free_port(), free_port(), free_port()
    busy = {"service": port, "sp": sp_port, "agent": agent_port}[taken]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", busy))
        squatter.listen()
        done = subprocess.run(
            [sys.executable, "-m", "idp_service", "demo"],
            env=_env(tmp_path, port, agent_port, sp_port),
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = done.stdout + done.stderr
        assert done.returncode != 0
        assert "Traceback" not in output, output
        assert str(busy) in output and "taken" in output, output
        hint = {
            "service": "make run PORT=",
            "sp": "--sp-port",
            "agent": "DEVICETRUST_AGENT_PORTS",
        }[taken]
        assert hint in output, output
        # Nothing started: no database made, the other ports still free.
        assert not (tmp_path / "data" / "devicetrust").exists()
        for other in {port, sp_port, agent_port} - {busy}:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", other))


def test_demo_port_option_is_checked_too(tmp_path):
    port, agent_port, sp_port = free_port(), free_port(), free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        env = _env(tmp_path, 8000, agent_port, sp_port)
        del env["DEVICETRUST_PUBLIC_URL"]
        done = subprocess.run(
            [sys.executable, "-m", "idp_service", "demo", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0 and f"port {port} (the service) is taken" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
