"""The admin API's probe marks: one audited probe per token per minute.

A valid token sent to an undeclared route or method is a probe (``api/core.py``
audits it); so that a scan leaves a trace without flooding the audit log, only the
first probe of a token in each window is recorded. The marks are counters in the
rate limiter's database storage, shared by every replica.
"""

from __future__ import annotations

from idp_service.platform.ratelimit_store import DatabaseStorage
from idp_service.services import Services

PROBE_WINDOW = 60  # seconds: one audited probe per token per window
PROBE_KEY_PREFIX = "devicetrust-audit/api-probe/"


def first_in_window(services: Services, token_name: str) -> bool:
    """Count a probe by ``token_name``; True for the first one in the current window."""
    storage = services.api_probe_marks
    if storage is None:
        storage = services.api_probe_marks = DatabaseStorage(engine=services.db.engine)
    return storage.incr(PROBE_KEY_PREFIX + token_name, PROBE_WINDOW) == 1


__all__ = ["PROBE_KEY_PREFIX", "PROBE_WINDOW", "first_in_window"]
