"""Signed self-update end to end: a real service, real agent processes, real files.

The agent "executable" is a zipapp of this repository's ``agent`` and
``trust_protocol`` packages with the version patched in, run by the test
environment's interpreter (a single file that replaces itself, as a PyInstaller
build would; PyInstaller itself is not needed to test the update logic). The
service signs nothing: an admin key made with ``devicetrust updates keygen``
signs each manifest, and the service publishes it and serves the artifact.

Covered, for real: a good update downloads, verifies, replaces the executable
atomically (keeping ``.prev``), restarts the running agent into it under the
same process id and keeps its keys and enrollment (it still reports posture); a
tampered artifact, a manifest signed by another key, an expired or replayed
manifest, and a downgrade that is not pinned are refused; a pinned version is
installed even as a downgrade; a build that fails to start is rolled back and
the previous version runs again.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipapp
from pathlib import Path

import pytest

from tests.procs import ROOT, base_env, free_port, start_service

MACHINE = {"amd64": "x86_64", "aarch64": "arm64"}.get(
    platform.machine().lower(), platform.machine().lower()
)
PLATFORM = f"linux-{MACHINE}"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="linux: self-replace and dpkg"
)


def build_agent(path: Path, version: str, *, broken_run: bool = False) -> Path:
    """A zipapp of the agent at ``version``; ``broken_run`` makes ``run`` exit at once."""
    src = path.parent / f".src-{path.name}"
    shutil.rmtree(src, ignore_errors=True)
    for package in ("agent", "trust_protocol"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "agent" / "__init__.py"
    text = init.read_text()
    assert '__version__ = "0.1.0"' in text
    init.write_text(text.replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
    main = "import sys\n"
    if broken_run:
        main += "if 'run' in sys.argv:\n    sys.exit('this build cannot run')\n"
    main += "from agent.cli import main\nmain()\n"
    (src / "__main__.py").write_text(main)
    path.parent.mkdir(parents=True, exist_ok=True)
    zipapp.create_archive(src, path, interpreter=sys.executable)
    shutil.rmtree(src)
    path.chmod(0o755)
    return path


def agent_env(port: int, name: str) -> dict[str, str]:
    env = base_env(
        DEVICETRUST_AGENT_PORTS=str(port),
        DEVICETRUST_AGENT_HARDWARE_UUID=f"hw-{name}-{port}",
        DEVICETRUST_AGENT_SERIAL=f"SN-{name.upper()}-{port}",
    )
    env.pop("PYTHONPATH", None)  # the zipapp carries its own agent
    return env


class Device:
    """An agent installed as one executable file, with its state directory."""

    def __init__(self, tmp: Path, name: str, version: str = "0.1.0") -> None:
        self.port = free_port()
        self.exe = build_agent(tmp / name / "bin" / "devicetrust-agent", version)
        self.state_dir = tmp / name / "state"
        self.env = agent_env(self.port, name)
        self.log_path = tmp / name / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.others: list[int] = []

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.exe), "--state-dir", str(self.state_dir), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def version(self, exe: Path | None = None) -> str:
        out = subprocess.run(
            [str(exe or self.exe), "--version"], env=self.env, capture_output=True, text=True
        )
        return out.stdout.split()[-1]

    def start(self, *args: str) -> None:
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [str(self.exe), "--state-dir", str(self.state_dir), "run", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ping(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/ping", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def wait_version(self, version: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.ping()
            if got and got.get("version") == version:
                return
            time.sleep(0.3)
        raise AssertionError(f"agent never answered as {version}:\n{self.log()}")

    def update_state(self) -> dict:
        path = self.state_dir / "update.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def wait_state(self, key: str, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.update_state()
            if key in data:
                return data
            time.sleep(0.3)
        raise AssertionError(f"update.json never got {key}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        for pid in self.others:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def service(tmp_path, sqlite_url):
    svc = start_service(tmp_path, sqlite_url)
    yield svc
    svc.stop()


@pytest.fixture
def admin(tmp_path, service):
    """An admin machine's signing key, trusted by the service."""
    key = tmp_path / "admin" / "update-signing.key"
    made = json.loads(service.cli("updates", "keygen", "--out", str(key), "--json").stdout)
    assert key.stat().st_mode & 0o777 == 0o600
    service.cli("updates", "trust-key", "--", made["public_key"])
    admin = Admin(service, key, made["public_key"], tmp_path)
    admin.kid = made["kid"]
    return admin


class Admin:
    def __init__(self, service, key: Path, public: str, tmp: Path) -> None:
        self.service, self.key, self.public, self.tmp = service, key, public, tmp

    def release(self, build: Path, version: str, *extra: str, serve: bool = True) -> dict:
        """Serve ``build`` from the service, sign a manifest for it, publish it."""
        if serve:
            info = json.loads(
                self.service.cli("updates", "add-artifact", str(build), "--json").stdout
            )
            url = info["url"]
        else:
            url = f"{self.service.url}/agent/v1/update-artifacts/{build.name}"
        out = self.tmp / "admin" / f"manifest-{version}-{time.monotonic_ns()}.json"
        self.service.cli(
            "updates", "sign", "--key", str(self.key), "--version", version,
            "--artifact", f"{PLATFORM}={build}", "--url", f"{PLATFORM}={url}",
            "--out", str(out), *extra,
        )  # fmt: skip
        return json.loads(self.service.cli("updates", "publish", str(out), "--json").stdout)


def enrolled_device(tmp: Path, service, name: str, version: str = "0.1.0") -> Device:
    device = Device(tmp, name, version)
    code = service.enroll_code(f"{name}@example.com")
    result = json.loads(device.cli("enroll", service.url, code, "--json").stdout)
    assert result["state"] == "trusted"
    return device


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_a_good_update_installs_restarts_and_keeps_the_enrollment(tmp_path, service, admin):
    device = enrolled_device(tmp_path, service, "laptop")
    enrollment = json.loads((device.state_dir / "enrollment.json").read_text())
    assert enrollment["update_key"] == admin.public  # pinned at enrollment
    before = {p: (device.state_dir / p).read_bytes() for p in ("enrollment.json", "sign.key")}
    build = build_agent(tmp_path / "builds" / "devicetrust-agent-0.2.0", "0.2.0")
    admin.release(build, "0.2.0")
    device.start("--update-interval", "5s")
    try:
        device.wait_version("0.2.0")
        state = device.wait_state("installed")
        assert state["installed"]["version"] == "0.2.0" and "pending" not in state
        # The same process, re-executed: a service manager keeps tracking it.
        assert device.proc.poll() is None
        assert device.version() == "0.2.0"
        assert device.version(device.exe.with_name("devicetrust-agent.prev")) == "0.1.0"
        assert (
            hashlib.sha256(device.exe.read_bytes()).digest()
            == hashlib.sha256(build.read_bytes()).digest()
        )
        assert _files(device.exe.parent) == {"devicetrust-agent", "devicetrust-agent.prev"}
        for name, data in before.items():
            assert (device.state_dir / name).read_bytes() == data
        status = json.loads(device.cli("status", "--json").stdout)
        assert status["enrolled"] and status["version"] == "0.2.0"
        assert status["update"]["installed"]["version"] == "0.2.0"
        assert status["update"]["update_kid"] == admin.kid
        # The enrollment still works: the new version's posture report is accepted.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = service.cli_json("devices", "list")
            if rows and rows[0].get("agent_version") == "0.2.0":
                break
            time.sleep(1)
        else:
            raise AssertionError(f"no report from 0.2.0: {rows}\n{device.log()}")
        assert rows[0]["state"] == "trusted"
    finally:
        device.stop()


def test_a_build_that_fails_to_start_is_rolled_back(tmp_path, service, admin):
    device = enrolled_device(tmp_path, service, "desktop")
    broken = build_agent(tmp_path / "builds" / "devicetrust-agent-0.3.0", "0.3.0", broken_run=True)
    admin.release(broken, "0.3.0")
    device.start("--update-interval", "5s", "--no-reports")
    try:
        state = device.wait_state("rolled_back")
        assert state["rolled_back"]["from"] == "0.3.0"
        device.others.append(state["rolled_back"]["pid"])
        assert hashlib.sha256(broken.read_bytes()).hexdigest() in state["failed"]
        device.proc.wait(10)  # the broken build exited
        device.wait_version("0.1.0")
        assert device.version() == "0.1.0"
        # It does not try the failed build again.
        time.sleep(8)
        assert device.version() == "0.1.0"
        assert "failed_before" in device.log()
    finally:
        device.stop()


def test_tampered_artifact_is_refused(tmp_path, service, admin):
    device = enrolled_device(tmp_path, service, "tampered")
    build = build_agent(tmp_path / "builds" / "devicetrust-agent-0.2.0", "0.2.0")
    admin.release(build, "0.2.0")
    # Someone swaps the served file for another build of the same name.
    evil = build_agent(tmp_path / "evil" / "devicetrust-agent-0.2.0", "0.2.0", broken_run=True)
    service.cli("updates", "add-artifact", str(evil))
    original = device.exe.read_bytes()
    out = device.cli("update", "apply", "--json", check=False)
    assert out.returncode == 1
    assert "update_digest_mismatch" in out.stderr
    assert device.exe.read_bytes() == original
    assert _files(device.exe.parent) == {"devicetrust-agent"}  # no temp file left


def test_manifest_signed_with_another_key_is_refused(tmp_path, service, admin):
    device = enrolled_device(tmp_path, service, "pinned-key")
    # The service is told to trust another key (a compromised service, or a mistake).
    other = tmp_path / "admin" / "other.key"
    made = json.loads(service.cli("updates", "keygen", "--out", str(other), "--json").stdout)
    service.cli("updates", "trust-key", "--", made["public_key"])
    build = build_agent(tmp_path / "builds" / "devicetrust-agent-0.2.0", "0.2.0")
    Admin(service, other, made["public_key"], tmp_path).release(build, "0.2.0")
    out = device.cli("update", "check", check=False)
    assert out.returncode == 1 and "bad_update_signature" in out.stderr
    out = device.cli("update", "apply", check=False)
    assert "bad_update_signature" in out.stderr
    assert device.version() == "0.1.0"


def test_downgrade_refused_unless_pinned(tmp_path, service, admin):
    device = enrolled_device(tmp_path, service, "newer", version="0.2.0")
    old = build_agent(tmp_path / "builds" / "devicetrust-agent-0.1.0", "0.1.0")
    admin.release(old, "0.1.0")
    check = json.loads(device.cli("update", "check", "--json").stdout)
    assert (check["action"], check["reason"], check["version"]) == (
        "none",
        "downgrade_refused",
        "0.1.0",
    )
    service.cli("updates", "pin", "0.1.0", "--key", str(admin.key))
    check = json.loads(device.cli("update", "check", "--json").stdout)
    assert (check["action"], check["reason"]) == ("install", "pinned")
    applied = json.loads(device.cli("update", "apply", "--json").stdout)
    assert applied["installed"] == "0.1.0"
    assert device.version() == "0.1.0"


def test_stage_decides_by_device_bucket(tmp_path, service, admin):
    device = enrolled_device(tmp_path, service, "staged")
    build = build_agent(tmp_path / "builds" / "devicetrust-agent-0.2.0", "0.2.0")
    admin.release(build, "0.2.0", "--percent", "0")
    check = json.loads(device.cli("update", "check", "--json").stdout)
    assert check["reason"] == "not_in_stage"
    service.cli("updates", "stage", "100", "--key", str(admin.key))
    check = json.loads(device.cli("update", "check", "--json").stdout)
    assert (check["action"], check["version"]) == ("install", "0.2.0")


class _Static(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _static_server(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Static, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_replayed_and_expired_manifests_are_refused(tmp_path, service, admin):
    device = enrolled_device(tmp_path, service, "replay")
    build = build_agent(tmp_path / "builds" / "devicetrust-agent-0.2.0", "0.2.0")
    admin.release(build, "0.2.0", "--percent", "0")
    old = service.cli("updates", "show", "--document").stdout.strip()
    device.cli("update", "check")  # accepts the first serial
    service.cli("updates", "stage", "100", "--key", str(admin.key))
    device.cli("update", "check")  # accepts the newer serial
    # Someone between the device and the service serves the older manifest again.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "manifest.json").write_text(old)
    server, url = _static_server(mirror)
    try:
        out = device.cli("update", "check", "--manifest-url", url + "/manifest.json", check=False)
        assert out.returncode == 1 and "update_replayed" in out.stderr
        # A manifest that expired is refused too.
        signed = tmp_path / "admin" / "short.json"
        service.cli(
            "updates", "sign", "--key", str(admin.key), "--version", "0.2.0",
            "--artifact", f"{PLATFORM}={build}", "--base-url", service.url,
            "--expires", "2s", "--serial", str(2**40), "--out", str(signed),
        )  # fmt: skip
        (mirror / "short.json").write_text(signed.read_text())
        time.sleep(2.5)
        out = device.cli("update", "check", "--manifest-url", url + "/short.json", check=False)
        assert out.returncode == 1 and "update_expired" in out.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert device.version() == "0.1.0"
