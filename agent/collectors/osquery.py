"""Optional osquery: run server-configured queries through a local osqueryd's extension socket.

osquery is never required. When the extension socket does not exist the
section is ``{"available": false, ...}`` and every other fact is still
collected. When it does, each configured query runs through
``osquery.ExtensionClient`` (Thrift over the Unix socket or Windows pipe) and
its rows are included, bounded in count and size. The ``osquery`` package
(and Thrift) is imported only when a socket is present, so an agent without
osquery never pays for it in memory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SOCKET = r"\\.\pipe\osquery.em" if sys.platform == "win32" else "/var/osquery/osquery.em"
MAX_ROWS = 500
MAX_VALUE_CHARS = 1024
MAX_QUERIES = 32


@dataclass(frozen=True)
class OsqueryConfig:
    """Where osqueryd's extension socket is and which queries the server wants run."""

    socket_path: str = DEFAULT_SOCKET
    queries: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 3.0


def _socket_present(path: str) -> bool:
    if path.startswith("\\\\.\\pipe\\"):
        return True  # a named pipe cannot be stat'ed cheaply: try to connect
    return os.path.exists(path)


def _connect(path: str, timeout: float) -> Any:
    """An open ``osquery.ExtensionClient`` with socket timeouts, or raise OSError."""
    from osquery import ExtensionClient

    client = ExtensionClient(path=path)
    transport = getattr(client._transport, "_TBufferedTransport__trans", None)
    if transport is not None and hasattr(transport, "setTimeout"):
        transport.setTimeout(int(timeout * 1000))
    if not client.open(timeout=timeout, interval=0.1):
        raise OSError(f"cannot connect to {path}")
    return client


def _clip(rows: Any) -> list[dict[str, str]]:
    out = []
    for row in list(rows or [])[:MAX_ROWS]:
        if isinstance(row, dict):
            out.append({str(k)[:128]: str(v)[:MAX_VALUE_CHARS] for k, v in row.items()})
    return out


def collect_osquery(
    config: OsqueryConfig | None,
    connect: Callable[[str, float], Any] = _connect,
) -> dict[str, Any]:
    """The ``osquery`` section: results per configured query, or ``available: false``."""
    config = config or OsqueryConfig()
    section: dict[str, Any] = {"available": False, "results": None, "errors": None}
    if not _socket_present(config.socket_path):
        return section
    try:
        client = connect(config.socket_path, config.timeout)
    except Exception as exc:  # Thrift raises its own transport errors
        section["errors"] = {"_connect": str(exc)[:200] or exc.__class__.__name__}
        return section
    results: dict[str, list[dict[str, str]]] = {}
    errors: dict[str, str] = {}
    try:
        manager = client.extension_manager_client()
        for name, sql in list(config.queries.items())[:MAX_QUERIES]:
            try:
                response = manager.query(sql)
            except Exception as exc:
                errors[name] = (str(exc) or exc.__class__.__name__)[:200]
                continue
            status = getattr(response, "status", None)
            if status is not None and getattr(status, "code", 0) != 0:
                errors[name] = str(getattr(status, "message", "query failed"))[:200]
                continue
            results[name] = _clip(getattr(response, "response", None))
    finally:
        close = getattr(client, "close", None)
        if close:
            close()
    section.update(available=True, results=results, errors=errors or None)
    return section
