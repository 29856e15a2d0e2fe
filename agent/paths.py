"""Where the agent keeps its state on each OS.

A system-wide agent (root / SYSTEM) uses the machine location; a per-user agent
uses the user's state directory. ``--state-dir`` or ``DEVICETRUST_AGENT_STATE_DIR``
override both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "devicetrust-agent"


def default_state_dir() -> Path:
    """The per-OS state directory for this agent."""
    override = os.environ.get("DEVICETRUST_AGENT_STATE_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("PROGRAMDATA", r"C:\ProgramData")
        return Path(base) / "devicetrust" / "agent"
    if sys.platform == "darwin":
        if os.geteuid() == 0:
            return Path("/Library/Application Support/devicetrust/agent")
        return Path.home() / "Library" / "Application Support" / "devicetrust" / "agent"
    if os.geteuid() == 0:
        return Path("/var/lib/devicetrust/agent")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "devicetrust" / "agent"
