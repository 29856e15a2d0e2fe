"""Flask app factory: one blueprint per surface, one service context per process."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.routing import IntegerConverter

from idp_service import audit_chain
from idp_service.config import Settings, cookie_name
from idp_service.context import ServiceContext
from idp_service.errors import register_error_handlers
from idp_service.keys import SESSION_KEY, load_secret, load_server_keys
from idp_service.storage.db import Database

# The largest id any table holds (a signed 64-bit integer, SQLite's and PostgreSQL's
# bigint): a larger number in a URL matches no route (404), never reaching the database.
MAX_ID = 2**63 - 1


class BoundedInt(IntegerConverter):
    """``<int:...>`` in every route: a non-negative integer that fits a database id."""

    def __init__(self, map: object, *args: object, **kwargs: object) -> None:  # noqa: A002
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)  # type: ignore[arg-type]


def create_app(settings: Settings | None = None, *, background: bool = False) -> Flask:
    """Build the service. The database must already be migrated (``devicetrust migrate``).

    ``background`` starts the per-process background work (the audit sealer, the
    staleness sweep, webhook dispatcher); the
    ``serve`` command asks for it, tests and one-off tools do not.
    """
    settings = settings or Settings.from_env()
    audit_chain.configure(audit_chain.load_key(settings.data_dir), data_dir=settings.data_dir)
    app = Flask(__name__)
    app.url_map.converters["int"] = BoundedInt  # before any route is added
    db = Database(settings.database_url)
    service = ServiceContext(settings=settings, db=db, keys=load_server_keys(db))
    app.extensions["devicetrust"] = service
    from idp_service import approve

    approve.load_key(service)  # the approval-code HMAC key, read before any request
    app.config.update(
        SECRET_KEY=settings.secret_key or load_secret(db, SESSION_KEY),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        # __Host- (Secure, no Domain, Path=/) on https, so a sibling host cannot plant it;
        # browsers refuse that prefix without Secure, so plain-http loopback keeps the bare name.
        SESSION_COOKIE_NAME=cookie_name(settings, "devicetrust_session"),
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
        # An unknown Host header is refused (400 host_not_allowed, errors.py).
        TRUSTED_HOSTS=list(settings.trusted_hosts) or None,
        TESTING=settings.testing,
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    register_error_handlers(app)
    from idp_service import headers

    headers.install(app, settings)  # no framing anywhere; a strict CSP on every page
    from idp_service import display

    display.install(app)  # untrusted names are isolated from the page's text direction
    app.jinja_env.globals["public_url"] = settings.public_url  # never the Host header
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client address is the one the trusted proxies saw (idp_service/ratelimit.py).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]

    from idp_service.blueprints import agent_api, health, login, login_approve  # noqa: F401

    app.register_blueprint(health.bp)
    app.register_blueprint(agent_api.bp)
    app.register_blueprint(login.bp)
    from idp_service.updates import web as updates_web

    app.register_blueprint(updates_web.bp)  # signed agent self-update at /agent/v1/update-*

    from idp_service import posture, saml
    from scim.app import mount_scim

    posture.init(service)
    saml.init_app(app)
    mount_scim(app)  # SCIM 2.0 at /scim/v2
    from idp_service import api

    app.register_blueprint(api.bp)  # admin API at /api/v1

    from idp_service import admin

    admin.init_app(app)  # the admin console at /admin
    from idp_service import ratelimit

    ratelimit.init_app(app, settings, db)  # per-client limits, after every route exists

    from idp_service import bodies

    bodies.install(app)  # a body refused unread ends its connection (SCIM included)

    if background:
        from idp_service.detection import StaleSweeper

        audit_chain.Sealer(db).start()
        StaleSweeper(db, settings).start()
        from idp_service.webhooks.dispatcher import Dispatcher

        Dispatcher(db, settings).start()
    return app
