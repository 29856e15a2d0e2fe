"""How a request handler reaches the process's :class:`~idp_service.services.Services`."""

from __future__ import annotations

from flask import current_app

from idp_service.services import Services


def ctx() -> Services:
    """The current app's service context."""
    return current_app.extensions["devicetrust"]
