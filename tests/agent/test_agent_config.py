"""The agent's layered configuration (agent/config.py): sources, precedence, values, refusals.

The macOS managed-preferences file and the Windows policy values are fixtures
built in the formats those systems use (a binary plist of the profile's
``mcx_preference_settings``; ``winreg.EnumValue`` triples), not captured on a
Mac or a Windows machine: neither runs here.
"""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import config
from agent.config import (
    ArgsSource,
    ConfigError,
    EnvSource,
    FileSource,
    PlistSource,
    RegistrySource,
    WinregReader,
    merge,
    parse_fingerprint,
)
from agent.report import ReportScheduler
from trust_protocol.device_keys import fingerprint
from trust_protocol.encoding import b64e

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MAC_PLIST = FIXTURES / "macos" / "com.devicetrust.agent.plist"
WIN_VALUES = FIXTURES / "windows" / "policy-values.json"
FP_A = fingerprint(b"\x01" * 32)
FP_B = fingerprint(b"\x02" * 32)


def toml_file(tmp_path, text, name="agent.toml"):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o644)
    return path


class FakeWinreg:
    """Replays recorded ``EnumValue`` triples through the calls WinregReader makes."""

    HKEY_LOCAL_MACHINE = 0x80000002
    KEY_READ = 0x20019
    KEY_WOW64_64KEY = 0x0100

    def __init__(self, values, present=True):
        self.values = values
        self.present = present
        self.opened = []

    def OpenKey(self, root, key, reserved, access):  # noqa: N802 - winreg's name
        self.opened.append((root, key, reserved, access))
        if not self.present:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return self

    def EnumValue(self, handle, index):  # noqa: N802
        if index >= len(self.values):
            raise OSError(259, "No more data is available")
        return tuple(self.values[index])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def recorded_registry():
    return FakeWinreg(json.loads(WIN_VALUES.read_text())["values"])


# ---- precedence -------------------------------------------------------------------------


def test_each_layer_overrides_the_one_below_key_by_key(tmp_path):
    path = toml_file(
        tmp_path,
        'service_url = "https://file.example.com"\n'
        f'server_key_fingerprint = "{FP_A}"\n'
        "agent_ports = [1111]\n"
        'report_interval = "1 h"\n',
    )
    mdm = tmp_path / "managed.plist"
    mdm.write_bytes(plistlib.dumps({"service_url": "https://mdm.example.com", "agent_ports": 2222}))
    env = {"DEVICETRUST_AGENT_PORTS": "3333 3334", "DEVICETRUST_AGENT_REPORT_INTERVAL": "10 min"}
    cfg = merge(
        [
            FileSource(path),
            PlistSource(mdm),
            EnvSource(env),
            ArgsSource({"report_interval": "2 min", "agent_ports": None}),
        ]
    )
    assert cfg.service_url == "https://mdm.example.com"
    assert cfg.server_key_fingerprint == FP_A
    assert cfg.agent_ports == (3333, 3334)
    assert cfg.report_interval == 120.0
    assert cfg.sources == {
        "service_url": f"managed preferences {mdm}",
        "server_key_fingerprint": f"file {path}",
        "agent_ports": "environment",
        "report_interval": "command line",
    }


def test_nothing_configured_is_all_defaults(tmp_path):
    cfg = config.load({}, config_path=None, platform="linux", environ={
        "DEVICETRUST_AGENT_CONFIG": str(toml_file(tmp_path, ""))})  # fmt: skip
    assert (cfg.service_url, cfg.server_key_fingerprint, cfg.agent_ports, cfg.report_interval) == (
        None,
        None,
        None,
        None,
    )
    assert all(cfg.origin(k) == "default" for k in config.KEYS)


def test_per_os_locations_and_mdm_sources():
    assert config.default_config_path("linux") == Path("/etc/devicetrust/agent.toml")
    assert config.default_config_path("darwin") == Path(
        "/Library/Application Support/devicetrust/agent.toml"
    )
    win = config.default_config_path("win32", {"PROGRAMDATA": "D:\\PD"})
    assert win == Path("D:\\PD") / "devicetrust" / "agent.toml"
    assert config.default_mdm_source("linux") is None
    mac = config.default_mdm_source("darwin")
    assert isinstance(mac, PlistSource)
    assert mac.path == Path("/Library/Managed Preferences/com.devicetrust.agent.plist")
    assert isinstance(config.default_mdm_source("win32"), RegistrySource)
    names = [type(s).__name__ for s in config.default_sources({}, platform="darwin", environ={})]
    assert names == ["FileSource", "PlistSource", "EnvSource", "ArgsSource"]


def test_a_missing_default_file_is_fine_a_missing_named_one_is_not(tmp_path):
    assert FileSource(tmp_path / "absent.toml").read() is None
    with pytest.raises(ConfigError, match="no such configuration file"):
        config.load({}, environ={"DEVICETRUST_AGENT_CONFIG": str(tmp_path / "absent.toml")})


# ---- values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("15 min", 900),
        ("15m", 900),
        ("1 h 30 min", 5400),
        ("90 s", 90),
        (600, 600),
        ("24 h", 86400),
    ],
)
def test_intervals_as_people_write_them(written, seconds):
    assert merge([ArgsSource({"report_interval": written})]).report_interval == seconds


@pytest.mark.parametrize(
    "written", ["10 s", "2 d", "fortnight", "", True, -5, [1], "9" * 30 + " d", 10**400]
)
def test_impossible_intervals_are_refused_with_what_to_write(written):
    with pytest.raises(ConfigError, match="report_interval"):
        merge([ArgsSource({"report_interval": written})])


def test_fingerprints_in_either_spelling_read_the_same():
    key = bytes(range(32))
    fp = fingerprint(key)
    import hashlib

    assert parse_fingerprint(fp) == fp
    assert parse_fingerprint("  sha256:" + fp[7:] + "\n") == fp
    assert parse_fingerprint(hashlib.sha256(key).hexdigest().upper()) == fp
    for bad in ("SHA256:x", fp[7:], "MD5:" + fp[7:], fp + "A", 42, None):
        with pytest.raises(ValueError, match="fingerprint"):
            parse_fingerprint(bad)


@given(st.binary(min_size=32, max_size=32))
def test_every_key_fingerprint_parses_to_itself(key):
    fp = fingerprint(key)
    assert parse_fingerprint(fp) == fp


@given(st.text(max_size=80))
def test_fingerprint_parser_only_raises_value_error(text):
    try:
        out = parse_fingerprint(text)
    except ValueError:
        return
    assert out.startswith("SHA256:") and len(out) == 50


def test_ports_from_lists_strings_and_single_numbers():
    for written, ports in (([47621, "37123"], (47621, 37123)), ("1 2,3", (1, 2, 3)), (9, (9,))):
        assert merge([ArgsSource({"agent_ports": written})]).agent_ports == ports
    for bad in ([], [0], "70000", [True], "x"):
        with pytest.raises(ConfigError, match="agent_ports"):
            merge([ArgsSource({"agent_ports": bad})])


def test_service_url_is_checked_like_the_run_flag():
    cfg = merge([ArgsSource({"service_url": "HTTPS://SignIn.Example.com/"})])
    assert cfg.service_url == "https://signin.example.com"
    for bad in ("http://signin.example.com", "https://x.example/?code=ABCD", "", 5):
        with pytest.raises(ConfigError, match="service_url"):
            merge([ArgsSource({"service_url": bad})])


# ---- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["enrollment_code", "EnrollmentCode", "enroll-code", "code", "api_token", "Password"]
)
def test_an_enrollment_code_or_secret_in_any_source_is_refused(tmp_path, name):
    plist = tmp_path / "managed.plist"
    plist.write_bytes(plistlib.dumps({"service_url": "https://a.example", name: "ABCD-EFGH"}))
    registry = FakeWinreg([["service_url", "https://a.example", 1], [name, "ABCD-EFGH", 1]])
    sources = [
        PlistSource(plist),
        RegistrySource(WinregReader(module=registry)),
        FileSource(toml_file(tmp_path, f'"{name}" = "ABCD-EFGH"\n')),
    ]
    for source in sources:
        with pytest.raises(ConfigError) as err:
            merge([source])
        message = str(err.value)
        assert name in message and "login page" in message and "revoke" in message
        assert "ABCD-EFGH" not in message  # the code itself is never repeated


def test_unknown_keys_fail_in_the_file_and_warn_in_mdm_sources(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'service_ulr'"):
        merge([FileSource(toml_file(tmp_path, 'service_ulr = "https://a.example"\n'))])
    plist = tmp_path / "managed.plist"
    plist.write_bytes(plistlib.dumps({"future_setting": 1, "PayloadUUID": "X"}))
    cfg = merge([PlistSource(plist)])
    assert len(cfg.warnings) == 1 and "future_setting" in cfg.warnings[0]


def test_a_file_others_can_write_is_refused(tmp_path):
    path = toml_file(tmp_path, 'service_url = "https://a.example"\n')
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="chmod 644"):
        merge([FileSource(path)])


def test_broken_files_say_where(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        merge([FileSource(toml_file(tmp_path, "service_url = \n"))])
    bad = tmp_path / "managed.plist"
    bad.write_bytes(b"not a plist")
    with pytest.raises(ConfigError, match="com.devicetrust.agent configuration profile"):
        merge([PlistSource(bad)])


# ---- the recorded MDM sources ----------------------------------------------------------------


def test_macos_managed_preferences_fixture():
    cfg = merge([PlistSource(MAC_PLIST)])
    assert cfg.service_url == "https://signin.example.com"
    assert cfg.server_key_fingerprint == "SHA256:7eGQ0cJx6f1Ywq3b0bVxqk2bXQyGv0m8r3Zt5Jc8dF4"
    assert cfg.agent_ports == (47621, 37123)
    assert MAC_PLIST.read_bytes().startswith(b"bplist00")  # as macOS stores them


def test_windows_policy_values_through_winreg_calls():
    fake = recorded_registry()
    cfg = merge([RegistrySource(WinregReader(module=fake))])
    assert cfg.service_url == "https://signin.example.com"
    assert cfg.agent_ports == (47621, 37123)  # REG_MULTI_SZ, empty strings dropped
    assert cfg.report_interval == 900  # REG_DWORD seconds
    assert cfg.origin("service_url") == r"registry HKLM\SOFTWARE\Policies\devicetrust\Agent"
    # HKLM, the policy key, read only, the 64-bit view (a 32-bit process must not be redirected).
    assert fake.opened == [
        (0x80000002, r"SOFTWARE\Policies\devicetrust\Agent", 0, 0x20019 | 0x0100)
    ]


def test_windows_without_the_policy_key_or_with_a_binary_value():
    assert RegistrySource(WinregReader(module=FakeWinreg([], present=False))).read() is None
    binary = FakeWinreg([["service_url", b"\x00\x01", 3]])
    with pytest.raises(ConfigError, match="REG_SZ"):
        merge([RegistrySource(WinregReader(module=binary))])


def test_the_profile_template_carries_only_known_keys():
    profile = plistlib.loads(
        (ROOT / "packaging/macos/com.devicetrust.agent.mobileconfig").read_bytes()
    )
    prefs = profile["PayloadContent"][0]["PayloadContent"][config.MAC_DOMAIN]
    settings = prefs["Forced"][0]["mcx_preference_settings"]
    assert set(settings) <= set(config.KEYS)
    assert not any(config.looks_secret(k) for k in settings)


# ---- the command and the report interval ----------------------------------------------------


def agent_cli(*args, env=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("DEVICETRUST_")}
    full.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], env=full, capture_output=True, text=True, timeout=60
    )


def test_config_command_shows_values_and_where_they_came_from(tmp_path):
    path = toml_file(
        tmp_path, f'service_url = "https://a.example"\nserver_key_fingerprint = "{FP_A}"\n'
    )
    r = agent_cli(
        "--config", str(path), "--server-key-fingerprint", FP_B, "config", "--json",
        env={"DEVICETRUST_AGENT_REPORT_INTERVAL": "15 min"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["service_url"] == "https://a.example"
    assert data["server_key_fingerprint"] == FP_B
    assert data["report_interval"] == 900
    assert data["sources"] == {
        "service_url": f"file {path}",
        "server_key_fingerprint": "command line",
        "agent_ports": "default",
        "report_interval": "environment",
    }
    text = agent_cli("--config", str(path), "config").stdout
    assert "https://a.example" in text and f"(file {path})" in text


def test_a_bad_configuration_stops_with_exit_78_and_says_what_to_do(tmp_path):
    path = toml_file(tmp_path, 'enrollment_code = "ABCD-EFGH-JKLM-NPQR"\n')
    for args in (("config",), ("run", "--no-reports")):
        r = agent_cli("--state-dir", str(tmp_path / "s"), "--config", str(path), *args)
        assert r.returncode == 78
        assert "enrollment_code" in r.stderr and "ABCD-EFGH" not in r.stderr + r.stdout


def test_configured_interval_caps_what_the_service_asks(monkeypatch):
    from agent import report

    sched = ReportScheduler(None, None, lambda q: {}, ceiling=120.0)  # type: ignore[arg-type]
    assert sched.interval == 120.0
    for asked, used in ((600, 120.0), (60, 60.0)):
        monkeypatch.setattr(report, "report_once", lambda *a, _s=asked, **k: {"next_report_in": _s})
        sched.report_now()
        assert sched.interval == used
    free = ReportScheduler(None, None, lambda q: {})  # type: ignore[arg-type]
    monkeypatch.setattr(report, "report_once", lambda *a, **k: {"next_report_in": 600})
    free.report_now()
    assert free.interval == 600.0


def test_fingerprint_matches_the_protocols_key_encoding():
    key = bytes(range(32))
    assert fingerprint(key) == "SHA256:" + b64e(__import__("hashlib").sha256(key).digest())


@given(st.binary(max_size=300))
def test_any_bytes_as_managed_preferences_give_settings_or_a_config_error(data):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".plist") as fh:
        fh.write(data)
        fh.flush()
        try:
            merge([PlistSource(Path(fh.name))])
        except ConfigError:
            pass


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from([*config.KEYS, "x", "Token"]), values, max_size=5))
def test_any_values_in_a_source_give_a_config_or_a_config_error(raw):
    """What a profile or policy may hold, however wrong: checked values or a clear refusal."""
    try:
        cfg = merge([ArgsSource(raw)])
    except ConfigError:
        return
    assert cfg.service_url is None or cfg.service_url.startswith(("https://", "http://"))
    assert cfg.agent_ports is None or all(0 < p < 65536 for p in cfg.agent_ports)
    assert cfg.report_interval is None or 30 <= cfg.report_interval <= 86400
