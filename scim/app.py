"""The SCIM WSGI application, mounted at ``/scim`` inside the Flask service.

A thin subclass of scim2-server's :class:`~scim2_server.applications.wsgi.WSGIApplication`
that adds what a deployment needs around the library's handler:

- bearer auth against the named tokens of :mod:`idp_service.tokens` (checked by
  :mod:`scim.auth`): a missing or bad token gets a SCIM 401 with
  ``WWW-Authenticate: Bearer realm="devicetrust-scim"``, and so does a request
  whose token was revoked while it ran (it is rolled back);
- one database transaction per request, bound to the storage, so a SCIM write,
  its device effects and its audit events commit together or not at all;
- one audit event per request, naming the token (never the token itself),
  written by :mod:`scim.audit` in the request's transaction; a refused request
  writes nothing else;
- a body limit on every request (413), and URLs built from the public URL, not
  from the Host header.

It is mounted with a WSGI dispatcher rather than a Flask blueprint: the library
reads and answers WSGI requests itself, and SCIM errors must be SCIM bodies, not
the service's JSON errors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Flask
from scim2_models import InvalidSyntaxException, SCIMException, UnauthorizedException
from scim2_server.applications.wsgi import WSGIApplication, send_response
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation
from sqlalchemy.exc import IntegrityError
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from idp_service.platform.db import Database
from scim import audit
from scim.auth import Grant, TokenCache
from scim.lifecycle import Reactivation
from scim.provider import build_provider
from scim.service import DevicetrustScimService
from scim.storage import SqlStorage

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

MOUNT = "/scim"
URL_SAFE = ":/?#[]@!$&'()*+,;=%~"
_remote_addr: ContextVar[str | None] = ContextVar("scim_remote_addr", default=None)


class AuditedUniqueness(SCIMException):
    """A uniqueness clash the database caught at commit (a race between replicas)."""

    status = 409
    scim_type = "uniqueness"
    _default_detail = "One or more of the attribute values are already in use or are reserved"


class ScimApplication(WSGIApplication):
    """scim2-server's WSGI application with our auth, transactions and audit."""

    def __init__(
        self,
        db: Database,
        *,
        public_url: str,
        reactivation: Reactivation | str = Reactivation.require_approval,
        max_body: int = 1024 * 1024,
        admin_group: str = "devicetrust-admins",
    ) -> None:
        provider = build_provider()
        storage = SqlStorage(db, provider, reactivation=reactivation, admin_group=admin_group)
        super().__init__(storage, provider, DevicetrustScimService(provider, max_body=max_body))
        self.db = db
        self.sql_storage = storage
        self.tokens = TokenCache()
        self.base_url = public_url.rstrip("/") + MOUNT + "/v2"

    def get_base_url(self, environ: WSGIEnvironment) -> str:
        """The public URL, so Location headers are right behind a TLS proxy."""
        return self.base_url

    def needs_auth(self, request: ScimRequest) -> bool:
        """Everything but ServiceProviderConfig needs a token, unknown paths included."""
        try:
            return self.service.match(request).operation is not Operation.service_provider_config
        except SCIMException:
            return True

    def authenticate(self, session: Any, request: ScimRequest) -> Grant:
        """The grant of the request's bearer token, or raise a 401."""
        scheme, _, presented = (request.header("Authorization") or "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise UnauthorizedException(detail="A bearer token is required")
        grant = self.tokens.verify(session, presented)
        if grant is None:
            raise UnauthorizedException(detail="The bearer token is not valid")
        return grant

    def serve(self, request: ScimRequest) -> ScimResponse:
        """Authenticate, serve and audit one request in one transaction."""
        grant: Grant | None = None
        try:
            with self.db.session() as session, self.sql_storage.bind(session) as scope:
                if self.needs_auth(request):
                    grant = self.authenticate(session, request)
                    scope.actor = grant.actor
                self.service.check_body_size(request)
                scope.bulk = self._operation(request) is Operation.bulk
                request.subject = grant.name if grant else None
                response = self.handler.handle(request)
                if grant is not None:
                    values = self._event(request, grant, response.status.value, "ok")
                    values["user_id"] = _created_user(response)
                    if not audit.record_use(session, grant, values):
                        grant = None
                        raise self._withdrawn()
        except IntegrityError:
            response = self.handle_exception(request, AuditedUniqueness())
            response = self._audit_failure(request, grant, response)
        except Exception as exception:  # noqa: BLE001 - every failure becomes a SCIM error
            response = self.handle_exception(request, exception)
            response = self._audit_failure(request, grant, response)
        return self.finalize_response(request, response)

    def finalize_response(self, request: ScimRequest, response: ScimResponse) -> ScimResponse:
        """Add the library's headers, with any URL percent-encoded.

        The library echoes the request URL in ``Location``; a path holding a NUL
        or non-ASCII characters must not make the header itself invalid.
        """
        response = super().finalize_response(request, response)
        for name in ("Location", "Content-Location"):
            if name in response.headers:
                response.headers[name] = quote(response.headers[name], safe=URL_SAFE)
        return response

    def _operation(self, request: ScimRequest) -> Operation | None:
        try:
            return self.service.match(request).operation
        except SCIMException:
            return None

    def _withdrawn(self) -> UnauthorizedException:
        """The refusal of a token revoked or rotated away while its request ran."""
        self.tokens.forget()
        return UnauthorizedException(detail="The bearer token is not valid")

    @staticmethod
    def _event(
        request: ScimRequest,
        grant: Grant | None,
        status: int,
        outcome: str,
        code: str | None = None,
    ) -> dict[str, Any]:
        """The audit event of a request: its token's name, method, path and status."""
        return audit.event(
            "scim.request" if grant or status != 401 else "scim.auth",
            outcome,
            code=code,
            actor=grant.actor if grant else None,
            remote_addr=_remote_addr.get(),
            details={"method": request.method[:16], "path": request.path[:200], "status": status},
        )

    def _audit_failure(
        self, request: ScimRequest, grant: Grant | None, response: ScimResponse
    ) -> ScimResponse:
        """Record a refused request on its own: its own writes were rolled back.

        A request whose token was revoked while it ran is answered 401 instead
        of with what it found out.
        """
        status = response.status.value
        if grant is None and status != 401:
            return response  # an unauthenticated ServiceProviderConfig request used no token
        try:
            with self.db.session() as session:
                if grant is not None:
                    values = self._event(request, grant, status, *_failure(response))
                    if audit.record_use(session, grant, values):
                        return response
                    response = self.handle_exception(request, self._withdrawn())
                audit.record(session, self._event(request, None, 401, *_failure(response)))
        except Exception:  # noqa: BLE001 - the response matters more than its audit
            log.exception("could not audit a refused SCIM request")
        return response

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve a WSGI request (the remote address is kept for the audit)."""
        token = _remote_addr.set(environ.get("REMOTE_ADDR"))
        try:
            try:
                request = self.read_request(environ)
            except ValueError:  # a Content-Length that is not a number
                request = ScimRequest(environ["REQUEST_METHOD"], self.base_url, "/")
                response = self.handle_exception(
                    request, InvalidSyntaxException(detail="Invalid Content-Length")
                )
                return send_response(self.finalize_response(request, response), start_response)
            return send_response(self.serve(request), start_response)
        finally:
            _remote_addr.reset(token)


def mount_scim(app: Flask) -> None:
    """Serve SCIM at ``/scim/v2`` in ``app``, on the service's database."""
    service = app.extensions["devicetrust"]
    settings = service.settings
    scim_app = ScimApplication(
        service.db,
        public_url=settings.public_url,
        reactivation=settings.scim_reactivation,
        max_body=settings.max_request_bytes,
        admin_group=settings.admin_group,
    )
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {MOUNT: scim_app})  # type: ignore[method-assign]


def _failure(response: ScimResponse) -> tuple[str, str]:
    """The outcome and code of a refused request's audit event."""
    status = response.status.value
    body = response.body or {}
    code = body.get("scimType") or ("unauthorized" if status == 401 else f"http_{status}")
    outcome = "denied" if status == 401 else ("error" if status >= 500 else "rejected")
    return outcome, str(code)[:64]


def _created_user(response: ScimResponse) -> str | None:
    """The id of the user a request created, for its audit event."""
    body = response.body or {}
    if response.status.value == 201 and (body.get("meta") or {}).get("resourceType") == "User":
        return body.get("id")
    return None
