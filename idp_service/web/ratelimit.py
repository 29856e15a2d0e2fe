"""Per-client rate limits on the routes anyone on the network can hit (Flask-Limiter).

Each group of routes has one limit per client address (``DEVICETRUST_RATELIMIT_<GROUP>``,
docs/deploy.md), shared by every route of the group: an attacker cannot multiply
it by spreading requests over several endpoints. The limits are attached here,
centrally, to the endpoints listed in :data:`GROUPS` once every blueprint is
registered, so route modules stay free of them; ``tests/platform/test_ratelimit.py``
walks the URL map so that a new route under a limited prefix cannot slip through.

The counters live in the database by default (``platform/ratelimit_store.py``), so
every gunicorn worker and every replica counts together; ``memory://`` (one
process) and ``redis://`` are the alternatives (``DEVICETRUST_RATELIMIT_STORAGE``).

The client is the TCP peer's address, or the address
``DEVICETRUST_TRUSTED_PROXIES`` hops from the right of ``X-Forwarded-For`` when
the service sits behind that many proxies (werkzeug's ``ProxyFix``, installed by
the app): a header a client sends itself is never trusted beyond that. IPv6
clients are counted per /64, the block one subscriber usually gets.

A refused request gets 429 with ``Retry-After``: the JSON error ``rate_limited``
on machine routes, a page on browser routes. The first refusal per client, group
and window is audited (``rate_limit``/``rejected``); the rest are not, so a flood
cannot fill the audit log.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

from flask import Flask, Response, render_template, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded

from idp_service.platform import audit
from idp_service.platform import ratelimit_store as ratelimit_sql
from idp_service.platform.config import Settings
from idp_service.platform.db import Database
from idp_service.platform.errors import RateLimited
from idp_service.web.errors import error_response, wants_json

log = logging.getLogger(__name__)

# Limit group -> the endpoints it covers (each group's limit is set by
# DEVICETRUST_RATELIMIT_<GROUP>). An endpoint may be in several groups.
GROUPS: dict[str, tuple[str, ...]] = {
    "saml": ("saml.sso", "saml.idp_initiated"),
    "login": (
        "login.login_start",  # GET /login writes a transaction, as /saml/sso does
        "login.login_challenge",
        "login.login_response",
        "login.login_continue",
        "login.login_check_again",
        "login.login_register_challenge",
        "login.approve_submit",
        # the upstream IdP's sign-in (idp_service/upstream/web.py): start and callback
        "upstream.start",
        "upstream.callback",
    ),
    "agent": (
        "agent_api.server_info",
        "agent_api.new_challenge",
        "agent_api.register",
        "agent_api.callback",
        "agent_api.report_challenge",
        "agent_api.report_facts",
        "agent_api.notices",
        "agent_api_v2.report_v2_small",
        "agent_api_v2.report_v2_full",
        "agent_api_v2.report_v2_reset",
        "upstream.reauth_pickup",
        "updates.manifest",
        "updates.key",
        "updates.artifact",
    ),
    # Enrollment: register challenges (agent and login page) and the registration
    # that carries the enrollment code.
    "enroll": (
        "agent_api.new_challenge",
        "agent_api.register",
        "login.login_register_challenge",
    ),
    "approval": ("login.approve_submit",),
    "admin_signin": ("admin.signin_start", "admin.bootstrap_redeem"),
    # The OpenID Connect provider's endpoints that do work per request (idp_service/oidc/);
    # discovery and the JWKS are static documents, like /saml/metadata.
    "oidc": ("oidc.authorize", "oidc.token", "oidc.userinfo", "oidc.logout"),
}

AUDIT_KEY_PREFIX = "devicetrust-audit/"
MESSAGE = "Too many requests from your network address. Try again in {seconds} seconds."


def client_address() -> str:
    """The client's rate-limit key: its IPv4 address, or its IPv6 /64."""
    addr = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def storage_uri(settings: Settings) -> str:
    """The limits library's storage URI for ``DEVICETRUST_RATELIMIT_STORAGE``."""
    if settings.ratelimit_storage == "database":
        return f"{ratelimit_sql.SCHEME}://"
    return settings.ratelimit_storage


def limited_groups(app: Flask, endpoint: str) -> tuple[str, ...]:
    """The groups whose limit applies to ``endpoint`` in ``app`` (empty when off)."""
    return app.extensions.get("devicetrust_ratelimit_endpoints", {}).get(endpoint, ())


def init_app(app: Flask, settings: Settings, db: Database) -> Limiter | None:
    """Limit the endpoints of :data:`GROUPS` in ``app`` (after every blueprint is registered).

    Each group is an application-wide limit that exempts every other endpoint, so
    it is checked before any blueprint's own ``before_request`` (the console's
    sign-in gate and CSRF check): a refused token or form still counts.
    """
    app.extensions["devicetrust_ratelimit_endpoints"] = {}
    if not settings.ratelimit_enabled:
        return None
    covered: dict[str, tuple[str, ...]] = {}
    limits = []
    for group, endpoints in GROUPS.items():
        unknown = [e for e in endpoints if e not in app.view_functions]
        if unknown:
            raise RuntimeError(f"rate limit group {group!r} names unknown endpoints {unknown}")
        members = frozenset(endpoints)
        limits.append(
            ApplicationLimit(
                settings.rate_limits[group],
                scope=group,
                exempt_when=lambda members=members: request.endpoint not in members,
            )
        )
        for endpoint in endpoints:
            covered[endpoint] = (*covered.get(endpoint, ()), group)
    uri = storage_uri(settings)
    limiter = Limiter(
        key_func=client_address,
        application_limits=limits,
        storage_uri=uri,
        storage_options={"engine": db.engine} if uri.startswith(ratelimit_sql.SCHEME) else {},
        strategy="fixed-window",
        headers_enabled=False,
        # A storage failure must not refuse sign-ins; it is logged, the request goes on.
        swallow_errors=True,
    )
    limiter.init_app(app)
    # One line per refusal would let a flood fill the log; the audit log has the first.
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)
    app.extensions["devicetrust_ratelimit_endpoints"] = covered

    @app.errorhandler(RateLimitExceeded)
    def _refused(exc: RateLimitExceeded) -> Response:
        return _refusal(limiter, db, exc)

    return limiter


def _refusal(limiter: Limiter, db: Database, exc: RateLimitExceeded) -> Response:
    """The 429 for a breached limit, audited once per client, group and window."""
    group = exc.limit.scope if isinstance(exc.limit.scope, str) else ""
    current = limiter.current_limit
    retry_after = 1
    if current is not None:
        try:
            reset_time = current.window.reset_time
            retry_after = max(1, math.ceil(reset_time - time.time()))
            # One marker per client, group and window: the window's end names it.
            marker = f"{AUDIT_KEY_PREFIX}{current.key}/{int(reset_time)}"
            first = limiter.storage.incr(marker, retry_after) == 1
        except Exception:  # the storage failed; the refusal stands, unaudited
            log.exception("rate-limit storage failed while refusing a request")
            first = False
        if first:
            try:
                audit.record_separately(
                    db,
                    "rate_limit",
                    "rejected",
                    code="rate_limited",
                    remote_addr=client_address(),
                    details={
                        "group": group,
                        "limit": str(exc.limit.limit),
                        "endpoint": request.endpoint,
                        "method": request.method,
                    },
                )
            except Exception:
                log.exception("could not audit a rate-limit refusal")
    message = MESSAGE.format(seconds=retry_after)
    hint = "Wait, then try again. If this keeps happening, tell your IT administrator."
    if wants_json() or request.is_json or request.path.startswith("/agent/"):
        resp = error_response(RateLimited("rate_limited", message, hint))
    else:
        resp = Response(
            render_template(
                "rate_limited.html", message=message, hint=hint, retry_after=retry_after
            ),
            status=429,
            mimetype="text/html",
        )
    resp.headers["Retry-After"] = str(retry_after)
    return resp
