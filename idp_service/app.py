"""Flask app factory: builds the process's :class:`~idp_service.services.Services` and
calls each feature's ``init_app`` with it.

Every feature says what it adds in its ``init_app(app, services)``: its blueprint,
and for a surface that finishes sign-ins (SAML, the console) its completer in
``services.completers``. Nothing is registered by importing a module for its side effects.
"""

from __future__ import annotations

import atexit

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from idp_service import admin, api, schedule
from idp_service.devices import web as agent_web
from idp_service.oidc import web as oidc_web
from idp_service.platform import audit_chain, logs, metrics
from idp_service.platform.config import Settings, cookie_name
from idp_service.platform.db import Database
from idp_service.platform.keys import SESSION_KEY, load_secret, load_server_keys
from idp_service.posture.service import Posture
from idp_service.saml import web as saml_web
from idp_service.saml.keys import KeyRing
from idp_service.services import Services
from idp_service.signin import web as signin_web
from idp_service.signin.reads import DeviceOwners
from idp_service.updates import web as updates_web
from idp_service.upstream import web as upstream_web
from idp_service.web import bodies, display, headers, health, observability, ratelimit
from idp_service.web.errors import register_error_handlers
from idp_service.webhooks import outbox as webhook_outbox
from scim.app import mount_scim

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
    webhook_outbox.subscribe_to_audit()  # audited decisions enqueue their webhook events
    app = Flask(__name__)
    app.url_map.converters["int"] = BoundedInt  # before any route is added
    db = Database(settings.database_url)
    metrics.watch_pool(db.engine)  # before the first connection, so the gauges see them all
    services = Services(
        settings=settings,
        db=db,
        keys=load_server_keys(db),
        saml_keys=KeyRing(db),  # reads nothing until first used
        device_owners=DeviceOwners(db.engine),
        posture=Posture(settings),
    )
    app.extensions["devicetrust"] = services
    app.config.update(
        SECRET_KEY=settings.secret_key or load_secret(db, SESSION_KEY),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=settings.cookie_httponly,
        SESSION_COOKIE_SAMESITE=settings.cookie_samesite,
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        # __Host- (Secure, no Domain, Path=/) on https, so a sibling host cannot plant it;
        # browsers refuse that prefix without Secure, so plain-http loopback keeps the bare name.
        SESSION_COOKIE_NAME=cookie_name(settings, "devicetrust_session"),
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
        # An unknown Host header is refused (400 host_not_allowed, errors.py).
        TRUSTED_HOSTS=list(settings.trusted_hosts) or None,
        TESTING=settings.testing,
    )
    logs.configure(settings.log_format, settings.log_level)  # JSON lines with request ids
    observability.install(app, settings)  # request ids, access lines, HSTS, /metrics
    register_error_handlers(app)
    headers.install(app, settings)  # no framing anywhere; a strict CSP on every page
    display.install(app)  # untrusted names are isolated from the page's text direction
    app.jinja_env.globals["public_url"] = settings.public_url  # never the Host header

    app.register_blueprint(health.bp)
    agent_web.init_app(app, services)  # /agent/v1
    signin_web.init_app(app, services)  # the login page at /login
    saml_web.init_app(app, services)  # the SAML IdP at /saml
    oidc_web.init_app(app, services)  # the OpenID Connect provider at /oidc
    updates_web.init_app(app, services)  # signed agent self-update at /agent/v1/update-*
    upstream_web.init_app(app, services)  # the organization's OIDC IdP, at /upstream
    mount_scim(app)  # SCIM 2.0 at /scim/v2
    api.init_app(app, services)  # admin API at /api/v1
    admin.init_app(app, services)  # the admin console at /admin
    ratelimit.init_app(app, settings, db)  # per-client limits, after every route exists
    bodies.install(app)  # a body refused unread ends its connection (SCIM included)
    # Around everything, SCIM included: request ids, access lines, HTTP metrics, HSTS.
    app.wsgi_app = observability.RequestSignals(app.wsgi_app, settings)  # type: ignore[method-assign]
    # Unchanged v2 reports (~98 % of agent traffic) are answered before all of that; any
    # report it declines goes on through it (devices/web.py, ReportQuickPath).
    app.wsgi_app = agent_web.ReportQuickPath(app.wsgi_app, services)  # type: ignore[method-assign]
    if settings.trusted_proxies:
        # Outermost: the client address and scheme are the ones the trusted proxies saw,
        # for every route (rate limits, audit log; request.is_secure behind TLS termination).
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )

    if background:
        jobs = schedule.runner(db, settings)
        jobs.start()
        atexit.register(jobs.stop)  # a running job finishes and gives its lease back
        app.extensions["devicetrust.jobs"] = jobs
    return app


def create_ingest_app() -> Flask:
    """The app of ``devicetrust serve-ingest``'s workers: the whole service, no periodic jobs
    (``devicetrust serve`` runs those)."""
    return create_app(background=False)
