"""The per-process service context: settings, database and protocol keys.

Handlers reach it with :func:`idp_service.web.context.ctx`; it is created once
by the app factory, so no request pays for loading keys or building engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from idp_service.platform.config import Settings
from idp_service.platform.db import Database
from trust_protocol.server_keys import ServerKeys


@dataclass
class ServiceContext:
    """What every request handler needs."""

    settings: Settings
    db: Database
    keys: ServerKeys
    # Other surfaces keep their loaded state here (SAML keys, posture catalog, ...).
    extras: dict[str, Any] = field(default_factory=dict)
