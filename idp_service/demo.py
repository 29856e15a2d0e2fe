"""``devicetrust demo`` (what ``make run`` does): the service plus a local agent enrolled to it.

It checks that its ports are free (the service's, the demo app's and at least
one of the agent's) before it starts anything, migrates the embedded SQLite
database in the per-user data directory, starts the service on
127.0.0.1:8000 (``--port``; ``make run PORT=9000``), enrolls a local agent for
you on first run (a user named after your login), starts that agent and the
demo SAML app, and prints what to open. Routine log lines of the processes
(INFO lines of Alembic, gunicorn, APScheduler, the demo app's requests) are
shown only with ``--verbose``; warnings and errors always. Ctrl-C stops
everything cleanly. Running it again reuses the same database and the same
enrolled agent (a ``--port`` other than 8000 keeps its own data beside it, as
the agent is enrolled to one address).
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from idp_service.platform.config import Settings

DEMO_PORT = 8000
DEMO_SP_PORT = 8001

# Routine lines of the demo's processes, shown only with --verbose: INFO/DEBUG log
# records (the service's and the agent's logging, gunicorn's, Alembic's) and the
# demo app's Werkzeug banner and request lines. Anything else (warnings, errors,
# tracebacks) is always shown.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ROUTINE = re.compile(
    r"^(?:"
    r"(?:\S+ \S+ (?:devicetrust-agent )?(?:INFO|DEBUG) )"  # 2026-.. 12:00:00,000 INFO name: ..
    r"|(?:\[[^]]+\] \[\d+\] \[(?:INFO|DEBUG)\] )"  # gunicorn: [time] [pid] [INFO] ..
    r"|(?:(?:INFO|DEBUG) +\[)"  # Alembic's own format: INFO  [alembic...] ..
    r"|(?: \* (?:Serving Flask app|Debug mode|Running on))"  # Werkzeug's banner
    r"|(?:WARNING: This is a development server)"
    r"|(?:Press CTRL\+C to quit)"
    r"|(?:\S+ - - \[[^]]+\] \")"  # Werkzeug request lines
    r"|(?:database (?:is up to date|migrated))"
    r"|(?:created device keys in )"
    r"|(?:demo SP (?:registered|on ))"
    r")"
)


def routine(line: str) -> bool:
    """Whether ``line`` (a line a demo process printed) is shown only with --verbose."""
    return bool(_ROUTINE.match(_ANSI.sub("", line)))


def _pump(stream: IO[str], verbose: bool) -> None:
    for line in stream:
        if verbose or not routine(line):
            sys.stdout.write(line)
            sys.stdout.flush()


def _spawn(argv: list[str], env: dict[str, str], verbose: bool) -> subprocess.Popen:
    """Start a demo process whose output goes through the --verbose filter."""
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # Ctrl-C reaches the demo alone; it stops them in order
    )
    threading.Thread(target=_pump, args=(proc.stdout, verbose), daemon=True).start()
    return proc


def _run_step(argv: list[str], env: dict[str, str], verbose: bool) -> str | None:
    """Run one set-up command; its output (filtered), or None after saying why it failed."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    shown = "".join(
        line for line in (done.stdout + done.stderr).splitlines(keepends=True)
        if verbose or done.returncode or not routine(line)
    )  # fmt: skip
    if done.returncode:
        sys.stdout.write(shown)
        print(f"devicetrust demo: {' '.join(argv[1:4])} failed (exit {done.returncode}).")
        return None
    return shown


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` cannot be bound now (something else listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def taken_ports(port: int, sp_port: int, agent_ports: Iterable[int]) -> list[str]:
    """A sentence for each port the demo needs that is in use (empty: all free)."""
    problems = []
    if port_taken(port):
        problems.append(
            f"port {port} (the service) is taken: something else is listening on"
            f" 127.0.0.1:{port}. Stop it, or choose another port:"
            f" `make run PORT={_suggest(port)}` (or `devicetrust demo --port {_suggest(port)}`)."
        )
    if port_taken(sp_port):
        problems.append(
            f"port {sp_port} (the demo app) is taken. Choose another:"
            f" `devicetrust demo --sp-port {_suggest(sp_port)}`"
            " (`make run` uses the service's port + 1: `make run PORT=9000` uses 9001)."
        )
    ports = list(agent_ports)
    if ports and all(port_taken(p) for p in ports):
        listed = ", ".join(map(str, ports))
        problems.append(
            f"the local agent's ports ({listed}) are all taken (is another devicetrust agent"
            " or demo running?). Stop it, or set DEVICETRUST_AGENT_PORTS to a free port."
        )
    return problems


def _suggest(port: int) -> int:
    for candidate in (9000, 9100, 9200, 18000, 28000):
        if candidate != port and not port_taken(candidate) and not port_taken(candidate + 1):
            return candidate
    return 9000


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


def run_demo(port: int | None = None, sp_port: int | None = None, verbose: bool = False) -> int:
    """Run until Ctrl-C; return the exit status (non-zero, with a sentence, on a problem)."""
    env = dict(os.environ)
    if port is not None:
        env["DEVICETRUST_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        if port != DEMO_PORT and not env.get("DEVICETRUST_DATA_DIR"):
            # The agent is enrolled to one address: another port keeps its own data.
            base = Settings.from_env({k: v for k, v in env.items() if k != "DEVICETRUST_DATA_DIR"})
            env["DEVICETRUST_DATA_DIR"] = str(Path(base.data_dir) / f"demo-port-{port}")
    env.setdefault("DEVICETRUST_PUBLIC_URL", f"http://127.0.0.1:{DEMO_PORT}")
    # Show posture at work: the built-in catalog (its checks warn before they block).
    env.setdefault("DEVICETRUST_BUILTIN_CHECKS", "all")
    env.setdefault("DEVICETRUST_LOG_FORMAT", "text")  # for people (the filter below reads it)
    try:
        settings = Settings.from_env(env)
    except ValueError as exc:
        print(f"devicetrust demo: {exc}", file=sys.stderr)
        return 2
    port = urlsplit(settings.public_url).port or DEMO_PORT
    if sp_port is None:
        default_sp = DEMO_SP_PORT if port == DEMO_PORT else port + 1
        sp_port = int(env.get("DEVICETRUST_DEMO_SP_PORT") or default_sp)
    problems = taken_ports(port, sp_port, settings.agent_ports)
    if problems:
        print("devicetrust demo cannot start:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    agent_dir = settings.data_dir / "demo-agent"
    py = sys.executable
    print(f"devicetrust demo: data in {settings.data_dir}", flush=True)

    if _run_step([py, "-m", "idp_service", "migrate"], env, verbose) is None:
        return 1
    procs: list[subprocess.Popen] = []
    interrupted = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        service = _spawn([py, "-m", "idp_service", "serve", "--port", str(port)], env, verbose)
        procs.append(service)
        if not _wait(f"{settings.public_url}/readyz", service):
            print(
                f"the service did not start on port {port}; see its messages above.",
                file=sys.stderr,
            )
            return 1
        if not (agent_dir / "enrollment.json").exists():
            user = f"{getpass.getuser()}@example.com"
            made = subprocess.run(
                [py, "-m", "idp_service", "enroll-code", "create", "--user", user,
                 "--create-user", "--json"],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            if made.returncode:
                sys.stdout.write(made.stdout + made.stderr)
                print("devicetrust demo: could not make an enrollment code.", file=sys.stderr)
                return 1
            code = json.loads(made.stdout)["code"]
            shown = _run_step(
                [py, "-m", "agent", "--state-dir", str(agent_dir), "enroll",
                 settings.public_url, code],
                env, verbose,
            )  # fmt: skip
            if shown is None:
                return 1
            sys.stdout.write(shown)
        agent = _spawn([py, "-m", "agent", "--state-dir", str(agent_dir), "run"], env, verbose)
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
            sp = _spawn(
                [py, "-m", "idp_service.demo_sp", "--idp", settings.public_url,
                 "--port", str(sp_port)],
                env, verbose,
            )  # fmt: skip
            procs.append(sp)
            if _wait(f"http://127.0.0.1:{sp_port}/", sp):
                lines.append(f"  Demo app (SAML):    http://127.0.0.1:{sp_port}/")
        lines += [
            "Press Ctrl-C to stop." + ("" if verbose else " (--verbose shows every log line)"),
            "",
        ]
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
