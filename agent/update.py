"""Signed self-update, agent half: check, download, verify, install, restart, roll back.

The service half is ``idp_service/updates/``; the format is
``trust_protocol/update_manifest.py`` (``docs/protocol.md`` §15).

1. **Check.** Fetch the manifest (``<service>/agent/v1/update-manifest``), verify
   it under the pinned update key (configuration first, else the key pinned at
   enrollment), refuse it when expired or older than the last one accepted
   (``update.json`` in the state directory keeps the serial), and let
   :func:`~trust_protocol.update_manifest.decide` pick this platform's entry,
   apply the rollout stage and refuse a downgrade unless pinned.
2. **Download** into the executable's own directory, at most the signed size,
   hashing as it goes; a wrong size or SHA-256 is refused and the file deleted.
3. **Install.**
   * A ``.deb`` install (dpkg owns the executable): ``dpkg -i``, the package
     manager is in charge, run in its own systemd scope when the agent is a
     service so that restarting the agent does not stop the install.
   * A self-contained executable: the new file must answer ``--version`` with
     the signed version within ``HEALTH_TIMEOUT`` seconds, then it replaces the
     old one atomically (``os.replace`` in one directory, after ``fsync``), and
     the old one stays beside it as ``<name>.prev``.
4. **Restart and health check.** ``run`` re-executes itself into the new file
   (same process id, so a service manager keeps tracking it) after starting a
   watchdog from the *previous* executable, which is known to work. The
   watchdog waits for the new version to answer ``/v1/ping`` on the local
   channel; if it does not within ``HEALTH_TIMEOUT`` seconds, it puts ``.prev``
   back, stops the failed process, starts the previous version again (or
   leaves that to the service manager), and remembers the build as failed so
   it is not tried again.

Keys and enrollment are never touched: a new version reads the same state
directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform as _platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey

from agent import __version__, http_client
from agent.state import Enrollment
from trust_protocol import update_manifest as um
from trust_protocol.encoding import b64d
from trust_protocol.errors import ProtocolError

log = logging.getLogger(__name__)

STATE_FILE = "update.json"
MANIFEST_PATH = "/agent/v1/update-manifest"
KEY_PATH = "/agent/v1/update-key"
HEALTH_TIMEOUT = 30.0
DEFAULT_INTERVAL = 6 * 3600.0
PENDING_TIMEOUT = 3600.0  # an installed update that never started is forgotten after this
USER_AGENT = f"devicetrust-agent/{__version__}"


class UpdateError(Exception):
    """An update step failed; ``code`` is stable (a protocol code or a local one)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- where things are ------------------------------------------------------------------------


def current_executable() -> Path | None:
    """The file that is this agent, when it is one file that can be replaced.

    ``DEVICETRUST_AGENT_EXECUTABLE`` names it explicitly; else a frozen build
    (PyInstaller) is ``sys.executable`` and a zipapp is ``sys.argv[0]``. An
    agent run from a Python environment (``python -m agent``) has none: update
    it with the tool that installed it.
    """
    explicit = os.environ.get("DEVICETRUST_AGENT_EXECUTABLE")
    if explicit:
        return Path(explicit).absolute()
    if getattr(sys, "frozen", False):
        return Path(sys.executable).absolute()
    argv0 = Path(sys.argv[0]).absolute() if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.is_file() and zipfile.is_zipfile(argv0):
        import agent

        if str(Path(agent.__file__).absolute()).startswith(str(argv0) + os.sep):
            return argv0
    return None


def dpkg_root() -> Path | None:
    """``DEVICETRUST_AGENT_DPKG_ROOT``: packages live under this root, not / (image builds)."""
    root = os.environ.get("DEVICETRUST_AGENT_DPKG_ROOT")
    return Path(root).resolve() if root else None


def _dpkg_args() -> list[str]:
    root = dpkg_root()
    return [f"--root={root}"] if root else []


def dpkg_owner(path: Path) -> str | None:
    """The Debian package that installed ``path``, or None (no dpkg, or not from one)."""
    if not sys.platform.startswith("linux") or shutil.which("dpkg-query") is None:
        return None
    target = path.resolve()
    root = dpkg_root()
    if root is not None:
        try:
            target = Path("/") / target.relative_to(root)
        except ValueError:
            return None
    try:
        out = subprocess.run(
            ["dpkg-query", *_dpkg_args(), "--search", str(target)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or ":" not in out.stdout:
        return None
    return out.stdout.split(":", 1)[0].strip() or None


@dataclass(frozen=True)
class Install:
    """How this agent was installed: ``deb``, ``executable`` or ``python`` (not replaceable)."""

    kind: str
    executable: Path | None
    package: str | None = None

    @property
    def platform(self) -> str:
        """The manifest platform name this install takes: linux-x86_64-deb, macos-arm64, ..."""
        machine = _platform.machine().lower()
        arch = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
        if sys.platform.startswith("linux"):
            base = f"linux-{arch}"
        elif sys.platform == "darwin":
            base = f"macos-{arch}"
        elif sys.platform == "win32":
            base = f"windows-{arch}"
        else:
            base = f"{sys.platform}-{arch}"
        return base + ("-deb" if self.kind == "deb" else "")


def detect_install() -> Install:
    """Find out how this agent was installed."""
    exe = current_executable()
    if exe is None:
        return Install("python", None)
    package = dpkg_owner(exe)
    if package is not None:
        return Install("deb", exe, package)
    return Install("executable", exe)


# -- local state -----------------------------------------------------------------------------


def load_state(state_dir: Path) -> dict[str, Any]:
    """``update.json``: the last accepted serial and digest, failed builds, a pending update."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(state_dir: Path, data: dict[str, Any]) -> None:
    """Write ``update.json`` atomically (0600)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".update-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, state_dir / STATE_FILE)


def _update_state(state_dir: Path, **changes: Any) -> dict[str, Any]:
    data = load_state(state_dir)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    save_state(state_dir, data)
    return data


# -- the pinned key and the manifest ---------------------------------------------------------


def pinned_key(enrollment: Enrollment | None, configured: str | None = None) -> VerifyKey | None:
    """The update key: configuration (``DEVICETRUST_AGENT_UPDATE_KEY``) first, else enrollment.

    A configured key that differs from the one pinned at enrollment wins; the
    enrollment's is only a default for fleets whose configuration names none.
    """
    text = configured or os.environ.get("DEVICETRUST_AGENT_UPDATE_KEY") or ""
    if not text and enrollment is not None:
        text = getattr(enrollment, "update_key", "") or ""
    if not text:
        return None
    try:
        return VerifyKey(b64d(text.strip(), length=32, field="update key"))
    except ProtocolError:
        raise UpdateError(
            "bad_update_key",
            "the configured update key is not 32 bytes of base64url; "
            "copy it from `devicetrust updates keygen` on the admin machine",
        ) from None


def fetch_update_key(server_url: str) -> str:
    """The update key a service publishes (empty when it has none), pinned at enrollment."""
    try:
        info = http_client.request("GET", server_url + KEY_PATH)
        key = str(info.get("update_key", ""))
        b64d(key, length=32, field="update_key")
        return key
    except (http_client.ServerError, ProtocolError, AttributeError):
        return ""


def _get(url: str, *, timeout: float = 30.0) -> urllib.request.addinfourl:
    if not url.startswith(("http://", "https://")):
        raise UpdateError("bad_url", f"not an http(s) URL: {url[:200]}")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked
    except urllib.error.HTTPError as exc:
        raise UpdateError(f"http_{exc.code}", f"{url[:200]} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UpdateError("unreachable", f"cannot reach {url[:200]}: {exc}") from None


def fetch_manifest(url: str) -> bytes:
    """The manifest document at ``url``, at most ``MAX_DOCUMENT`` bytes."""
    with _get(url) as resp:
        raw = resp.read(um.MAX_DOCUMENT + 1)
    if len(raw) > um.MAX_DOCUMENT:
        raise UpdateError("too_large", "the update manifest is larger than any manifest")
    return raw


@dataclass(frozen=True)
class Check:
    """The outcome of :func:`check`: the verified manifest and the decision for this device."""

    signed: um.SignedManifest
    decision: um.Decision
    install: Install

    def to_json(self) -> dict[str, Any]:
        """What ``update check --json`` prints."""
        out = {
            "serial": self.signed.manifest.serial,
            "running": __version__,
            "platform": self.decision.platform,
            "install": self.install.kind,
            **self.decision.to_json(),
        }
        if self.decision.artifact is not None:
            out["url"] = self.decision.artifact.url
        return out


def check(
    state_dir: Path,
    enrollment: Enrollment | None,
    device_id: str,
    *,
    update_key: str | None = None,
    manifest_url: str | None = None,
    platform: str | None = None,
    install: Install | None = None,
    now: float | None = None,
) -> Check:
    """Fetch and verify the manifest, and decide what this device should do."""
    key = pinned_key(enrollment, update_key)
    if key is None:
        raise UpdateError(
            "no_update_key",
            "no update key is pinned: set update_key in the agent's configuration "
            "(DEVICETRUST_AGENT_UPDATE_KEY), or enroll with a service that publishes one",
        )
    url = manifest_url or os.environ.get("DEVICETRUST_AGENT_UPDATE_URL")
    if not url:
        if enrollment is None:
            raise UpdateError("not_enrolled", "not enrolled: no service to ask for updates")
        url = enrollment.server_url + MANIFEST_PATH
    raw = fetch_manifest(url)
    seen = load_state(state_dir)
    try:
        signed = um.parse_manifest(raw, key)
        um.check_fresh(
            signed,
            now=time.time() if now is None else now,
            last_serial=seen.get("serial"),
            last_digest=seen.get("digest"),
        )
    except ProtocolError as exc:
        raise UpdateError(exc.code, exc.detail) from None
    # Remember the newest manifest accepted, so an older one is refused from now on.
    if seen.get("serial") != signed.manifest.serial:
        _update_state(state_dir, serial=signed.manifest.serial, digest=signed.digest)
    install = install or detect_install()
    decision = um.decide(
        signed.manifest,
        platform=platform or install.platform,
        device_id=device_id,
        running=__version__,
    )
    failed = seen.get("failed", {})
    if decision.action == um.INSTALL and decision.artifact.sha256 in failed:
        decision = um.Decision(um.NOTHING, "failed_before", decision.platform, decision.artifact)
    return Check(signed, decision, install)


# -- download and verify ---------------------------------------------------------------------


def download(artifact: um.Artifact, directory: Path) -> Path:
    """Download ``artifact`` into ``directory``, verified; the caller owns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".devicetrust-agent-update-")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, _get(artifact.url) as resp:
            while True:
                chunk = resp.read(min(1 << 20, artifact.size + 1 - size))
                if not chunk:
                    break
                size += len(chunk)
                if size > artifact.size:
                    break  # one byte too many settles it; check_artifact refuses
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        um.check_artifact(size, digest.hexdigest(), artifact)
    except ProtocolError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UpdateError(exc.code, exc.detail) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


# -- install ---------------------------------------------------------------------------------


def answers_version(executable: Path, version: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    """Does ``executable --version`` print ``version`` within ``timeout`` seconds?"""
    env = {k: v for k, v in os.environ.items() if k != "DEVICETRUST_AGENT_EXECUTABLE"}
    try:
        out = subprocess.run(
            [str(executable), "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.split()[-1:] == [version]


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prev_path(executable: Path) -> Path:
    """Where the replaced executable is kept."""
    return executable.with_name(executable.name + ".prev")


def replace_executable(new: Path, executable: Path, version: str) -> Path:
    """Swap ``new`` in for ``executable`` atomically, keeping the old one as ``.prev``.

    ``new`` must be in the same directory and answer ``--version`` with
    ``version`` first; otherwise it is deleted and nothing changes.
    """
    mode = executable.stat().st_mode & 0o7777 if executable.exists() else 0o755
    os.chmod(new, mode | 0o500)
    if not answers_version(new, version):
        new.unlink(missing_ok=True)
        raise UpdateError(
            "health_check_failed", f"the new build does not answer --version with {version}"
        )
    prev = prev_path(executable)
    prev.unlink(missing_ok=True)
    try:
        os.link(executable, prev)  # the old file stays reachable under .prev, no copy
    except OSError:
        shutil.copy2(executable, prev)
    os.replace(new, executable)
    _fsync_dir(executable.parent)
    return prev


def rollback(executable: Path) -> bool:
    """Put ``<executable>.prev`` back; False when there is none."""
    prev = prev_path(executable)
    if not prev.exists():
        return False
    os.replace(prev, executable)
    _fsync_dir(executable.parent)
    return True


def managed_by_systemd() -> bool:
    """Is this process a systemd service (so systemd restarts it)?"""
    return bool(os.environ.get("INVOCATION_ID")) and shutil.which("systemd-run") is not None


def install_deb(package_file: Path, serial: int) -> None:
    """``dpkg -i`` the verified package; as a transient unit when the agent is a service.

    The package's maintainer scripts restart the agent; a transient unit keeps
    ``dpkg`` running when the agent's own unit is restarted under it.
    """
    command = ["dpkg", *_dpkg_args(), "-i", str(package_file)]
    if managed_by_systemd():
        command = [
            "systemd-run",
            "--collect",
            "--quiet",
            f"--unit=devicetrust-agent-update-{serial}",
            *command,
        ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise UpdateError("install_failed", (out.stderr or out.stdout).strip()[-500:])


@dataclass(frozen=True)
class Applied:
    """An installed update, waiting for a restart (``pending`` in ``update.json``)."""

    version: str
    kind: str
    executable: Path | None

    def to_json(self) -> dict[str, Any]:
        """What ``update apply --json`` prints."""
        return {
            "installed": self.version,
            "install": self.kind,
            "executable": str(self.executable) if self.executable else None,
        }


def apply(state_dir: Path, result: Check) -> Applied:
    """Download, verify and install the artifact ``result`` chose (it must say ``install``)."""
    decision, install = result.decision, result.install
    if decision.action != um.INSTALL or decision.artifact is None:
        raise UpdateError("nothing_to_install", f"nothing to install ({decision.reason})")
    artifact = decision.artifact
    if install.kind == "python" or install.executable is None:
        raise UpdateError(
            "not_replaceable",
            "this agent runs from a Python environment; update it with the tool that "
            "installed it (pip), or install the packaged agent",
        )
    try:
        if install.kind == "deb":
            downloaded = download(artifact, state_dir / "updates")
            try:
                install_deb(downloaded, result.signed.manifest.serial)
            finally:
                downloaded.unlink(missing_ok=True)
        else:
            downloaded = download(artifact, install.executable.parent)
            replace_executable(downloaded, install.executable, artifact.version)
    except OSError as exc:  # e.g. run by a user who may not write the agent's files
        raise UpdateError(
            "install_failed", f"cannot install into {install.executable.parent}: {exc}"
        ) from None
    _update_state(
        state_dir,
        pending={
            "from": __version__,
            "to": artifact.version,
            "sha256": artifact.sha256,
            "kind": install.kind,
            "executable": str(install.executable),
            "serial": result.signed.manifest.serial,
            "at": int(time.time()),
        },
    )
    log.info("installed agent %s (%s); restarting into it", artifact.version, install.kind)
    return Applied(artifact.version, install.kind, install.executable)


# -- restart and watchdog --------------------------------------------------------------------


def confirm_started(state_dir: Path) -> None:
    """At start: a package-manager update to this version has taken (the package restarted us)."""
    pending = load_state(state_dir).get("pending")
    if (
        isinstance(pending, dict)
        and pending.get("kind") == "deb"
        and pending.get("to") == __version__
    ):
        _update_state(
            state_dir, pending=None, installed={"version": __version__, "at": int(time.time())}
        )
        log.info("update to %s confirmed", __version__)


def restart_wanted(state_dir: Path) -> dict[str, Any] | None:
    """The pending self-replaced update this process should restart into, if any."""
    pending = load_state(state_dir).get("pending")
    if not isinstance(pending, dict) or pending.get("kind") != "executable":
        return None
    if pending.get("to") == __version__ or pending.get("restarting"):
        return None
    exe = current_executable()
    if exe is None or str(exe) != pending.get("executable"):
        return None
    return pending


def restart_into(
    state_dir: Path, pending: dict[str, Any], port: int, *, timeout: float = HEALTH_TIMEOUT
) -> None:
    """Start the watchdog from ``.prev``, then re-execute this process as the new version.

    Call it after the local channel and the schedulers are shut down. It does
    not return (unless ``execv`` fails, which rolls back and raises).
    """
    exe = Path(pending["executable"])
    prev = prev_path(exe)
    argv = [str(exe), *sys.argv[1:]]
    pending = {**pending, "restarting": True}
    _update_state(state_dir, pending=pending)
    watch = [
        str(prev),
        "--state-dir",
        str(state_dir),
        "update",
        "watch",
        "--pid",
        str(os.getpid()),
        "--port",
        str(port),
        "--expect",
        str(pending["to"]),
        "--timeout",
        str(timeout),
        "--restart-argv",
        json.dumps(argv),
    ]
    if managed_by_systemd():
        watch = ["systemd-run", "--collect", "--quiet", *watch, "--managed"]
    try:
        subprocess.Popen(watch, start_new_session=True, close_fds=True)  # noqa: S603
    except OSError as exc:  # the new build answered --version; go on without a watchdog
        log.error("cannot start the update watchdog (%s); restarting without one", exc)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(str(exe), argv)  # noqa: S606 - our own, verified executable
    except OSError as exc:
        rollback(exe)
        raise UpdateError("restart_failed", f"cannot start {exe}: {exc}") from None


def _ping_version(port: int) -> str | None:
    url = f"http://127.0.0.1:{port}/v1/ping"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            data = json.loads(resp.read(4096))
    except (OSError, ValueError):
        return None
    return str(data.get("version")) if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited process its parent has not reaped yet is a zombie: dead
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def watch(
    state_dir: Path,
    *,
    pid: int,
    port: int,
    expect: str,
    timeout: float,
    restart_argv: list[str] | None,
    managed: bool,
) -> bool:
    """Wait for the restarted agent to answer as ``expect``; roll back if it does not.

    Returns True when the update is confirmed. On failure: ``.prev`` goes back
    in place, the build is remembered as failed, the failed process is stopped,
    and the previous version is started again with ``restart_argv`` (unless a
    service manager restarts it, ``managed``).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping_version(port) == expect:
            data = load_state(state_dir)
            data.pop("pending", None)
            data["installed"] = {"version": expect, "at": int(time.time())}
            save_state(state_dir, data)
            log.info("update to %s confirmed", expect)
            return True
        if not _alive(pid):
            break
        time.sleep(0.2)
    data = load_state(state_dir)
    pending = data.pop("pending", {}) or {}
    exe = Path(pending.get("executable") or (restart_argv or [""])[0])
    restored = rollback(exe) if str(exe) else False
    failed = dict(data.get("failed", {}))
    if pending.get("sha256"):
        failed[pending["sha256"]] = {"version": expect, "at": int(time.time())}
    data["failed"] = failed
    data["rolled_back"] = {"from": expect, "to": pending.get("from"), "at": int(time.time())}
    if _alive(pid):
        # Under a service manager, a kill by signal counts as a failure, so it restarts
        # the (restored) previous version; a clean SIGTERM exit might not be restarted.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if managed else signal.SIGTERM)
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if restored and restart_argv and not managed:
        child = subprocess.Popen(restart_argv, start_new_session=True)  # noqa: S603
        data["rolled_back"]["pid"] = child.pid
    save_state(state_dir, data)
    log.warning("update to %s failed its health check; rolled back: %s", expect, restored)
    return False


def summary(state_dir: Path, enrollment: Enrollment | None) -> dict[str, Any]:
    """What ``status`` shows about self-update: the pinned key, the last manifest, outcomes."""
    from trust_protocol.challenge import key_id

    try:
        key = pinned_key(enrollment)
        kid: str | None = key_id(key) if key else None
    except UpdateError:
        kid = "invalid"
    data = load_state(state_dir)
    out: dict[str, Any] = {"update_kid": kid, "last_serial": data.get("serial")}
    for name in ("pending", "installed", "rolled_back"):
        if name in data:
            out[name] = data[name]
    return out


# -- the schedule in ``run`` -----------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """``6h``, ``30m``, ``1d``, ``90s`` or plain seconds -> seconds (at least 5)."""
    value = text.strip().lower().replace(" ", "")
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = value[len(number) :] or "s"
    try:
        seconds = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError(f"not a duration: {text!r} (try 6h, 30m, 1d)") from None
    if not 5 <= seconds <= 30 * 86400:
        raise ValueError("the update interval is between 5 seconds and 30 days")
    return seconds


class UpdateScheduler:
    """Check for updates on an APScheduler schedule and install what the manifest offers.

    A self-replaced executable is not restarted here: ``run``'s main loop sees
    the pending update (:func:`restart_wanted`) and restarts between requests.
    """

    def __init__(
        self,
        state_dir: Path,
        enrollment: Enrollment | None,
        device_id: str,
        *,
        interval: float = DEFAULT_INTERVAL,
        update_key: str | None = None,
        manifest_url: str | None = None,
    ) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.state_dir = state_dir
        self.enrollment = enrollment
        self.device_id = device_id
        self.interval = interval
        self.update_key = update_key  # from the agent's configuration; else env, enrollment
        self.manifest_url = manifest_url
        self._scheduler = BackgroundScheduler(daemon=True)
        self._warned = False

    def start(self) -> None:
        """First check soon (within a minute), then every ``interval`` with jitter."""
        import datetime as dt
        import random

        from apscheduler.triggers.interval import IntervalTrigger

        first = min(self.interval, 60.0) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
        self._scheduler.start()
        self._scheduler.add_job(
            self.check_now,
            trigger=IntervalTrigger(
                seconds=self.interval,
                jitter=max(1, int(self.interval * 0.1)),
                start_date=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=first),
            ),
            id="update",
            max_instances=1,
            coalesce=True,
        )

    def shutdown(self) -> None:
        """Stop the schedule."""
        self._scheduler.shutdown(wait=False)

    def check_now(self) -> Applied | None:
        """One check; installs when the manifest says so. Never raises."""
        pending = load_state(self.state_dir).get("pending")
        if isinstance(pending, dict):
            if time.time() - float(pending.get("at", 0)) < PENDING_TIMEOUT:
                return None  # an installed update waits for its restart
            log.warning("the update to %s never started; checking again", pending.get("to"))
            _update_state(self.state_dir, pending=None)
        try:
            result = check(
                self.state_dir,
                self.enrollment,
                self.device_id,
                update_key=self.update_key,
                manifest_url=self.manifest_url,
            )
        except UpdateError as exc:
            if exc.code == "no_update_key":
                if not self._warned:
                    log.info("self-update is off: %s", exc.message)
                    self._warned = True
            else:
                log.warning("update check refused (%s): %s", exc.code, exc.message)
            return None
        except Exception:  # noqa: BLE001 - a bug here must not stop the agent
            log.exception("update check failed")
            return None
        decision = result.decision
        if decision.action != um.INSTALL:
            log.info("update check: serial %d, %s", result.signed.manifest.serial, decision.reason)
            return None
        try:
            return apply(self.state_dir, result)
        except UpdateError as exc:
            log.warning("update to %s refused (%s): %s", decision.artifact.version, exc.code, exc)
        except Exception:  # noqa: BLE001
            log.exception("update install failed")
        return None
