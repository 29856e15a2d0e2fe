"""Start the real service and agent processes on loopback for integration tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# Ports for the processes the tests start come from below the kernel's ephemeral
# range (32768-60999 on Linux), so that no outgoing connection can take one between
# the moment it is chosen and the moment the child binds it; each xdist worker has
# its own slice, so that two workers never choose the same one.
_PORT_BASE, _PORT_SLICE = 20000, 1500
_next_port = 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and that no other test worker will choose."""
    global _next_port
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    first = _PORT_BASE + (index % 8) * _PORT_SLICE
    for _ in range(_PORT_SLICE):
        port = first + (_next_port + os.getpid()) % _PORT_SLICE
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + _PORT_SLICE - 1}")


def base_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this repo first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVICETRUST_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200, or fail with the process output."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{out}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready: {last}")


@dataclass
class ServiceProc:
    """A running ``devicetrust serve`` process."""

    url: str
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``devicetrust ARGS`` against this service's database."""
        return subprocess.run(
            [sys.executable, "-m", "idp_service", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def cli_json(self, *args: str) -> object:
        """Run a ``--json`` command and parse its output."""
        return json.loads(self.cli(*args, "--json").stdout)

    def enroll_code(self, email: str) -> str:
        """A fresh enrollment code for ``email`` (creating the user)."""
        return self.cli_json("enroll-code", "create", "--user", email, "--create-user")["code"]

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        """Everything the service printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_service(
    tmp: Path,
    database_url: str,
    *,
    agent_ports: list[int] | None = None,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
    port: int | None = None,
) -> ServiceProc:
    """Migrate ``database_url`` and start the service on a free loopback port (or ``port``)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(
        DEVICETRUST_DATABASE_URL=database_url,
        DEVICETRUST_DATA_DIR=str(tmp / "service-data"),
        DEVICETRUST_PUBLIC_URL=url,
        **({"DEVICETRUST_AGENT_PORTS": " ".join(map(str, agent_ports))} if agent_ports else {}),
        **(extra_env or {}),
    )
    from idp_service.platform.migrate import is_current

    if not is_current(database_url):
        subprocess.run(
            [sys.executable, "-m", "idp_service", "migrate"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return _launch(tmp, "serve", env, port, workers)


def start_ingest(
    tmp: Path,
    svc: ServiceProc,
    *,
    workers: int = 1,
    port: int | None = None,
    threads: int | None = None,
) -> ServiceProc:
    """Start ``devicetrust serve-ingest`` beside ``svc``: same settings and database, its own
    loopback port (and ``threads`` per worker, else its default). Its ``url`` is where agents'
    reports go; ``svc`` serves everything else."""
    env = svc.env if threads is None else {**svc.env, "DEVICETRUST_THREADS": str(threads)}
    return _launch(tmp, "serve-ingest", env, port or free_port(), workers)


def _launch(tmp: Path, command: str, env: dict[str, str], port: int, workers: int) -> ServiceProc:
    """``devicetrust COMMAND --port PORT --workers N``, logging to a file, once it is ready."""
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / f"{command}-{port}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "idp_service", command, "--port", str(port)]
        + ["--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    svc = ServiceProc(url=url, env=env, proc=proc, log_path=log_path)
    try:
        wait_http(url + "/readyz", proc=None)
    except Exception:
        svc.stop()
        raise RuntimeError(f"{command} did not start:\n" + svc.log()) from None
    if proc.poll() is not None:
        raise RuntimeError(f"{command} exited:\n" + svc.log())
    return svc


@dataclass
class AgentProc:
    """A device: the agent's state directory and, once started, its ``run`` process."""

    state_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    #: How to run the agent: this checkout's, or e.g. a built executable under ``env -i``.
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "agent"])

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``devicetrust-agent ARGS`` for this device."""
        return subprocess.run(
            [*self.command, "--state-dir", str(self.state_dir), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def cli_json(self, *args: str) -> object:
        """Run a ``--json`` command and parse its output."""
        return json.loads(self.cli(*args, "--json").stdout)

    def enroll(self, service_url: str, code: str) -> dict:
        """``devicetrust-agent enroll URL CODE --json``."""
        return self.cli_json("enroll", service_url, code)

    def start(self, *args: str) -> None:
        """Start ``devicetrust-agent run`` and wait until its local channel answers."""
        self.log_path = self.state_dir.parent / f"agent-{self.port}.log"
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*self.command, "--state-dir", str(self.state_dir), "run", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_http(f"http://127.0.0.1:{self.port}/v1/ping", proc=None)
        except Exception:
            self.stop()
            raise RuntimeError("agent did not start:\n" + self.log()) from None

    def stop(self) -> None:
        """Terminate the ``run`` process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        """Everything the agent printed so far."""
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""


def make_agent(tmp: Path, name: str, *, port: int | None = None, **env: str) -> AgentProc:
    """A new device with its own state directory, port and hardware identity."""
    port = port or free_port()
    state = tmp / f"agent-{name}"
    # An empty configuration file of its own: the host's /etc/devicetrust/agent.toml
    # (an installed agent's) must not leak into a test device.
    config = tmp / f"agent-{name}.toml"
    config.touch()
    config.chmod(0o644)
    agent_env = base_env(
        DEVICETRUST_AGENT_CONFIG=str(config),
        DEVICETRUST_AGENT_PORTS=str(port),
        DEVICETRUST_AGENT_HARDWARE_UUID=f"hw-{name}-{port}",
        DEVICETRUST_AGENT_SERIAL=f"SN-{name.upper()}-{port}",
        **env,
    )
    return AgentProc(state_dir=state, port=port, env=agent_env)
