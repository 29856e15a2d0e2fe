"""The macOS and Windows hardware-id readers, on recorded outputs through the runner seam.

Detection compares these identifiers across answers, so the readers must pull
the right values out of what ``ioreg`` and PowerShell really print, and give
None (not a wrong value) when the tool fails or prints nothing useful.
"""

from __future__ import annotations

import pytest

from agent import platform_ids

IOREG_APPLE_SILICON = """\
+-o MacBookPro18,3  <class IOPlatformExpertDevice, id 0x100000116, registered, matched, \
active, busy 0 (156 ms), retain 37>
    {
      "IOPolledInterface" = "AppleARMWatchdogTimerHibernateHandler is not serializable"
      "#address-cells" = <02000000>
      "AAPL,phandle" = <01000000>
      "serial-number" = <43303258314c3044484a500000000000000000000000000000000000000000>
      "IOBusyInterest" = "IOCommand is not serializable"
      "target-type" = <"J314s">
      "platform-name" = <"t6000">
      "secure-root-prefix" = <"md">
      "name" = <"device-tree">
      "region-info" = <"LL/A">
      "manufacturer" = <"Apple Inc.">
      "compatible" = <"J314sAP","MacBookPro18,3","AppleARM">
      "IOPlatformSerialNumber" = "C02X1L0DHJP"
      "regulatory-model-number" = <"A2442">
      "time-stamp" = <"Wed Sep  1 22:01:08 PDT 2021">
      "clock-frequency" = <00366e01>
      "model" = <"MacBookPro18,3">
      "IOPlatformUUID" = "8E4B1F2A-3C5D-5E6F-9A0B-1C2D3E4F5A6B"
      "IONWInterrupts" = "IONWInterrupts"
      "model-number" = <4d4b47523300000000000000000000000000000000000000000000000000>
      "device_type" = <"bootrom">
      "#size-cells" = <02000000>
    }
"""

IOREG_INTEL = """\
+-o MacBookPro16,1  <class IOPlatformExpertDevice, id 0x10000020f, registered, matched, \
active, busy 0 (1034 ms), retain 30>
    {
      "IOPlatformSystemSleepPolicy" = <534c505402000a00640200000000000000000000>
      "compatible" = <"MacBookPro16,1">
      "version" = <"1.0">
      "board-id" = <"Mac-E1008331FDC96864">
      "IOInterruptSpecifiers" = (<0900000005000000>)
      "IOPlatformUUID" = "564D5A0C-77E6-6B4F-A1E3-9C0F5B4E2D11"
      "serial-number" = <433032434b30305a4d443652000000000000000000000000000000000000>
      "IOPlatformSerialNumber" = "C02CK00ZMD6R"
      "manufacturer" = <"Apple Inc.">
      "product-name" = <"MacBookPro16,1">
      "model" = <"MacBookPro16,1">
    }
"""

POWERSHELL_JSON = """\
{
    "UUID":  "4C4C4544-0042-3510-8052-B4C04F4E4D32",
    "IdentifyingNumber":  "4B5RNM2"
}
"""

POWERSHELL_ERROR_STDOUT = ""  # Get-CimInstance failing writes only to stderr


@pytest.fixture
def runner(monkeypatch):
    """Replace the runner seam; record the commands and answer with ``outputs``."""
    calls: list[list[str]] = []
    outputs: dict[str, str] = {}

    def run(args: list[str]) -> str:
        calls.append(args)
        return outputs.get(args[0], "")

    monkeypatch.setattr(platform_ids, "_run", run)
    return calls, outputs


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (IOREG_APPLE_SILICON, ("8E4B1F2A-3C5D-5E6F-9A0B-1C2D3E4F5A6B", "C02X1L0DHJP")),
        (IOREG_INTEL, ("564D5A0C-77E6-6B4F-A1E3-9C0F5B4E2D11", "C02CK00ZMD6R")),
        ("", (None, None)),  # ioreg missing or failed
        ("+-o Root  <class IORegistryEntry, id 0x100000100, retain 21>\n", (None, None)),
    ],
)
def test_macos_reader_on_recorded_ioreg_output(runner, output, expected):
    calls, outputs = runner
    outputs["ioreg"] = output
    assert platform_ids._macos_ids() == expected
    assert calls == [["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (POWERSHELL_JSON, ("4C4C4544-0042-3510-8052-B4C04F4E4D32", "4B5RNM2")),
        (POWERSHELL_ERROR_STDOUT, (None, None)),
        ("Get-CimInstance : Access denied\r\n", (None, None)),
        # PowerShell 7 prints null for no object, and an array for several.
        ("null\r\n", (None, None)),
        (
            '[{"UUID": "A", "IdentifyingNumber": "1"}, {"UUID": "B", "IdentifyingNumber": "2"}]',
            (None, None),
        ),
    ],
)
def test_windows_reader_on_recorded_powershell_output(runner, output, expected):
    calls, outputs = runner
    outputs["powershell"] = output
    assert platform_ids._windows_ids() == expected
    assert len(calls) == 1 and calls[0][0] == "powershell"
    assert "Win32_ComputerSystemProduct" in calls[0][-1]


@pytest.mark.parametrize(
    ("plat", "tool", "output", "expected"),
    [
        ("darwin", "ioreg", IOREG_INTEL, ("564D5A0C-77E6-6B4F-A1E3-9C0F5B4E2D11", "C02CK00ZMD6R")),
        (
            "win32",
            "powershell",
            POWERSHELL_JSON,
            ("4C4C4544-0042-3510-8052-B4C04F4E4D32", "4B5RNM2"),
        ),
    ],
)
def test_hardware_ids_uses_the_platform_reader_and_overrides_win(
    runner, monkeypatch, plat, tool, output, expected
):
    _, outputs = runner
    outputs[tool] = output
    monkeypatch.setattr(platform_ids.sys, "platform", plat)
    monkeypatch.delenv("DEVICETRUST_AGENT_HARDWARE_UUID", raising=False)
    monkeypatch.delenv("DEVICETRUST_AGENT_SERIAL", raising=False)
    platform_ids.hardware_ids.cache_clear()
    try:
        assert platform_ids.hardware_ids() == expected
        platform_ids.hardware_ids.cache_clear()
        monkeypatch.setenv("DEVICETRUST_AGENT_SERIAL", "SN-OVERRIDE")
        assert platform_ids.hardware_ids() == (expected[0], "SN-OVERRIDE")
        json = platform_ids.platform_json()
        assert json["os"] == {"darwin": "macos", "win32": "windows"}[plat]
        assert (json["hardware_uuid"], json["serial"]) == (expected[0], "SN-OVERRIDE")
    finally:
        platform_ids.hardware_ids.cache_clear()
