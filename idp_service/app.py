"""Flask app factory: one blueprint per surface, one service context per process."""

from __future__ import annotations

import atexit
import logging

from flask import Flask
from werkzeug.routing import IntegerConverter

from idp_service import schedule
from idp_service.platform import audit_chain
from idp_service.platform.config import Settings, cookie_name
from idp_service.platform.db import Database
from idp_service.platform.keys import SESSION_KEY, load_secret, load_server_keys
from idp_service.services import ServiceContext
from idp_service.web.errors import register_error_handlers

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

    ``background`` starts the periodic jobs (``idp_service/schedule.py``: audit
    sealing, the staleness sweep, webhook dispatch, the expiry clean-up); the
    ``serve`` command asks for it, tests and one-off tools do not.
    """
    settings = settings or Settings.from_env()
    audit_chain.configure(audit_chain.load_key(settings.data_dir), data_dir=settings.data_dir)
    app = Flask(__name__)
    app.url_map.converters["int"] = BoundedInt  # before any route is added
    db = Database(settings.database_url)
    service = ServiceContext(settings=settings, db=db, keys=load_server_keys(db))
    app.extensions["devicetrust"] = service
    from idp_service.devices import approve

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
    from idp_service.web import headers

    headers.install(app, settings)  # no framing anywhere; a strict CSP on every page
    from idp_service.web import display

    display.install(app)  # untrusted names are isolated from the page's text direction
    app.jinja_env.globals["public_url"] = settings.public_url  # never the Host header
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client address is the one the trusted proxies saw (idp_service/web/ratelimit.py).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]

    from idp_service.devices import web as agent_api
    from idp_service.signin import approve_web  # noqa: F401  (adds its routes to login.bp)
    from idp_service.signin import web as login
    from idp_service.web import health

    app.register_blueprint(health.bp)
    app.register_blueprint(agent_api.bp)
    app.register_blueprint(login.bp)

    from idp_service import saml
    from idp_service.posture import service as posture
    from scim.app import mount_scim

    posture.init(service)
    saml.init_app(app)
    mount_scim(app)  # SCIM 2.0 at /scim/v2
    from idp_service import api

    app.register_blueprint(api.bp)  # admin API at /api/v1

    from idp_service import admin

    admin.init_app(app)  # the admin console at /admin
    from idp_service.web import ratelimit

    ratelimit.init_app(app, settings, db)  # per-client limits, after every route exists

    from idp_service.web import bodies

    bodies.install(app)  # a body refused unread ends its connection (SCIM included)

    if background:
        jobs = schedule.runner(db, settings)
        jobs.start()
        atexit.register(jobs.stop)  # a running job finishes and gives its lease back
        app.extensions["devicetrust.jobs"] = jobs
    return app
