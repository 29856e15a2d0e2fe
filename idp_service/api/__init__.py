"""The admin API at ``/api/v1``: bearer tokens with scopes, and an OpenAPI 3.1 document.

Operations are declared in the resource modules with
:func:`idp_service.api.core.operation`; importing this package registers them
all on :data:`bp`. See docs/api.md.
"""

from __future__ import annotations

from flask import Flask

from idp_service.api import (  # noqa: F401
    devices,
    directory,
    events,
    policies,
    posture,
    sps,
    webhooks,
)
from idp_service.api.core import OPERATIONS, bp, openapi_document
from idp_service.services import Services

__all__ = ["OPERATIONS", "bp", "init_app", "openapi_document"]


def init_app(app: Flask, services: Services) -> None:  # noqa: ARG001 - one signature for all
    """Serve the admin API at ``/api/v1``."""
    app.register_blueprint(bp)
