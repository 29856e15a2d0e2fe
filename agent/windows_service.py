"""The agent as a Windows service: the service control manager starts, stops and restarts it.

The MSI (``packaging/windows/devicetrust-agent.wxs``) registers
``devicetrust-agent.exe service run`` as the service ``devicetrust-agent``
(LocalSystem, automatic start) and, once, as SYSTEM, runs
``devicetrust-agent.exe service configure``, which sets what the WiX subset the
Linux build tool (wixl) accepts cannot express:

* **recovery actions**: restart after 5 s, 30 s, then every 60 s, failure count
  reset after a day, and applied to a stop with an error too, not only to a
  crash (``SERVICE_CONFIG_FAILURE_ACTIONS`` and ``..._FLAG``);
* **folder permissions**: ``%ProgramData%\\devicetrust`` (the configuration) is
  writable only by SYSTEM and Administrators and readable by Users (by default
  any user may create files under ProgramData, and so could plant an
  ``agent.toml`` naming another service); ``...\\devicetrust\\agent`` (the keys)
  is SYSTEM and Administrators only, inheritance removed.

The logic is plain Python behind small interfaces (:class:`StatusReporter`,
:class:`AgentRunner`, :class:`ScmConfig`, :class:`AclTool`), so it is tested on
Linux against recorded call sequences (``tests/packaging/test_windows_service.py``); only
the thin pywin32 adapters at the bottom need Windows.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

SERVICE_NAME = "devicetrust-agent"
DISPLAY_NAME = "devicetrust agent"

# winsvc.h service states and the exit code that carries a service-specific one.
SERVICE_STOPPED = 1
SERVICE_START_PENDING = 2
SERVICE_STOP_PENDING = 3
SERVICE_RUNNING = 4
ERROR_SERVICE_SPECIFIC_ERROR = 1066
SC_ACTION_RESTART = 1

# Recovery: restart after 5 s, 30 s, then 60 s; forget failures after a day.
RESTART_DELAYS_MS = (5_000, 30_000, 60_000)
RESET_PERIOD_S = 86_400
START_WAIT_HINT_MS = 10_000
STOP_TIMEOUT_S = 20.0

# Well-known SIDs, so the commands work whatever the system's language.
SID_SYSTEM = "*S-1-5-18"
SID_ADMINISTRATORS = "*S-1-5-32-544"
SID_USERS = "*S-1-5-32-545"

log = logging.getLogger(__name__)


def require_windows() -> None:
    """Stop with a clear message when not on Windows."""
    if sys.platform != "win32":
        import click

        raise click.ClickException(
            "this command is for the Windows service; on this system run `devicetrust-agent run`"
        )


# ---- running: SCM start/stop -> the agent's run loop ----------------------------------


class StatusReporter(Protocol):
    """Tells the service control manager (and the event log) what the service is doing."""

    def report(self, state: int, *, exit_code: int = 0, wait_hint_ms: int = 0) -> None:
        """SetServiceStatus: ``state`` is a SERVICE_* value; ``exit_code`` the agent's."""
        ...

    def event(self, error: bool, message: str) -> None:
        """One Application event log entry."""
        ...


class AgentRunner(Protocol):
    """The agent's run loop: blocks until ``stop`` is set (0) or it fails (its exit code)."""

    def run(self, stop: threading.Event) -> int:
        """Run until stopped; return the exit status."""
        ...


class AgentService:
    """SCM control events to the run loop and back, independent of pywin32."""

    def __init__(
        self, reporter: StatusReporter, runner: AgentRunner, *, stop_timeout: float = STOP_TIMEOUT_S
    ) -> None:
        self.reporter = reporter
        self.runner = runner
        self.stop_timeout = stop_timeout
        self.stop_event = threading.Event()
        self.exit_code: int | None = None
        self._stopping = False

    def run(self) -> int:
        """SvcDoRun: start the loop, report RUNNING, wait for it, report STOPPED."""
        self.reporter.report(SERVICE_START_PENDING, wait_hint_ms=START_WAIT_HINT_MS)
        done = threading.Event()
        result: list[int] = []

        def target() -> None:
            try:
                result.append(self.runner.run(self.stop_event))
            finally:
                done.set()

        thread = threading.Thread(target=target, name="agent-run", daemon=True)
        thread.start()
        self.reporter.report(SERVICE_RUNNING)
        self.reporter.event(False, f"{DISPLAY_NAME} started")
        done.wait()
        code = result[0] if result else 1
        self.exit_code = code
        if code == 0:
            self.reporter.event(False, f"{DISPLAY_NAME} stopped")
        else:
            self.reporter.event(
                True,
                f"{DISPLAY_NAME} stopped with exit code {code}"
                + (
                    " (configuration problem: run `devicetrust-agent status` as an administrator)"
                    if code == 78
                    else ""
                )
                + "; Windows restarts it per the service's recovery actions",
            )
        # A non-zero service-specific code makes the SCM apply the recovery actions
        # (with the failure-actions flag that `service configure` sets).
        self.reporter.report(SERVICE_STOPPED, exit_code=code)
        return code

    def stop(self) -> None:
        """SvcStop (also shutdown): report STOP_PENDING, end the loop."""
        self._stopping = True
        self.reporter.report(SERVICE_STOP_PENDING, wait_hint_ms=int(self.stop_timeout * 1000))
        self.stop_event.set()


# ---- installing: recovery actions and folder permissions ------------------------------


class ScmConfig(Protocol):
    """The service settings ``service configure`` changes."""

    def set_failure_actions(
        self, name: str, reset_period_s: int, actions: list[tuple[int, int]]
    ) -> None:
        """ChangeServiceConfig2(SERVICE_CONFIG_FAILURE_ACTIONS)."""
        ...

    def set_failure_actions_flag(self, name: str, on_non_crash: bool) -> None:
        """ChangeServiceConfig2(SERVICE_CONFIG_FAILURE_ACTIONS_FLAG)."""
        ...


class AclTool(Protocol):
    """Runs one ``icacls`` command line (a list of arguments after ``icacls``)."""

    def icacls(self, args: list[str]) -> None:
        """Raise on failure."""
        ...


def icacls_commands(programdata: Path) -> list[list[str]]:
    """The permissions of the configuration and state folders, as icacls arguments."""
    base = str(programdata / "devicetrust")
    state = str(programdata / "devicetrust" / "agent")
    full = "(OI)(CI)F"
    return [
        [base, "/inheritance:r", "/grant:r", f"{SID_SYSTEM}:{full}",
         f"{SID_ADMINISTRATORS}:{full}", f"{SID_USERS}:(OI)(CI)RX"],
        [state, "/inheritance:r", "/grant:r", f"{SID_SYSTEM}:{full}",
         f"{SID_ADMINISTRATORS}:{full}"],
    ]  # fmt: skip


def configure(
    scm: ScmConfig,
    acl: AclTool,
    programdata: Path,
    settings: dict[str, str] | None = None,
    mkdir: Callable[[Path], None] = lambda p: p.mkdir(parents=True, exist_ok=True),
) -> list[str]:
    """Settings, folders (before the service can create keys), recovery. Returns the steps.

    ``settings`` are the installer's SERVICE_URL and SERVER_KEY_FINGERPRINT
    (blank when not given): written into ``agent.toml`` after the same checks the
    agent makes, so a bad value fails the install before anything else changes.
    """
    from agent.config import update_file

    steps = []
    config_file = programdata / "devicetrust" / "agent.toml"
    mkdir(programdata / "devicetrust" / "agent")
    written = update_file(config_file, settings or {})
    if written:
        steps.append(f"{config_file}: set {', '.join(sorted(written))}")
    for args in icacls_commands(programdata):
        acl.icacls(args)
        steps.append(f"permissions set on {args[0]}")
    actions = [(SC_ACTION_RESTART, delay) for delay in RESTART_DELAYS_MS]
    scm.set_failure_actions(SERVICE_NAME, RESET_PERIOD_S, actions)
    scm.set_failure_actions_flag(SERVICE_NAME, True)
    steps.append(
        "recovery: restart after "
        + ", ".join(f"{d // 1000} s" for d in RESTART_DELAYS_MS)
        + f"; reset after {RESET_PERIOD_S // 3600} h; also on stops with an error"
    )
    return steps


# ---- pywin32 adapters (Windows only) --------------------------------------------------


class SubprocessIcacls:
    """:class:`AclTool` running ``%SystemRoot%\\System32\\icacls.exe``."""

    def icacls(self, args: list[str]) -> None:
        """Run it; raise CalledProcessError with its output on failure."""
        exe = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "icacls.exe"
        subprocess.run([str(exe), *args], check=True, capture_output=True, text=True)


class Pywin32ScmConfig:
    """:class:`ScmConfig` through ``win32service``."""

    def __init__(self, module: Any = None) -> None:
        self.module = module

    def _mod(self) -> Any:
        if self.module is None:
            import win32service  # type: ignore[import-not-found]  # Windows only

            self.module = win32service
        return self.module

    def _change(self, name: str, level: int, value: object) -> None:
        ws = self._mod()
        scm = ws.OpenSCManager(None, None, ws.SC_MANAGER_CONNECT)
        try:
            svc = ws.OpenService(scm, name, ws.SERVICE_CHANGE_CONFIG | ws.SERVICE_START)
            try:
                ws.ChangeServiceConfig2(svc, level, value)
            finally:
                ws.CloseServiceHandle(svc)
        finally:
            ws.CloseServiceHandle(scm)

    def set_failure_actions(
        self, name: str, reset_period_s: int, actions: list[tuple[int, int]]
    ) -> None:
        """Restart actions with their delays."""
        ws = self._mod()
        value = {"ResetPeriod": reset_period_s, "RebootMsg": "", "Command": "", "Actions": actions}
        self._change(name, ws.SERVICE_CONFIG_FAILURE_ACTIONS, value)

    def set_failure_actions_flag(self, name: str, on_non_crash: bool) -> None:
        """Apply the actions when the service stops with an error, too."""
        ws = self._mod()
        self._change(name, ws.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, on_non_crash)


def configure_installed(settings: dict[str, str] | None = None) -> list[str]:
    """``service configure`` on this machine."""
    return configure(Pywin32ScmConfig(), SubprocessIcacls(), _programdata(), settings)


def _service_class(runner: AgentRunner) -> type:
    """The pywin32 ServiceFramework subclass running ``runner`` (imported only on Windows)."""
    import servicemanager  # type: ignore[import-not-found]
    import win32service  # type: ignore[import-not-found]
    import win32serviceutil  # type: ignore[import-not-found]

    class Reporter:
        def __init__(self, framework: Any) -> None:
            self.framework = framework

        def report(self, state: int, *, exit_code: int = 0, wait_hint_ms: int = 0) -> None:
            self.framework.ReportServiceStatus(
                state,
                waitHint=wait_hint_ms,
                win32ExitCode=ERROR_SERVICE_SPECIFIC_ERROR if exit_code else 0,
                svcExitCode=exit_code,
            )

        def event(self, error: bool, message: str) -> None:
            (servicemanager.LogErrorMsg if error else servicemanager.LogInfoMsg)(message)

    class Service(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.service = AgentService(Reporter(self), runner)

        def GetAcceptedControls(self) -> int:  # noqa: N802 - pywin32's name
            return super().GetAcceptedControls() | win32service.SERVICE_ACCEPT_SHUTDOWN

        def SvcStop(self) -> None:  # noqa: N802 - pywin32's name
            self.service.stop()

        def SvcShutdown(self) -> None:  # noqa: N802
            self.service.stop()

        def SvcDoRun(self) -> None:  # noqa: N802
            self.service.run()

    return Service


def log_to_file(directory: Path) -> Path:
    """A service has no console: log to ``directory/agent.log`` (1 MB, 3 kept)."""
    from logging.handlers import RotatingFileHandler

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "agent.log"
    handler = RotatingFileHandler(path, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s devicetrust-agent %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def _programdata() -> Path:
    return Path(os.environ.get("ProgramData") or os.environ.get("PROGRAMDATA") or r"C:\ProgramData")


def dispatch(runner: AgentRunner) -> None:
    """Hand this process to the service control manager (``service run``), which runs
    ``runner`` (the CLI passes its ``run`` command, :class:`agent.cli.ClickRunner`)."""
    import servicemanager  # type: ignore[import-not-found]

    log_to_file(_programdata() / "devicetrust" / "logs")
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(_service_class(runner))
    servicemanager.StartServiceCtrlDispatcher()
