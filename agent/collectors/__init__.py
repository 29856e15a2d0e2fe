"""This device's posture facts: :func:`collect_facts` returns the versioned fact document.

One module per OS (:mod:`~agent.collectors.linux`, :mod:`~agent.collectors.macos`,
:mod:`~agent.collectors.windows`) provides collectors behind the one interface in
:mod:`~agent.collectors.base`; :mod:`~agent.collectors.common` holds what every OS
shares (psutil, SSH keys, known security products). The document's fields are
defined in :mod:`~trust_protocol.facts_schema` and described in ``docs/facts.md``.

The agent only reports facts. It never evaluates checks or sends verdicts: the
server decides trust.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

from trust_protocol.facts_schema import ROOTS, SCHEMA_VERSION

if TYPE_CHECKING:
    from agent.collectors.base import Host
    from agent.collectors.osquery import OsqueryConfig

__all__ = ["SCHEMA_VERSION", "collect_facts"]

#: Default time budget for one whole collection, in seconds.
DEFAULT_DEADLINE = 25.0


def _platform_collectors(platform: str) -> list[Any]:
    if platform == "linux":
        from agent.collectors import linux as module
    elif platform == "macos":
        from agent.collectors import macos as module
    elif platform == "windows":
        from agent.collectors import windows as module
    else:
        raise ValueError(f"unsupported platform {platform!r}")
    return module.collectors()


def _timestamp(seconds: float) -> str:
    moment = _dt.datetime.fromtimestamp(seconds, _dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def collect_facts(
    host: Host | None = None,
    *,
    osquery: OsqueryConfig | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> dict[str, Any]:
    """Collect this device's facts (or ``host``'s, for a recorded device).

    Always returns a complete document: a collector that fails leaves its
    section ``null`` and adds one ``{"collector", "error"}`` entry to ``errors``.
    """
    from agent.collectors.base import Host, run_collectors
    from agent.collectors.common import agent_version, browsers_from_packages
    from agent.collectors.osquery import collect_osquery

    host = host or Host.local()
    started = host.clock()
    sections, errors = run_collectors(_platform_collectors(host.platform), host, deadline=deadline)
    if sections.get("os") is None:
        sections["os"] = {
            "family": host.platform,
            "name": None,
            "version": None,
            "build": None,
            "kernel": host.kernel or None,
            "distribution": None,
        }
    packages = sections.get("packages")
    browsers = browsers_from_packages(packages.get("installed") if packages else None)
    if str(host.files.root) != "/" and osquery is None:
        osquery_section: dict[str, Any] = {"available": False, "results": None, "errors": None}
    else:
        try:
            osquery_section = collect_osquery(osquery)
        except Exception as exc:  # optional: never lets osquery break the facts
            osquery_section = {"available": False, "results": None, "errors": None}
            errors.append({"collector": "osquery", "error": str(exc)[:300]})
    values: dict[str, Any] = {
        **sections,
        "schema_version": SCHEMA_VERSION,
        "collected_at": _timestamp(started),
        "hostname": host.hostname or None,
        "agent": {"version": agent_version()},
        "browsers": browsers,
        "osquery": osquery_section,
        "errors": errors,
    }
    document = {name: values.get(name) for name in ROOTS}
    return document
