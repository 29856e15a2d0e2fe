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
from typing import Any

from flask import Flask, Response, abort, request

from idp_service.platform import logs, metrics
from idp_service.platform.config import Settings
from idp_service.web import headers

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


ROUTE_KEY = "devicetrust.route"


class RequestSignals:
    """WSGI middleware around everything (SCIM's mounted app too): the request id, the
    ``X-Request-ID`` and HSTS headers, one access line and the HTTP metrics per request."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.hsts = headers.hsts(settings)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        rid = given if _GIVEN_ID.fullmatch(given) else secrets.token_hex(8)
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        seen: dict[str, int] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = int(status.split(" ", 1)[0])
            headers = [(k, v) for k, v in headers if k.lower() != HEADER.lower()]
            headers.append((HEADER, rid))
            if self.hsts:
                headers.append(("Strict-Transport-Security", self.hsts))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            self._done(environ, seen.get("status", 500), started)
            logs.request_id.reset(token)

    @staticmethod
    def _done(environ: dict[str, Any], status: int, started: float) -> None:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        metrics.http_response(status)
        route = environ.get(ROUTE_KEY)
        if path.startswith(SCIM_PREFIX):
            op = scim_operation(method, path)
            metrics.scim_request(op, status)
            route = f"{SCIM_PREFIX}({op})"
        # The route's pattern, never the path or query: they carry transaction ids and codes.
        access_line(logging.INFO, environ, method, route, status, started)


def access_line(
    level: int,
    environ: dict[str, Any],
    method: str,
    route: str | None,
    status: int,
    started: float,
    **more: Any,
) -> None:
    """The one access line of a request (logger ``devicetrust.access``): the route's
    pattern, never the path or query, which carry transaction ids and codes."""
    access.log(
        level,
        "request",
        extra={
            "method": method,
            "route": route,
            "status": status,
            "ms": round(1000 * (time.perf_counter() - started), 1),
            "remote_addr": environ.get("REMOTE_ADDR"),
            **more,
        },
    )


def install(app: Flask, settings: Settings) -> None:
    """Note each request's route for the access line, and add /metrics if configured.

    The app factory wraps the finished app in :class:`RequestSignals`.
    """

    @app.before_request
    def _route() -> None:
        if request.url_rule is not None:
            request.environ[ROUTE_KEY] = request.url_rule.rule

    token = settings.metrics_token.encode()

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        """Prometheus exposition, for a bearer of the metrics token only."""
        given = request.headers.get("Authorization", "").encode()
        if not token or not hmac.compare_digest(given, b"Bearer " + token):
            abort(404)
        return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
