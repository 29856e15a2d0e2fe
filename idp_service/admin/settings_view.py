"""The console's settings page as data: every effective setting with its secrets hidden.

Durations are shown as people write them (``24 h``); the database URL without its
password, a ``redis://`` rate-limit URL without its credentials, the secret key and the
``/metrics`` bearer token never.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from sqlalchemy.engine import make_url

from idp_service.platform.config import Settings
from trust_protocol.durations import format_duration

HIDDEN = "(set, hidden)"
# Settings that are secrets: shown only as set or not.
SECRETS = {"secret_key", "metrics_token"}
# Settings held in seconds: shown as people write durations (24 h, 30 d).
DURATIONS = {
    "challenge_ttl",
    "max_clock_skew",
    "login_ttl",
    "enroll_code_ttl",
    "approval_code_ttl",
    "approval_poll_skew",
    "report_interval",
    "admin_session_ttl",
    "concurrent_window",
    "stale_after",
    "stale_sweep_interval",
    "webhook_retry_delays",
    "webhook_timeout",
    "webhook_poll",
}


def redacted(settings: Settings) -> list[tuple[str, Any]]:
    """Every setting as ``(name, shown value)``, with secrets hidden."""
    shown: list[tuple[str, Any]] = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == "secret_key":
            value = HIDDEN if value else "(from the database)"
        elif f.name in SECRETS:
            value = HIDDEN if value else "none"
        elif f.name == "database_url":
            value = make_url(value).render_as_string(hide_password=True)
        elif f.name == "ratelimit_storage":  # a redis:// URL may carry a password
            value = re.sub(r"//[^@/]*@", "//(hidden)@", value)
        elif f.name == "osquery_queries":
            value = ", ".join(sorted(value)) or "none"
        elif f.name in DURATIONS and isinstance(value, tuple):
            value = ", ".join(map(format_duration, value)) or "none"
        elif f.name in DURATIONS:
            value = format_duration(value)
        elif isinstance(value, tuple):
            value = " ".join(map(str, value)) or "none"
        shown.append((f.name, value))
    return shown
