#!/usr/bin/env python3
r"""Make an organisation's devicetrust configuration profile from the template.

    python3 packaging/macos/make_profile.py SERVICE_URL FINGERPRINT [--org NAME] \
        > devicetrust.mobileconfig

Fills in the service URL and the server key pin, gives both payloads fresh
UUIDs (two organisations' profiles must not share them), and checks the values
the way the agent will (agent/config.py), so a typo fails here and not on a
thousand Macs. Standard library only; sign the result in the MDM or with
``security cms -S`` if your MDM wants a signed profile.
"""

from __future__ import annotations

import argparse
import plistlib
import sys
import uuid
from pathlib import Path

TEMPLATE = Path(__file__).with_name("com.devicetrust.agent.mobileconfig")
DOMAIN = "com.devicetrust.agent"


def make_profile(
    service_url: str, fingerprint: str, org: str = "", extra: dict | None = None
) -> bytes:
    """The profile as XML plist bytes."""
    profile = plistlib.loads(TEMPLATE.read_bytes())
    profile["PayloadUUID"] = str(uuid.uuid4()).upper()
    if org:
        profile["PayloadOrganization"] = org
    payload = profile["PayloadContent"][0]
    payload["PayloadUUID"] = str(uuid.uuid4()).upper()
    settings = payload["PayloadContent"][DOMAIN]["Forced"][0]["mcx_preference_settings"]
    settings["service_url"] = service_url
    settings["server_key_fingerprint"] = fingerprint
    settings.update(extra or {})
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=False)


def _check(settings: dict) -> None:
    """Validate with the agent's own parsers when the agent is importable."""
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    try:
        from agent.config import ArgsSource, ConfigError, merge
    except ImportError:  # only the template travels, or another Python: say so
        print("make_profile: values NOT checked (run it with the agent's Python)", file=sys.stderr)
        return
    try:
        merge([ArgsSource(settings)])
    except ConfigError as exc:
        raise SystemExit(f"make_profile: {exc}") from None


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("service_url", help="https://signin.example.com")
    parser.add_argument("fingerprint", help="SHA256:... (devicetrust-agent server-fingerprint)")
    parser.add_argument("--org", default="", help="PayloadOrganization shown on the Mac")
    parser.add_argument("--ports", default="", help="agent_ports, e.g. '47621 37123'")
    parser.add_argument("--report-interval", default="", help='e.g. "15 min"')
    args = parser.parse_args(argv)
    extra: dict = {}
    if args.ports:
        extra["agent_ports"] = [int(p) for p in args.ports.replace(",", " ").split()]
    if args.report_interval:
        extra["report_interval"] = args.report_interval
    _check({"service_url": args.service_url, "server_key_fingerprint": args.fingerprint, **extra})
    sys.stdout.buffer.write(make_profile(args.service_url, args.fingerprint, args.org, extra))


if __name__ == "__main__":
    main()
