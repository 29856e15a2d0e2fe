"""The Windows installer, built here with wixl from packaging/windows/devicetrust-agent.wxs.

Windows does not run here, so the MSI is checked as a database (msiinfo, from
Debian's msitools): the service it registers, how it is controlled, the
custom action that sets recovery and permissions, what files go where, and that
it never writes the Intune policy key. The custom action's command line is
parsed by the agent's own command, as Windows would run it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WXS = ROOT / "packaging/windows/devicetrust-agent.wxs"


def table(msi, name):
    """Rows of one MSI table as dicts (msiinfo export: header, types, table name, rows)."""
    out = subprocess.run(
        ["msiinfo", "export", str(msi), name], capture_output=True, text=True, check=True
    ).stdout
    lines = out.split("\r\n") if "\r\n" in out else out.split("\n")
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[3:] if line]


@pytest.fixture(scope="module")
def msi(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("msi")
    exe = tmp / "devicetrust-agent.exe"
    exe.write_bytes(b"MZ stand-in for the PyInstaller executable\n")
    out = tmp / "devicetrust-agent.msi"
    r = subprocess.run(
        [str(ROOT / "packaging/windows/build-msi.sh"), str(exe), "1.2.3", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    # wixl's only complaint is the WiX attribute it does not know (see the .wxs).
    complaints = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert all("'Schedule'" in ln for ln in complaints), complaints
    return out


def test_tables_are_there(msi):
    tables = subprocess.run(
        ["msiinfo", "tables", str(msi)], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in ("ServiceInstall", "ServiceControl", "File", "Registry", "CustomAction", "Upgrade"):
        assert name in tables


def test_the_service_is_registered_automatic_as_localsystem(msi):
    (svc,) = table(msi, "ServiceInstall")
    assert svc["Name"] == "devicetrust-agent"
    assert svc["ServiceType"] == "16"  # SERVICE_WIN32_OWN_PROCESS
    assert svc["StartType"] == "2"  # SERVICE_AUTO_START
    assert svc["ErrorControl"] == "1"  # SERVICE_ERROR_NORMAL
    assert svc["StartName"] == "LocalSystem" and svc["Password"] == ""
    assert svc["Arguments"] == "service run"
    (ctl,) = table(msi, "ServiceControl")
    # start on install (0x1), stop on install (0x2) and uninstall (0x20), delete on uninstall (0x80)
    assert int(ctl["Event"]) == 0x1 | 0x2 | 0x20 | 0x80
    assert ctl["Name"] == "devicetrust-agent" and ctl["Wait"] == "1"


def test_configure_runs_as_system_between_registering_and_starting(msi):
    (ca,) = table(msi, "CustomAction")
    assert ca["Action"] == "ConfigureService"
    # 18 = exe from an installed file; 1024 deferred; 2048 no impersonation (SYSTEM); checked
    assert int(ca["Type"]) == 18 | 1024 | 2048
    assert ca["Source"] == "AgentExe"
    seq = {row["Action"]: row for row in table(msi, "InstallExecuteSequence")}
    order = int(seq["ConfigureService"]["Sequence"])
    assert int(seq["InstallServices"]["Sequence"]) < order < int(seq["StartServices"]["Sequence"])
    assert order < int(seq["InstallFinalize"]["Sequence"])  # deferred actions must be in-script
    assert seq["ConfigureService"]["Condition"] == "NOT REMOVE"


def test_the_custom_action_command_line_is_one_the_agent_accepts(msi):
    import shlex

    from agent.cli import service_configure

    (ca,) = table(msi, "CustomAction")
    props = {row["Property"]: row["Value"] for row in table(msi, "Property")}
    assert props["SERVICE_URL"].strip() == "" and props["SERVER_KEY_FINGERPRINT"].strip() == ""
    for url, fp in (("https://signin.example.com", "SHA256:" + "A" * 43), (" ", " ")):
        target = ca["Target"].replace("[SERVICE_URL]", url).replace("[SERVER_KEY_FINGERPRINT]", fp)
        args = shlex.split(target)
        assert args[:2] == ["service", "configure"]
        ctx = service_configure.make_context("configure", args[2:])
        assert ctx.params == {"service_url": url, "fingerprint": fp}


def test_files_go_to_program_files_and_programdata(msi):
    files = {row["File"]: row for row in table(msi, "File")}
    assert files["AgentExe"]["FileName"] == "devicetrust-agent.exe"
    assert files["ConfigExample"]["FileName"] == "agent.toml.example"
    components = {row["Component"]: row for row in table(msi, "Component")}
    dirs = {row["Directory"]: row for row in table(msi, "Directory")}
    exe_dir = components[files["AgentExe"]["Component_"]]["Directory_"]
    conf_dir = components[files["ConfigExample"]["Component_"]]["Directory_"]
    assert dirs[exe_dir]["Directory_Parent"] == "ProgramFiles64Folder"
    assert dirs[conf_dir]["Directory_Parent"] == "CommonAppDataFolder"
    assert all(int(c["Attributes"]) & 256 for c in components.values())  # 64-bit components
    assert {row["Directory_"] for row in table(msi, "CreateFolder")} == {conf_dir}


def test_no_agent_toml_and_no_policy_values_are_installed(msi):
    # agent.toml belongs to the admin (an upgrade must not replace it), the policy key to Intune.
    assert all(row["FileName"] != "agent.toml" for row in table(msi, "File"))
    assert table(msi, "Registry") == []


def test_upgrades_replace_older_and_refuse_downgrades(msi, tmp_path):
    rows = table(msi, "Upgrade")
    assert {r["ActionProperty"] for r in rows} == {"WIX_UPGRADE_DETECTED", "WIX_DOWNGRADE_DETECTED"}
    assert {r["UpgradeCode"] for r in rows} == {"{8E2A5F0C-3B7D-4C19-A6E4-1D9F0B2C7A35}"}
    (cond,) = table(msi, "LaunchCondition")
    assert cond["Condition"] == "NOT WIX_DOWNGRADE_DETECTED"
    props = {row["Property"]: row["Value"] for row in table(msi, "Property")}
    assert props["ProductVersion"] == "1.2.3"
    info = subprocess.run(
        ["msiinfo", "suminfo", str(msi)], capture_output=True, text=True, check=True
    ).stdout
    assert "Template: x64;1033" in info


def test_the_packaged_executable_is_the_one_given(msi, tmp_path):
    subprocess.run(["msiextract", "-C", str(tmp_path), str(msi)], check=True, capture_output=True)
    exe = tmp_path / "devicetrust" / "devicetrust-agent.exe"
    assert exe.read_bytes() == b"MZ stand-in for the PyInstaller executable\n"


def test_admx_policies_write_the_keys_the_agent_reads():
    from lxml import etree

    from agent import config

    ns = {"p": "http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions"}
    admx = etree.parse(str(ROOT / "packaging/windows/admx/devicetrust.admx"))
    adml = etree.parse(str(ROOT / "packaging/windows/admx/en-US/devicetrust.adml"))
    strings = {s.get("id") for s in adml.iterfind(".//p:stringTable/p:string", ns)}
    presentations = {
        p.get("id"): {t.get("refId") for t in p.iterfind("p:textBox", ns)}
        for p in adml.iterfind(".//p:presentationTable/p:presentation", ns)
    }
    names = set()
    for policy in admx.iterfind(".//p:policies/p:policy", ns):
        assert policy.get("class") == "Machine"
        assert policy.get("key").lower() == config.WINDOWS_POLICY_KEY.lower()
        assert policy.get("displayName")[len("$(string.") : -1] in strings
        assert policy.get("explainText")[len("$(string.") : -1] in strings
        (text,) = policy.iterfind("p:elements/p:text", ns)
        names.add(text.get("valueName"))
        assert presentations[policy.get("presentation")[len("$(presentation.") : -1]] == {
            text.get("id")
        }
    assert names == set(config.KEYS)
    # Every string reference in the ADMX resolves.
    for ref in admx.getroot().iter():
        for value in ref.attrib.values():
            if value.startswith("$(string."):
                assert value[len("$(string.") : -1] in strings
