"""The Linux packages (packaging/linux/): the self-contained agent, the .deb and .rpm,
their units and maintainer scripts, and the built agent end to end.

The module builds everything once (``packaging/linux/build-packages.sh`` into a
throwaway directory: a fresh venv, PyInstaller, nfpm; about 40 s on two cores)
and marks its tests ``package`` (deselect with ``-m "not package"``). Then:

* the bundle holds the agent and nothing of the server (pyi-archive_viewer);
* ``dpkg-deb --info/--contents`` and ``rpm -qp``: fields, files, modes, owners;
* the .deb installed, upgraded, removed and purged with ``dpkg --root`` in a
  throwaway root (``--force-script-chrootless``: the maintainer scripts run with
  ``DPKG_ROOT`` set, as for an image build);
* ``systemd-analyze verify`` on both units and ``systemd-analyze security`` on
  the system unit (this machine runs no systemd, so no unit is started);
* the maintainer scripts' service handling with systemd "running" (a private
  mount namespace with ``/run/systemd/system``) and recording stand-ins for
  systemctl and the deb-systemd helpers;
* the built executable under ``env -i`` (no Python, no venv) and the unit's
  main restrictions rebuilt without systemd (tests/unit_sandbox.py: its
  file-system view, capability bounding set, ``no_new_privs``, system-call
  filter, address families, memory-deny-write-execute): it enrolls with a live
  service, answers a Chromium sign-in and reports posture; its ``user-helper``,
  run as another uid, reports that user's screen lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from idp_service.platform.db import make_engine
from idp_service.posture.tables import DeviceFacts
from tests.browser import support as browser
from tests.posture_helpers import FIXTURES
from tests.procs import ROOT, AgentProc, free_port, start_service

pytestmark = [
    pytest.mark.package,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux packages"),
]

HERE = ROOT / "packaging" / "linux"
VERSION = "0.1.0"
UNIT = "devicetrust-agent.service"
USER_UNIT = "devicetrust-agent-user.service"
# What the system unit keeps (CapabilityBoundingSet=), for running the agent as it would.
UNIT_CAPS = "-all,+dac_read_search,+net_admin"
SERVER_ONLY = ("flask", "werkzeug", "sqlalchemy", "alembic", "xmlsec", "lxml", "onelogin",
               "idp_service", "scim", "psycopg", "gunicorn", "jinja2")  # fmt: skip


def _run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=600, **kw)


@pytest.fixture(scope="module")
def built():
    """dist/ with the bundle, the .deb and .rpm of VERSION, and a .deb of the next version."""
    # Readable by other uids (pytest's tmp dirs are 0700): the helper test runs the
    # bundle as uid 1000.
    top = Path(tempfile.mkdtemp(prefix="dt-package-"))
    top.chmod(0o755)
    env = {
        **os.environ,
        "BUILD_DIR": str(top / "build"),
        "DIST_DIR": str(top / "dist"),
        "PY": sys.executable,
    }
    started = time.monotonic()
    _run("bash", str(HERE / "build-packages.sh"), env=env)
    _run(
        "bash", str(HERE / "build-packages.sh"),
        env={**env, "SKIP_AGENT_BUILD": "1", "FORMATS": "deb", "PKG_VERSION": "0.1.1"},
    )  # fmt: skip
    print(f"\nbuilt the agent and its packages in {time.monotonic() - started:.0f} s")
    dist = top / "dist"
    yield {
        "dist": dist,
        "venv": top / "build" / "venv",
        "exe": dist / "devicetrust-agent" / "devicetrust-agent",
        "deb": dist / f"devicetrust-agent_{VERSION}-1_amd64.deb",
        "deb_next": dist / "devicetrust-agent_0.1.1-1_amd64.deb",
        "rpm": dist / f"devicetrust-agent-{VERSION}-1.x86_64.rpm",
    }
    shutil.rmtree(top, ignore_errors=True)


# --- the bundle -------------------------------------------------------------------------


def test_the_bundle_holds_the_agent_and_nothing_of_the_server(built):
    exe = built["exe"]
    listing = _run(str(built["venv"] / "bin" / "pyi-archive_viewer"), "-r", "-b", str(exe)).stdout
    modules = {line.strip() for line in listing.splitlines() if line.startswith(" ")}
    for needed in ("agent.cli", "agent.user_helper", "agent.collectors.linux", "nacl.signing",
                   "trust_protocol.strict_json", "psutil", "apscheduler.schedulers.background",
                   "click"):  # fmt: skip
        assert needed in modules, needed
    internal = [p.relative_to(exe.parent).as_posix().lower() for p in exe.parent.rglob("*")]
    for name in SERVER_ONLY:
        assert not [m for m in modules if m == name or m.startswith(name + ".")], name
        assert not [p for p in internal if re.search(rf"(^|/){name}[/._-]", p)], name
    # No Python of this machine is needed: no PYTHONPATH, no PATH, no HOME.
    version = _run("env", "-i", str(exe), "--version").stdout
    assert version.strip() == f"devicetrust-agent {VERSION}"
    assert "user-helper" in _run("env", "-i", str(exe), "--help").stdout


# --- the packages -------------------------------------------------------------------------


def test_the_deb_declares_its_files_modes_and_owners(built):
    deb = str(built["deb"])
    fields = {
        f: _run("dpkg-deb", "--field", deb, f).stdout.strip()
        for f in ("Package", "Version", "Architecture", "Depends", "Section")
    }
    assert fields["Package"] == "devicetrust-agent"
    assert fields["Version"] == f"{VERSION}-1"
    assert re.fullmatch(r"libc6 \(>= 2\.\d+\)", fields["Depends"])
    info = _run("dpkg-deb", "--info", deb).stdout
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert script in info
    control = Path(tempfile.mkdtemp())
    _run("dpkg-deb", "--control", deb, str(control))
    assert (control / "conffiles").read_text().split() == ["/etc/devicetrust/agent.toml"]
    for script in ("postinst", "prerm", "postrm"):
        assert (control / script).stat().st_mode & 0o777 == 0o755
    shutil.rmtree(control)

    entries = {}
    for line in _run("dpkg-deb", "--contents", deb).stdout.splitlines():
        mode, owner, _size, _date, _time, path, *rest = line.split()
        entries[path.removeprefix(".")] = (mode, owner, rest[1] if rest else None)
    expected = {
        "/usr/lib/devicetrust-agent/devicetrust-agent": "-rwxr-xr-x",
        "/usr/lib/systemd/system/devicetrust-agent.service": "-rw-r--r--",
        "/usr/lib/systemd/user/devicetrust-agent-user.service": "-rw-r--r--",
        "/etc/devicetrust/agent.toml": "-rw-r--r--",
        "/etc/devicetrust/": "drwxr-xr-x",
        "/usr/share/doc/devicetrust-agent/rollout.md": "-rw-r--r--",
        "/usr/share/doc/devicetrust-agent/copyright": "-rw-r--r--",
    }
    for path, mode in expected.items():
        assert entries[path][0] == mode, path
    assert entries["/usr/bin/devicetrust-agent"] == (
        "lrwxrwxrwx",
        "root/root",
        "/usr/lib/devicetrust-agent/devicetrust-agent",
    )
    assert {owner for _mode, owner, _target in entries.values()} == {"root/root"}
    for path, (mode, _owner, _target) in entries.items():
        assert mode[0] == "l" or mode[8] != "w", f"{path} is world-writable"
        assert "s" not in mode and "S" not in mode, f"{path} is setuid/setgid"
    # The state directory is not in the package: the scripts and systemd make it.
    assert not [p for p in entries if p.startswith("/var/")]
    # The conffile ships every key commented out: nothing is configured by default.
    toml = Path(HERE / "agent.toml").read_text()
    for key in ("service_url", "server_key_fingerprint", "agent_ports", "report_interval"):
        assert re.search(rf"^# {key} = ", toml, re.M), key
    assert not [line for line in toml.splitlines() if line.strip() and not line.startswith("#")]


def test_the_rpm_holds_the_same_files_and_its_own_scripts(built):
    rpm = str(built["rpm"])
    assert _run("rpm", "-qp", "--queryformat", "%{NAME} %{VERSION}-%{RELEASE}", rpm).stdout == (
        f"devicetrust-agent {VERSION}-1"
    )
    files = set(_run("rpm", "-qpl", rpm).stdout.split())
    deb_files = {
        line.split()[5].removeprefix(".").rstrip("/")
        for line in _run("dpkg-deb", "--contents", str(built["deb"])).stdout.splitlines()
    }
    assert {f for f in deb_files if f.startswith("/usr/lib/devicetrust-agent/")} <= files
    assert "/etc/devicetrust/agent.toml" in _run("rpm", "-qpc", rpm).stdout.split()
    assert re.search(r"^glibc >= 2\.\d+$", _run("rpm", "-qpR", rpm).stdout, re.M)
    scripts = _run("rpm", "-qp", "--scripts", rpm).stdout
    assert "try-restart devicetrust-agent.service" in scripts  # upgrade restarts
    assert "disable --now devicetrust-agent.service" in scripts  # erase stops


# --- installing into a throwaway root ------------------------------------------------------


def _new_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
        (root / d).mkdir(parents=True)
    for f in ("status", "available"):
        (root / "var/lib/dpkg" / f).touch()
    return root


def _dpkg(root: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(
        "dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
        "--force-confold", *args,
    )  # fmt: skip


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def test_install_upgrade_remove_and_purge_in_a_throwaway_root(built, tmp_path):
    root = _new_root(tmp_path)
    installed = _dpkg(root, "-i", str(built["deb"]))
    assert "systemd is not running here" in installed.stderr
    exe = root / "usr/lib/devicetrust-agent/devicetrust-agent"
    assert _mode(exe) == 0o755 and exe.stat().st_uid == 0
    assert os.readlink(root / "usr/bin/devicetrust-agent") == "/" + str(exe.relative_to(root))
    state = root / "var/lib/devicetrust/agent"
    assert _mode(state) == 0o700 and _mode(state.parent) == 0o755
    assert _mode(root / "etc/devicetrust/agent.toml") == 0o644
    # Enabled for boot, and the helper for every user's graphical session.
    wants = root / "etc/systemd/system/multi-user.target.wants" / UNIT
    user_wants = root / "etc/systemd/user/graphical-session.target.wants" / USER_UNIT
    assert os.readlink(wants) == f"/usr/lib/systemd/system/{UNIT}"
    assert os.readlink(user_wants) == f"/usr/lib/systemd/user/{USER_UNIT}"

    # The device enrolls (its keys and enrollment appear) and IT edits the config.
    (state / "sign.key").write_bytes(b"k" * 32)
    (state / "sign.key").chmod(0o644)  # as an older version might have left it
    (state / "enrollment.json").write_text('{"server_url": "https://login.example.com"}')
    (state / "enrollment.json").chmod(0o600)
    config = root / "etc/devicetrust/agent.toml"
    config.write_text(config.read_text() + '\nservice_url = "https://login.example.com"\n')

    upgraded = _dpkg(root, "-i", str(built["deb_next"]))
    assert "Unpacking devicetrust-agent (0.1.1-1) over (0.1.0-1)" in upgraded.stdout
    status = _run("dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "devicetrust-agent")
    assert status.stdout.split() == ["devicetrust-agent", "0.1.1-1"]
    assert (state / "sign.key").read_bytes() == b"k" * 32
    assert _mode(state / "sign.key") == 0o600  # tightened, kept
    assert "login.example.com" in (state / "enrollment.json").read_text()
    assert 'service_url = "https://login.example.com"' in config.read_text()  # kept
    assert os.path.islink(wants)

    _dpkg(root, "--remove", "devicetrust-agent")
    assert not exe.exists() and not (root / "usr/bin/devicetrust-agent").exists()
    assert (state / "sign.key").exists()  # remove keeps keys and enrollment
    assert config.exists()  # and the configuration

    _dpkg(root, "--purge", "devicetrust-agent")
    assert not (root / "var/lib/devicetrust").exists()  # purge deletes keys and state
    assert not (root / "etc/devicetrust").exists()
    assert not os.path.lexists(wants) and not os.path.lexists(user_wants)
    assert _run("dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "devicetrust-agent",
                check=False).returncode != 0  # fmt: skip


# --- the units ---------------------------------------------------------------------------


@pytest.fixture
def unit_root(built, tmp_path):
    """A throwaway root with the package installed and the targets its units name."""
    root = _new_root(tmp_path)
    _dpkg(root, "-i", str(built["deb"]))
    targets = root / "lib/systemd/system"
    targets.mkdir(parents=True)
    for pattern in ("*.target", "*.slice"):
        for unit in Path("/lib/systemd/system").glob(pattern):
            shutil.copy(unit, targets, follow_symlinks=True)
    # `systemd-analyze --user` takes no --root: the user unit is verified by the
    # same parser as a system unit, with the user target it names.
    shutil.copy("/usr/lib/systemd/user/graphical-session.target", targets)
    shutil.copy(root / "usr/lib/systemd/user" / USER_UNIT, root / "etc/systemd/system")
    return root


def _verify(root: Path, unit: str) -> subprocess.CompletedProcess:
    return _run("systemd-analyze", "verify", f"--root={root}", "--man=no", unit, check=False)


def test_every_unit_verifies_cleanly(unit_root):
    for unit in (UNIT, USER_UNIT):
        result = _verify(unit_root, unit)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), unit
    # A control: the same check reports a misspelt key and a bad value.
    broken = (unit_root / "usr/lib/systemd/system" / UNIT).read_text()
    broken = broken.replace("PrivateTmp=yes", "PrivateTemp=yes").replace(
        "ProtectSystem=strict", "ProtectSystem=strictest"
    )
    (unit_root / "etc/systemd/system/broken-agent.service").write_text(broken)
    output = _verify(unit_root, "broken-agent.service")
    assert "PrivateTemp" in output.stderr and "strictest" in output.stderr


def test_the_system_unit_is_hardened(unit_root):
    unit = (unit_root / "usr/lib/systemd/system" / UNIT).read_text()
    settings = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["NoNewPrivileges"] == ["yes"] and settings["PrivateTmp"] == ["yes"]
    assert settings["ReadWritePaths"] == ["/var/lib/devicetrust/agent"]
    assert settings["StateDirectory"] == ["devicetrust/agent"]
    assert settings["StateDirectoryMode"] == ["0700"]
    assert settings["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH CAP_NET_ADMIN"]
    assert set(settings["RestrictAddressFamilies"][0].split()) <= {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"
    }  # fmt: skip
    for cap in ("CAP_DAC_READ_SEARCH", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SETUID"):
        assert re.search(rf"^#\s+{cap}\s+\S", unit, re.M), f"{cap} is not explained"
    report = _run(
        "systemd-analyze", "security", "--offline=yes", f"--root={unit_root}", "--no-pager", UNIT,
        check=False,
    )  # fmt: skip
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report.stdout)
    assert score, report.stdout + report.stderr
    # docs/rollout.md records the figure and what keeps it from being lower.
    assert float(score.group(1)) <= 2.5, report.stdout
    for line in ("CapabilityBoundingSet=~CAP_SYS_ADMIN", "CapabilityBoundingSet=~CAP_SET(UID"):
        assert re.search(rf"✓ {re.escape(line)}", report.stdout), line


# --- the maintainer scripts with systemd running ----------------------------------------------


FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0") $1" in
  "deb-systemd-invoke start"|"deb-systemd-invoke restart") [ "$FAIL_START" = 1 ] && exit 1 ;;
esac
exit 0
"""


@pytest.fixture
def scripts(built, tmp_path):
    """Run the .deb's maintainer scripts as on a host where systemd runs."""
    if os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    control = tmp_path / "control"
    _run("dpkg-deb", "--control", str(built["deb"]), str(control))
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for name in ("systemctl", "deb-systemd-invoke", "deb-systemd-helper"):
        (fakes / name).write_text(FAKE)
        (fakes / name).chmod(0o755)
    calls = tmp_path / "calls"

    def run(script: str, *args: str, fail_start: bool = False):
        calls.write_text("")
        # /run/systemd/system says "systemd runs"; /run and /var/lib are private tmpfs,
        # so nothing on this machine changes.
        setup = (
            "mount -t tmpfs none /run && mkdir -p /run/systemd/system && "
            'mount -t tmpfs none /var/lib && exec "$@"'
        )
        result = _run(
            "unshare", "-m", "sh", "-c", setup, "sh", str(control / script), *args,
            env={"PATH": f"{fakes}:/usr/sbin:/usr/bin:/sbin:/bin", "CALLS": str(calls),
                 "FAIL_START": "1" if fail_start else "0"},
            check=False,
        )  # fmt: skip
        return result, calls.read_text().splitlines()

    return run


def test_install_starts_upgrade_restarts_remove_stops(scripts):
    result, calls = scripts("postinst", "configure", "")
    assert result.returncode == 0
    assert f"deb-systemd-helper enable {UNIT}" in calls
    assert f"deb-systemd-helper --user enable {USER_UNIT}" in calls
    assert calls[-1] == f"deb-systemd-invoke start {UNIT}"

    result, calls = scripts("postinst", "configure", "0.1.0-1")
    assert result.returncode == 0 and calls[-1] == f"deb-systemd-invoke restart {UNIT}"

    result, calls = scripts("prerm", "upgrade", "0.1.1-1")
    assert result.returncode == 0 and not [c for c in calls if "stop" in c]
    result, calls = scripts("prerm", "remove")
    assert result.returncode == 0 and calls == [f"deb-systemd-invoke stop {UNIT}"]
    result, calls = scripts("postrm", "remove")
    assert f"deb-systemd-helper mask {UNIT}" in calls


def test_a_failed_start_leaves_the_package_configured_and_says_why(scripts):
    result, calls = scripts("postinst", "configure", "", fail_start=True)
    assert result.returncode == 0  # dpkg records the package as installed
    assert f"deb-systemd-helper enable {UNIT}" in calls  # it starts at the next boot
    assert "did not start" in result.stderr
    assert f"journalctl -u {UNIT}" in result.stderr
    assert f"systemctl --no-pager --lines=5 status {UNIT}" in calls
    assert "keys and enrollment in /var/lib/devicetrust/agent are unchanged" in result.stderr


# --- the built agent, end to end ------------------------------------------------------------


def _built_agent(built, tmp_path: Path, name: str, port: int, *, keep=(), writable=()) -> AgentProc:
    """A device run by the built executable with an empty environment (``env -i``),
    and as root with the system unit's capability bounding set and no_new_privs; always
    with its system-call filter, address families and memory-deny-write-execute."""
    variables = [
        f"DEVICETRUST_AGENT_PORTS={port}",
        f"DEVICETRUST_AGENT_HARDWARE_UUID=hw-{name}-{port}",
        f"DEVICETRUST_AGENT_SERIAL=SN-{name.upper()}-{port}",
    ]
    # The unit's SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute=,
    # without systemd; loaded after the capabilities are set, as systemd does (the
    # filter refuses capset). As root, also its file-system view: only the state
    # directory (and the socket's, RuntimeDirectory=) writable, a private /tmp that
    # shows only the program and the state, a /dev of pseudo-devices.
    state = tmp_path / f"agent-{name}"
    state.mkdir(mode=0o700)  # StateDirectory= makes it before the agent starts
    command = _sandboxed(["env", "-i", *variables, str(built["exe"])])
    if os.geteuid() == 0:
        # In systemd's order: the mount namespace (which needs CAP_SYS_ADMIN), then the
        # capabilities, then the seccomp filters.
        files = ["--protect-system", f"--keep={built['dist']}", f"--writable={state}"]
        files += [f"--keep={p}" for p in keep] + [f"--writable={p}" for p in writable]
        command = [sys.executable, str(ROOT / "tests" / "unit_sandbox.py"), *files, "--",
                   "setpriv", "--bounding-set", UNIT_CAPS, "--no-new-privs", *command]  # fmt: skip
    return AgentProc(state_dir=state, port=port, env=dict(os.environ), command=command)


def _unit_settings(key: str) -> list[str]:
    unit = (HERE / "systemd" / UNIT).read_text()
    return re.findall(rf"^{key}=(.+)$", unit, re.M)


def _unit_families() -> list[str]:
    return _unit_settings("RestrictAddressFamilies")[0].split()


def _sandboxed(command: list[str], families: list[str] | None = None) -> list[str]:
    """``command`` under the unit's system-call filter, address families (or
    ``families``) and memory-deny-write-execute (tests/unit_sandbox.py)."""
    families = _unit_families() if families is None else families
    filters = [f"--syscalls={f}" for f in _unit_settings("SystemCallFilter")]
    assert filters and _unit_settings("SystemCallErrorNumber") == ["EPERM"]
    sandbox = str(ROOT / "tests" / "unit_sandbox.py")
    return [sys.executable, sandbox, "--mdwe", "--families", ",".join(families), *filters,
            "--", *command]  # fmt: skip


def test_the_facts_are_complete_under_the_units_system_call_and_address_family_filters(built):
    if not shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        pytest.skip("nftables is not installed (packaging/system-deps.sh installs it)")

    def facts(families: list[str] | None) -> dict:
        argv = ["env", "-i", str(built["exe"]), "facts"]
        return json.loads(_run(*(argv if families is None else _sandboxed(argv, families))).stdout)

    free, allowed = facts(None), _unit_families()
    confined = facts(allowed)
    # No collector fails because of the restriction (and the same ones as without it).
    assert [e["collector"] for e in confined["errors"]] == [e["collector"] for e in free["errors"]]
    assert [p["name"] for p in confined["firewall"]["products"]] == ["nftables"]
    # A control: the same sandbox does refuse a privileged call (chroot, as root).
    refused = _run(*_sandboxed(["chroot", "/", "true"]), check=False)
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    # Without AF_NETLINK nft cannot read the ruleset and the firewall becomes
    # unknown: this is why the unit allows it (its comment says so).
    without = facts([f for f in allowed if f != "AF_NETLINK"])["firewall"]
    assert without["products"] == [] and without["enabled"] is None


def _facts(svc, device_id: str, seq: int = 1) -> dict:
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                row = conn.execute(
                    select(DeviceFacts.report_seq, DeviceFacts.stored, DeviceFacts.volatile).where(
                        DeviceFacts.device_id == device_id
                    )
                ).first()
            if row is not None and row[0] >= seq:
                _seq, stored, volatile = row
                return {**stored, **(volatile or {})}
            time.sleep(0.2)
        raise AssertionError(f"the agent never sent report {seq}:\n" + svc.log()[-2000:])
    finally:
        engine.dispose()


@pytest.fixture
def service(tmp_path):
    port = free_port()
    svc = start_service(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", agent_ports=[port])
    svc.agent_port = port
    yield svc
    svc.stop()


@pytest.mark.browser
def test_the_built_agent_enrolls_answers_a_chromium_sign_in_and_reports(
    built, service, tmp_path, artifacts
):
    agent = _built_agent(built, tmp_path, "built", service.agent_port)
    enrolled = agent.enroll(service.url, service.enroll_code("ines@example.com"))
    assert enrolled["user"] == "ines@example.com"
    assert _mode(agent.state_dir) == 0o700
    assert agent.cli("status").returncode == 0
    assert {_mode(p) for p in agent.state_dir.glob("*.key")} == {0o600}
    agent.start("--no-approvals")
    try:
        with browser.chromium() as b:
            page = b.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{service.url}/login")
            page.wait_for_selector("h1.ok", timeout=20000)
            assert page.locator("h1").inner_text() == "Device verified"
            assert "ines@example.com" in page.content()
            page.screenshot(path=str(artifacts / "built-agent-verified.png"))
            assert errors == []
        device_id = agent.cli_json("id")["device_id"]
        facts = _facts(service, device_id)
    finally:
        agent.stop()
    assert facts["agent"]["version"] == VERSION
    assert facts["os"]["family"] == "linux" and facts["hostname"] == socket.gethostname()
    # The real collectors ran in the frozen agent, without CAP_SYS_ADMIN or CAP_SETUID.
    assert facts["disk_encryption"] is not None
    assert agent.log().count("Traceback") == 0


def test_the_built_user_helper_reports_the_console_users_screen_lock(built, service, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("running the helper as another uid needs root")
    shared = Path(tempfile.mkdtemp(prefix="dt-user-sock-"))
    shared.chmod(0o755)
    sock = shared / "user.sock"
    device = tmp_path / "device"  # carol (uid 1000) at the seat; dave (1002) remote
    shutil.copytree(FIXTURES / "linux" / "luks2", device, symlinks=True)
    agent = _built_agent(
        built, tmp_path, "helper", service.agent_port, keep=[device], writable=[shared]
    )
    agent.enroll(service.url, service.enroll_code("carol@example.com"))
    agent.start("--replay", str(device), "--user-socket", str(sock), "--no-approvals")
    try:
        device_id = agent.cli_json("id")["device_id"]
        first = _facts(service, device_id, 1)["screen_lock"]["users"]
        assert first == [{**first[0], "user": "carol", "timeout_seconds": 900}]  # recorded

        def helper(uid: int) -> subprocess.CompletedProcess:
            return _run(
                "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "env", "-i", "HOME=/nonexistent", str(built["exe"]),
                "user-helper", "--once", "--json", "--socket", str(sock),
                check=False,
            )  # fmt: skip

        carol = helper(1000)
        assert carol.returncode == 0, carol.stderr
        sent = json.loads(carol.stdout)["sent"]
        assert sent["source"] == "gsettings" and sent["timeout_seconds"] == 300  # GNOME default
        dave = helper(1002)
        assert dave.returncode == 1 and "uid_not_accepted" in dave.stderr

        recheck = httpx.post(
            f"http://127.0.0.1:{agent.port}/v1/recheck",
            content=b"{}",
            headers={"Origin": service.url},
            timeout=30,
        )
        assert recheck.json()["status"] == "reported"
        users = _facts(service, device_id, 2)["screen_lock"]["users"]
        assert users == [{"user": "carol", **sent}]
    finally:
        agent.stop()
        shutil.rmtree(shared, ignore_errors=True)
    assert "uid 1002 is not a graphical console user" in agent.log()
