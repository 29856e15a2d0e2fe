"""The Windows service wrapper (agent/windows_service.py) on recorded SCM call sequences.

Windows does not run here. The service control manager's side is played by a
recorder of the status reports and event-log entries the wrapper makes; the
agent's side is the real ``devicetrust-agent run`` loop in a thread (stopped by
the service's event, as SvcStop does), or a runner that fails. ``service
configure`` is checked against the win32service and icacls calls it makes.
"""

from __future__ import annotations

import threading
import time

import httpx

from agent import windows_service as ws
from agent.cli import ClickRunner
from tests.procs import free_port

STATE_NAMES = {1: "STOPPED", 2: "START_PENDING", 3: "STOP_PENDING", 4: "RUNNING"}


class Recorder:
    """Plays the SCM: records SetServiceStatus calls and event-log entries."""

    def __init__(self):
        self.calls = []
        self.running = threading.Event()

    def report(self, state, *, exit_code=0, wait_hint_ms=0):
        self.calls.append(("status", STATE_NAMES[state], exit_code))
        if state == ws.SERVICE_RUNNING:
            self.running.set()

    def event(self, error, message):
        self.calls.append(("event", "error" if error else "info", message))

    def states(self):
        return [c[1:] for c in self.calls if c[0] == "status"]


class FailingRunner:
    def __init__(self, code):
        self.code = code

    def run(self, stop):
        return self.code


def run_in_thread(service):
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    return thread


def test_scm_start_then_stop_runs_and_ends_the_real_agent_loop(tmp_path, monkeypatch):
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(f"agent_ports = [{port}]\n")
    config.chmod(0o644)
    monkeypatch.setenv("DEVICETRUST_AGENT_CONFIG", str(config))
    monkeypatch.setenv("DEVICETRUST_AGENT_STATE_DIR", str(tmp_path / "state"))
    recorder = Recorder()
    service = ws.AgentService(recorder, ClickRunner(("run", "--no-reports", "--no-approvals")))
    thread = run_in_thread(service)  # SCM: StartService -> SvcDoRun
    assert recorder.running.wait(10)
    deadline = time.monotonic() + 20
    while True:  # the loop is really up: its local channel answers
        try:
            assert httpx.get(f"http://127.0.0.1:{port}/v1/ping").json()["agent"] == "devicetrust"
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    service.stop()  # SCM: ControlService(STOP) -> SvcStop
    thread.join(30)
    assert not thread.is_alive()
    assert recorder.states() == [
        ("START_PENDING", 0),
        ("RUNNING", 0),
        ("STOP_PENDING", 0),
        ("STOPPED", 0),
    ]
    assert ("event", "info", "devicetrust agent stopped") in recorder.calls
    try:  # the channel is closed
        httpx.get(f"http://127.0.0.1:{port}/v1/ping", timeout=1)
        raise AssertionError("still listening")
    except httpx.TransportError:
        pass


def test_a_failing_agent_stops_with_its_code_so_recovery_applies():
    recorder = Recorder()
    assert ws.AgentService(recorder, FailingRunner(1)).run() == 1
    assert recorder.states()[-1] == ("STOPPED", 1)
    errors = [c for c in recorder.calls if c[:2] == ("event", "error")]
    assert len(errors) == 1 and "recovery actions" in errors[0][2]


def test_a_configuration_problem_says_how_to_look(tmp_path, monkeypatch):
    config = tmp_path / "agent.toml"
    config.write_text('enrollment_code = "ABCD-EFGH"\n')
    config.chmod(0o644)
    monkeypatch.setenv("DEVICETRUST_AGENT_CONFIG", str(config))
    monkeypatch.setenv("DEVICETRUST_AGENT_STATE_DIR", str(tmp_path / "state"))
    recorder = Recorder()
    code = ws.AgentService(recorder, ClickRunner(("run",))).run()
    assert code == 78
    assert recorder.states()[-1] == ("STOPPED", 78)
    assert any("devicetrust-agent status" in c[2] for c in recorder.calls if c[0] == "event")


class RecordedWin32Service:
    """The win32service calls Pywin32ScmConfig makes, recorded."""

    SC_MANAGER_CONNECT = 0x0001
    SERVICE_CHANGE_CONFIG = 0x0002
    SERVICE_START = 0x0010
    SERVICE_CONFIG_FAILURE_ACTIONS = 2
    SERVICE_CONFIG_FAILURE_ACTIONS_FLAG = 4

    def __init__(self):
        self.calls = []

    def OpenSCManager(self, machine, db, access):  # noqa: N802 - pywin32's names
        self.calls.append(("OpenSCManager", machine, db, access))
        return "scm"

    def OpenService(self, scm, name, access):  # noqa: N802
        self.calls.append(("OpenService", scm, name, access))
        return "svc"

    def ChangeServiceConfig2(self, handle, level, value):  # noqa: N802
        self.calls.append(("ChangeServiceConfig2", handle, level, value))

    def CloseServiceHandle(self, handle):  # noqa: N802
        self.calls.append(("CloseServiceHandle", handle))


class RecordedIcacls:
    def __init__(self):
        self.calls = []

    def icacls(self, args):
        self.calls.append(args)


def test_configure_locks_folders_then_sets_recovery(tmp_path):
    win32service = RecordedWin32Service()
    acl = RecordedIcacls()
    steps = ws.configure(ws.Pywin32ScmConfig(win32service), acl, tmp_path)
    assert (tmp_path / "devicetrust" / "agent").is_dir()
    base, state = str(tmp_path / "devicetrust"), str(tmp_path / "devicetrust" / "agent")
    assert acl.calls == [
        [base, "/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F",
         "*S-1-5-32-545:(OI)(CI)RX"],
        [state, "/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"],
    ]  # fmt: skip
    changes = [c for c in win32service.calls if c[0] == "ChangeServiceConfig2"]
    assert changes == [
        (
            "ChangeServiceConfig2",
            "svc",
            2,
            {
                "ResetPeriod": 86400,
                "RebootMsg": "",
                "Command": "",
                "Actions": [(1, 5000), (1, 30000), (1, 60000)],
            },
        ),
        ("ChangeServiceConfig2", "svc", 4, True),
    ]
    opened = [c for c in win32service.calls if c[0] == "OpenService"]
    assert all(c[2] == "devicetrust-agent" for c in opened)
    closes = [c for c in win32service.calls if c[0] == "CloseServiceHandle"]
    assert len(closes) == 2 * len(changes)  # every handle closed
    assert "restart after 5 s, 30 s, 60 s" in steps[-1]


def test_the_service_commands_refuse_other_systems():
    from click.testing import CliRunner

    from agent.cli import cli

    for sub in ("run", "configure"):
        result = CliRunner().invoke(cli, ["service", sub])
        assert result.exit_code == 1 and "devicetrust-agent run" in result.output


def test_configure_writes_the_installers_settings_and_checks_them(tmp_path):
    fp = "SHA256:" + "A" * 43
    acl = RecordedIcacls()
    settings = {"service_url": "https://signin.example.com/", "server_key_fingerprint": fp}
    steps = ws.configure(ws.Pywin32ScmConfig(RecordedWin32Service()), acl, tmp_path, settings)
    config_file = tmp_path / "devicetrust" / "agent.toml"
    from agent.config import FileSource, merge

    cfg = merge([FileSource(config_file)])
    assert (cfg.service_url, cfg.server_key_fingerprint) == ("https://signin.example.com", fp)
    assert steps[0] == f"{config_file}: set server_key_fingerprint, service_url"
    # An upgrade without the properties (blank, as the MSI passes them) keeps the file.
    before = config_file.read_text()
    blank = {"service_url": " ", "server_key_fingerprint": ""}
    ws.configure(ws.Pywin32ScmConfig(RecordedWin32Service()), acl, tmp_path, blank)
    assert config_file.read_text() == before
    # A typo fails before folders or the service are touched.
    acl2, scm2 = RecordedIcacls(), RecordedWin32Service()
    import pytest

    from agent.config import ConfigError

    with pytest.raises(ConfigError, match="server_key_fingerprint"):
        ws.configure(
            ws.Pywin32ScmConfig(scm2), acl2, tmp_path, {"server_key_fingerprint": "SHA1:x"}
        )
    assert acl2.calls == [] and scm2.calls == []
    assert config_file.read_text() == before
