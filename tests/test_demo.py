"""`make run`'s demo: the service and an enrolled agent come up, and Ctrl-C stops both."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import psutil

from tests.procs import base_env, free_port


def test_demo_starts_enrolled_agent_and_stops_cleanly(tmp_path):
    port, agent_port = free_port(), free_port()
    env = base_env(
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "data"),
        DEVICETRUST_PUBLIC_URL=f"http://127.0.0.1:{port}",
        DEVICETRUST_AGENT_PORTS=str(agent_port),
        DEVICETRUST_DEMO_SP_PORT=str(free_port()),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "idp_service", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{port}/login" in output, output
        assert "trusted" in output
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2
        ping = httpx.get(f"http://127.0.0.1:{agent_port}/v1/ping").json()
        assert ping["enrolled"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
