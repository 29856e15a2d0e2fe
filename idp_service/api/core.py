"""The admin API's route registry: one source of truth for routing, validation and OpenAPI.

Each operation is declared once with :func:`operation`: its method and path,
the scope it needs, the JSON Schemas of its query and path parameters, its
request body and its response. The same declaration registers the Flask route,
checks the bearer token and its scope, validates the input before the handler
runs, and produces the operation in ``/api/v1/openapi.json``.

Every use of a token is audited (``api.request``, with the token's *name*); a
missing or unknown token is audited as ``api.auth`` denied. A valid token sent
to a route that is not declared (404) or with a method it does not take (405)
is a probe: the first per token per minute is audited as ``api.request``
rejected (``not_found`` / ``method_not_allowed``), so a scan leaves a trace
without flooding the log. Handlers write in
their own transaction; a refused request rolls it back, so only the audit
event is written.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from idp_service import tokens
from idp_service.api import probes
from idp_service.api import schema as S
from idp_service.platform import audit
from idp_service.platform.errors import (
    Forbidden,
    Invalid,
    ServiceError,
    Unauthenticated,
    Unsupported,
)
from idp_service.services import Services
from idp_service.web.bodies import json_body
from idp_service.web.context import ctx
from idp_service.web.errors import error_response
from trust_protocol import strict_json
from trust_protocol.errors import ProtocolError

PREFIX = "/api/v1"
MAX_ID = 2**31 - 1  # integer primary keys are 32-bit on PostgreSQL
bp = Blueprint("admin_api", __name__, url_prefix=PREFIX)

ERROR_TEXT = {
    400: "Bad input (the error code says which)",
    401: "Missing or unknown bearer token",
    403: "The token's scope does not allow this",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "The body must be application/json",
    414: "Request line too long: refused by the HTTP server before the API (not JSON)",
}


class Call:
    """What a handler gets: the validated input, the database and who is acting.

    Handlers open sessions on ``db`` and hand them to services; they build no statement.
    """

    def __init__(
        self,
        *,
        token: str,
        path: dict[str, Any],
        query: dict[str, Any],
        body: Any,
        services: Services,
    ) -> None:
        self.token = token
        self.path = path
        self.query = query
        self.body = body
        self.db = services.db

    @property
    def actor(self) -> str:
        """The audit actor: ``api:<token name>``."""
        return f"api:{self.token}"


@dataclass
class Operation:
    """One declared API operation."""

    method: str
    path: str
    handler: Callable[[Call], Any]
    summary: str
    tag: str
    scope: str
    response: dict[str, Any]
    status: int = 200
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    errors: tuple[int, ...] = ()

    @property
    def error_statuses(self) -> list[int]:
        """Every 4xx status this operation can answer."""
        codes = {400, 401, 403, 414, *self.errors}
        if self.path_params:
            codes.add(404)
        if self.body is not None:
            codes.update((413, 415))
        return sorted(codes)


OPERATIONS: list[Operation] = []
ID = S.string(64, min_length=1)


def _flask_rule(op: Operation) -> str:
    rule = op.path
    for name, schema in op.path_params.items():
        conv = "int:" if schema.get("type") == "integer" else ""
        rule = rule.replace("{" + name + "}", f"<{conv}{name}>")
    return rule


def operation(
    method: str,
    path: str,
    *,
    summary: str,
    tag: str,
    response: dict[str, Any],
    status: int = 200,
    query: dict[str, dict[str, Any]] | None = None,
    path_params: dict[str, dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (),
) -> Callable[[Callable[[Call], Any]], Callable[[Call], Any]]:
    """Declare an operation; GET needs the ``read`` scope, every other method ``write``."""

    def register(handler: Callable[[Call], Any]) -> Callable[[Call], Any]:
        op = Operation(
            method=method.upper(),
            path=path,
            handler=handler,
            summary=summary,
            tag=tag,
            scope="read" if method.upper() == "GET" else "write",
            response=response,
            status=status,
            query=query or {},
            path_params=path_params or {},
            body=body,
            errors=errors,
        )
        # Compile every schema of the operation now: a bad schema fails at import, and
        # requests only look up the compiled validator.
        for schema in (op.body, *op.query.values(), *op.path_params.values()):
            if schema is not None:
                S.compiled(schema)
        OPERATIONS.append(op)
        bp.add_url_rule(
            _flask_rule(op),
            endpoint=handler.__name__,
            view_func=lambda **kw: _dispatch(op, kw),
            methods=[op.method],
        )
        return handler

    return register


# -- cursors ----------------------------------------------------------------------------------


def encode_cursor(values: list[Any]) -> str:
    """An opaque paging cursor for the last item's sort key."""
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, kinds: tuple[type, ...]) -> list[Any]:
    """The values of a cursor made by :func:`encode_cursor`, typed as ``kinds``; else 400."""
    bad = Invalid("bad_cursor", "cursor is not one this API gave out; start from the first page")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values = strict_json.loads(raw, max_size=4096)
    except (ValueError, binascii.Error, ProtocolError):
        raise bad from None
    if not isinstance(values, list) or len(values) != len(kinds):
        raise bad
    for value, kind in zip(values, kinds, strict=True):
        if type(value) is not kind or (isinstance(value, str) and not S.storable(value)):
            raise bad
        if kind is int and not 0 <= value <= MAX_ID:
            raise bad
    return values


# -- dispatch ---------------------------------------------------------------------------------


def _safe_path() -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in request.path[:300])


def _unauthorized(message: str, error: str | None) -> Unauthenticated:
    exc = Unauthenticated("unauthorized", message)
    exc.www_authenticate = 'Bearer realm="devicetrust"' + (f', error="{error}"' if error else "")
    return exc


def _authenticate(op: Operation, services: Services) -> str:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _unauthorized("send Authorization: Bearer <token> (devicetrust api-token)", None)
    with services.db.session() as session:
        found = tokens.API.authenticate(session, presented)
    if found is None:
        raise _unauthorized("unknown or revoked token", "invalid_token")
    name, scope = found.name, found.scope
    if op.scope == "write" and scope != "write":
        exc = Forbidden("insufficient_scope", "this needs a token with the write scope")
        exc.www_authenticate = (
            'Bearer realm="devicetrust", error="insufficient_scope", scope="write"'
        )
        exc.token_name = name
        raise exc
    return name


def _coerce(name: str, raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise Invalid("bad_parameter", f"{name} must be an integer") from None
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise Invalid("bad_parameter", f"{name} must be true or false")
        return raw == "true"
    return raw


def _input(op: Operation, path_kw: dict[str, Any]) -> tuple[dict, dict, Any]:
    try:
        for name, value in path_kw.items():
            S.validate(op.path_params[name], value, name)
        query: dict[str, Any] = {}
        for name, schema in op.query.items():
            if name in request.args:
                query[name] = _coerce(name, request.args[name], schema)
                S.validate(schema, query[name], name)
    except S.SchemaError as exc:
        raise Invalid("bad_parameter", str(exc)) from None
    body = None
    if op.body is not None:
        if not request.mimetype or request.mimetype != "application/json":
            raise Unsupported("unsupported_media_type", "send the body as application/json")
        body = json_body(ctx().settings.max_request_bytes, empty=None, text_code="invalid_body")
        try:
            S.validate(op.body, body, "body")
        except S.SchemaError as exc:
            raise Invalid("invalid_body", str(exc)) from None
    return path_kw, query, body


def _dispatch(op: Operation, path_kw: dict[str, Any]) -> Response:
    services = ctx()
    db = services.db
    token: str | None = None
    try:
        token = _authenticate(op, services)
        path, query, body = _input(op, path_kw)
        data = op.handler(Call(token=token, path=path, query=query, body=body, services=services))
        resp = jsonify(data)
        resp.status_code = op.status
        outcome, code = "ok", None
    except ServiceError as exc:
        resp = error_response(exc)
        if getattr(exc, "www_authenticate", None):
            resp.headers["WWW-Authenticate"] = exc.www_authenticate
        token = token or getattr(exc, "token_name", None)
        outcome, code = ("denied" if resp.status_code in (401, 403) else "rejected"), exc.code
    details = {"method": op.method, "path": _safe_path(), "status": resp.status_code}
    if token is None:
        audit.record_separately(
            db, "api.auth", "denied", code=code, remote_addr=request.remote_addr, details=details
        )
    else:
        audit.record_separately(
            db,
            "api.request",
            outcome,
            code=code,
            actor=f"api:{token}",
            remote_addr=request.remote_addr,
            details={"token": token, **details},
        )
    return resp


PROBE_WINDOW = probes.PROBE_WINDOW  # seconds: one audited probe per token per window


@bp.before_app_request
def _audit_probe() -> None:
    """Audit a valid token's request to an undeclared route or method (first per minute)."""
    failure = request.routing_exception
    if not isinstance(failure, NotFound | MethodNotAllowed) or not request.path.startswith(
        PREFIX + "/"
    ):
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return
    service = ctx()
    db = service.db
    with db.session() as session:
        found = tokens.API.authenticate(session, presented)
    if found is None:
        return  # not an authenticated request
    name = found.name
    if not probes.first_in_window(service, name):
        return  # this token's probe is already on record for this minute
    status = failure.code or 404
    audit.record_separately(
        db,
        "api.request",
        "rejected",
        code="not_found" if status == 404 else "method_not_allowed",
        actor=f"api:{name}",
        remote_addr=request.remote_addr,
        details={
            "token": name,
            "method": request.method[:16],
            "path": _safe_path(),
            "status": status,
            "undeclared": True,
            "window_seconds": PROBE_WINDOW,
        },
    )


# -- OpenAPI ----------------------------------------------------------------------------------


def _param(name: str, where: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared operation."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {
            str(op.status): {
                "description": "Success",
                "content": {"application/json": {"schema": op.response}},
            }
        }
        for status in op.error_statuses:
            if status == 414:
                responses["414"] = {
                    "description": ERROR_TEXT[414],
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
                continue
            responses[str(status)] = {
                "description": ERROR_TEXT[status],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            if status in (401, 403):
                responses[str(status)]["headers"] = {
                    "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
                }
        entry: dict[str, Any] = {
            "operationId": op.handler.__name__,
            "summary": op.summary,
            "tags": [op.tag],
            "security": [{"bearer": []}],
            "x-scope": op.scope,
            "parameters": [_param(n, "path", s, True) for n, s in op.path_params.items()]
            + [_param(n, "query", s, False) for n, s in op.query.items()],
            "responses": responses,
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": op.body}},
            }
        paths.setdefault(PREFIX + op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "devicetrust admin API",
            "version": "1",
            "description": "Everything the admin console can do. See docs/api.md. "
            "GET needs a token with the read scope; every other method needs write.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `devicetrust api-token create NAME --scope "
                    "read|write`.",
                }
            },
            "schemas": {"Error": S.ERROR},
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document (public: it holds no data)."""
    return jsonify(openapi_document())


# -- shared query pieces ----------------------------------------------------------------------

LIMIT = {"type": "integer", "minimum": 1, "maximum": 500}
CURSOR = {**S.string(512), "pattern": "^[A-Za-z0-9_-]*$"}
PAGING = {"limit": LIMIT, "cursor": CURSOR}


def limit_of(call: Call, default: int = 50) -> int:
    """The page size asked for."""
    return int(call.query.get("limit", default))


def like(text: str) -> str:
    """``text`` as a LIKE/ILIKE pattern matching it anywhere (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
