"""The admin API at ``/api/v1``: bearer tokens with scopes, and an OpenAPI 3.1 document.

Operations are declared in the resource modules with
:func:`idp_service.api.core.operation`; importing this package registers them
all on :data:`bp`. See docs/api.md.
"""

from __future__ import annotations

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

__all__ = ["OPERATIONS", "bp", "openapi_document"]
