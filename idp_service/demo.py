"""``devicetrust demo`` (what ``make run`` does): the service plus a local agent enrolled to it.

It migrates the embedded SQLite database in the per-user data directory, starts
the service on 127.0.0.1:8000, enrolls a local agent for you on first run (a
user named after your login), starts that agent, and prints what to open.
Ctrl-C stops everything cleanly. Running it again reuses the same database and
the same enrolled agent.
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit

from idp_service.config import Settings

DEMO_PORT = 8000
DEMO_SP_PORT = 8001


def _wait(url: str, proc: subprocess.Popen, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our loopback URL
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_demo() -> int:
    """Run until Ctrl-C; return the exit status."""
    env = dict(os.environ)
    env.setdefault("DEVICETRUST_PUBLIC_URL", f"http://127.0.0.1:{DEMO_PORT}")
    # Show posture at work: the built-in catalog (its checks warn before they block).
    env.setdefault("DEVICETRUST_BUILTIN_CHECKS", "all")
    settings = Settings.from_env(env)
    port = urlsplit(settings.public_url).port or DEMO_PORT
    sp_port = int(env.get("DEVICETRUST_DEMO_SP_PORT", DEMO_SP_PORT))
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    agent_dir = settings.data_dir / "demo-agent"
    py = sys.executable
    print(f"devicetrust demo: data in {settings.data_dir}")

    subprocess.run([py, "-m", "idp_service", "migrate"], env=env, check=True)
    procs: list[subprocess.Popen] = []
    interrupted = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        service = subprocess.Popen([py, "-m", "idp_service", "serve", "--port", str(port)], env=env)
        procs.append(service)
        if not _wait(f"{settings.public_url}/readyz", service):
            print(
                f"the service did not start on port {port}. Is something else using it?\n"
                f"Free the port (or set DEVICETRUST_PUBLIC_URL and try again).",
                file=sys.stderr,
            )
            return 1
        if not (agent_dir / "enrollment.json").exists():
            user = f"{getpass.getuser()}@example.com"
            out = subprocess.run(
                [py, "-m", "idp_service", "enroll-code", "create", "--user", user,
                 "--create-user", "--json"],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            import json

            code = json.loads(out.stdout)["code"]
            subprocess.run(
                [py, "-m", "agent", "--state-dir", str(agent_dir), "enroll",
                 settings.public_url, code],
                env=env, check=True,
            )  # fmt: skip
        agent = subprocess.Popen([py, "-m", "agent", "--state-dir", str(agent_dir), "run"], env=env)
        procs.append(agent)
        deadline = time.monotonic() + 30
        while not any(
            _wait(f"http://127.0.0.1:{p}/v1/ping", agent, timeout=0.3) for p in settings.agent_ports
        ):
            if agent.poll() is not None or time.monotonic() > deadline:
                print("the local agent did not start; see its messages above.", file=sys.stderr)
                return 1
        lines = [
            "",
            "devicetrust is running.",
            f"  Check this device:  {settings.public_url}/login",
        ]
        if importlib.util.find_spec("idp_service.demo_sp") is not None:
            sp = subprocess.Popen(
                [py, "-m", "idp_service.demo_sp", "--idp", settings.public_url,
                 "--port", str(sp_port)],
                env=env,
            )  # fmt: skip
            procs.append(sp)
            if _wait(f"http://127.0.0.1:{sp_port}/", sp):
                lines.append(f"  Demo app (SAML):    http://127.0.0.1:{sp_port}/")
        lines += ["Press Ctrl-C to stop.", ""]
        print("\n".join(lines), flush=True)
        while not interrupted:
            for proc in procs:
                if proc.poll() is not None:
                    print(f"a demo process exited ({proc.args[2]}); stopping.", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(procs)
        print("devicetrust demo stopped.")


__all__ = ["run_demo"]
