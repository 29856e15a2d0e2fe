"""The admin console at ``/admin``: server-rendered pages for IT administrators.

Modules: ``auth`` (sessions, CSRF, the ``admin`` login completer),
``bootstrap`` (one-time first-setup tokens), ``queries`` (paged reads that
stay fast at 100k devices), ``tables`` (storage and indexes), and one module of
pages per area: ``signin``, ``overview``, ``devices``, ``directory`` (users,
groups, SPs), ``checks`` (checks and exemptions), ``records`` (audit log,
settings), ``webhooks`` (endpoints and the delivery log). See ``docs/admin.md``.
"""

from __future__ import annotations

from flask import Flask

from idp_service.services import Services


def init_app(app: Flask, services: Services) -> None:
    """Mount the console and register its login completer (the ``admin`` kind)."""
    from idp_service.admin import (  # noqa: F401
        checks,
        devices,
        directory,
        overview,
        policies,
        records,
        signin,
        webhooks,
    )
    from idp_service.admin.auth import complete_login
    from idp_service.admin.blueprint import bp

    services.completers.register("admin", complete_login)
    app.register_blueprint(bp)
