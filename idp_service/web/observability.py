"""Request ids, the access log line, HSTS and ``/metrics``: what operators watch.

Every request gets an id: the proxy's ``X-Request-ID`` when it is a short token,
else a new one. It is returned in the ``X-Request-ID`` response header and is on
every log line written while the request is served (``platform/logs.py``), so a
person can quote it and an operator find the lines.

``/metrics`` (Prometheus, ``platform/metrics.py``) is never public by default: it
answers on the service's own listener only to ``Authorization: Bearer`` with
``DEVICETRUST_METRICS_TOKEN``; without the token it is 404. The usual setup is
``DEVICETRUST_METRICS_LISTEN`` instead, a separate listener on an internal address
(``idp_service/cli.py`` starts it).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time

from flask import Flask, Response, abort, g, request

from idp_service.platform import logs, metrics
from idp_service.platform.config import Settings

HEADER = "X-Request-ID"
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")

access = logging.getLogger("devicetrust.access")

SCIM_PREFIX = "/scim/v2/"
SCIM_RESOURCES = ("Users", "Groups")


def scim_operation(method: str, path: str) -> str:
    """A SCIM request's operation, from a closed set: ``create``, ``replace``, ``patch``,
    ``delete``, ``get``, ``list``, ``search``, ``bulk``, ``discovery`` or ``other``."""
    parts = [p for p in path[len(SCIM_PREFIX) :].split("/") if p]
    if not parts:
        return "other"
    if parts[0] == "Bulk":
        return "bulk"
    if parts[0] not in SCIM_RESOURCES:
        return "search" if parts[-1] == ".search" else "discovery"
    if parts[-1] == ".search":
        return "search"
    by_method = {"POST": "create", "PUT": "replace", "PATCH": "patch", "DELETE": "delete"}
    if method == "GET":
        return "get" if len(parts) > 1 else "list"
    return by_method.get(method, "other")


def _begin() -> None:
    given = request.headers.get(HEADER, "")
    rid = given if _GIVEN_ID.fullmatch(given) else secrets.token_hex(8)
    g.request_id = rid
    g.request_started = time.perf_counter()
    g.request_id_token = logs.request_id.set(rid)


def install(app: Flask, settings: Settings) -> None:
    """Request ids, one access line per request, HSTS, metrics, and /metrics if configured."""
    hsts = (
        f"max-age={settings.hsts_max_age}; includeSubDomains"
        if settings.hsts_max_age and settings.public_url.startswith("https://")
        else None
    )

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = g.get("request_id")
        if rid:
            response.headers[HEADER] = rid
        if hsts:
            response.headers["Strict-Transport-Security"] = hsts
        metrics.http_response(response.status_code)
        if request.path.startswith(SCIM_PREFIX):
            metrics.scim_request(scim_operation(request.method, request.path), response.status_code)
        rule = request.url_rule.rule if request.url_rule is not None else None
        # The route's pattern, never the path or query: those carry transaction ids and codes.
        access.info(
            "request",
            extra={
                "method": request.method,
                "route": rule,
                "status": response.status_code,
                "ms": round(1000 * (time.perf_counter() - g.get("request_started", 0.0)), 1),
                "remote_addr": request.remote_addr,
            },
        )
        return response

    @app.teardown_request
    def _end(_: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            logs.request_id.reset(token)

    # First of all before_request hooks, so every later hook's log lines carry the id.
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)

    token = settings.metrics_token.encode()

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        """Prometheus exposition, for a bearer of the metrics token only."""
        given = request.headers.get("Authorization", "").encode()
        if not token or not hmac.compare_digest(given, b"Bearer " + token):
            abort(404)
        return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
