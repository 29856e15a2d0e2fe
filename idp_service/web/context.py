"""How a request handler reaches the process's :class:`~idp_service.services.ServiceContext`."""

from __future__ import annotations

from flask import current_app

from idp_service.services import ServiceContext


def ctx() -> ServiceContext:
    """The current app's service context."""
    return current_app.extensions["devicetrust"]
