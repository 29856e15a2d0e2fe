"""Structured logs: one JSON object per line, each carrying the request id it belongs to.

:func:`configure` sets up the root logger once per process (the app factory calls
it). :data:`request_id` holds the id of the request this thread serves (set by
``idp_service/web/observability.py``); every record logged meanwhile carries it,
so one request's lines can be found across modules. Nothing here knows about
Flask. Log only what identifies things (ids, codes of outcomes, counts): never a
secret, a code a person types, a token or a key (a test scans a full run's logs).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("devicetrust_request_id", default=None)

# Attributes every LogRecord has; anything else passed in ``extra=`` is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra, "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """Log to stderr as ``json`` or ``text``, from ``level`` up (once per process)."""
    root = logging.getLogger()
    if any(getattr(h, "_devicetrust", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._devicetrust = True  # type: ignore[attr-defined]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
