"""What the console's webhooks page and the admin API share beyond ``endpoints.py``:
the delivery statuses a delivery-log filter may name, checked in one place.

Handlers import this module (and ``endpoints.py``), never the webhook tables.
"""

from __future__ import annotations

from idp_service.platform.errors import Invalid
from idp_service.webhooks.tables import DELIVERY_STATUSES


def check_status(status: str | None) -> str | None:
    """``status`` when it is a delivery status (or None/empty: no filter, None); else 400
    ``bad_status``."""
    if not status:
        return None
    if status not in DELIVERY_STATUSES:
        raise Invalid("bad_status", f"status is one of {', '.join(DELIVERY_STATUSES)}")
    return status


__all__ = ["DELIVERY_STATUSES", "check_status"]
