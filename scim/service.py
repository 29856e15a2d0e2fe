"""The SCIM protocol steps for devicetrust, without any input or output.

A thin subclass of scim2-server's :class:`~scim2_server.service.ScimService`:
it names our realm in ``WWW-Authenticate``, bounds every request body (the
library only bounds bulk bodies, and leaves the others to the integration) and
reads it with the service's strict JSON reader first,
answers a PATCH with 200 and the resource rather than 204 (Okta reads the body),
and remembers the last routes it matched (a request is matched several times).
Everything else, validation, PATCH, ETags, filters, paging, bulk, is
the library's.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from scim2_models import (
    Context,
    InvalidSyntaxException,
    PayloadTooLargeException,
    Resource,
    ResponseParameters,
    SCIMException,
    ScimProvider,
)
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Target, match
from scim2_server.service import ScimService

from trust_protocol import strict_json
from trust_protocol.errors import ProtocolError

REALM = "devicetrust-scim"
DEFAULT_MAX_BODY = 1024 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class DevicetrustScimService(ScimService):
    """:class:`ScimService` with our realm and our body limit."""

    def __init__(self, provider: ScimProvider, *, max_body: int = DEFAULT_MAX_BODY) -> None:
        super().__init__(provider)
        self.max_body = max_body

    def match(self, request: ScimRequest) -> Target:  # type: ignore[override]
        """The library's route matching, remembered for recent (method, path) pairs.

        One request is matched up to six times (reading its body, auth, the body
        limit, the handler, the operation); a match is a scan of every route.
        """
        return _match(request.method.upper(), request.path)

    def www_authenticate(self, exception: Exception) -> str:
        """The challenge of a 401: a bearer token for our realm (RFC 6750 §3)."""
        return f'Bearer realm="{REALM}"'

    def max_body_size(self, request: ScimRequest) -> int | None:
        """Every request body is bounded, not only bulk ones (huge bodies get a 413)."""
        limit = super().max_body_size(request)
        return self.max_body if limit is None else min(limit, self.max_body)

    def check_body_size(self, request: ScimRequest) -> None:
        """Refuse with a 413 a body longer than :meth:`max_body_size`, and with a 400
        ``invalidSyntax`` a body the strict reader refuses (:mod:`trust_protocol.strict_json`:
        duplicate keys, ``NaN``, a byte-order mark, lone surrogates, deep nesting).

        The WSGI application reads at most one byte more than the limit, so a
        longer body is never held in memory whole. A request no route serves is
        left to the handler, whose 404 or 405 says more than a 413.
        """
        limit = self.max_body_size(request)
        if limit and len(request.body) > limit:
            raise PayloadTooLargeException(detail=f"The request body exceeds {limit} bytes")
        if request.body and request.method.upper() in BODY_METHODS and self._routed(request):
            # The service's one strict reader goes first; the library parses after it.
            self.ensure_json(request.header("Content-Type"))  # a 415 stays a 415
            try:
                strict_json.loads(request.body, max_size=limit or len(request.body))
            except ProtocolError as exc:
                if exc.code == "too_large":
                    raise PayloadTooLargeException(detail=exc.detail) from None
                raise InvalidSyntaxException(
                    detail=f"The request body is not strict JSON: {exc.detail}"
                ) from None

    def _routed(self, request: ScimRequest) -> bool:
        try:
            self.match(request)
        except SCIMException:
            return False
        return True

    def patch_response(
        self,
        base_url: str,
        resource: Resource[Any],
        response_parameters: ResponseParameters[Any],
    ) -> ScimResponse:
        """200 with the resource, the branch of RFC 7644 §3.5.2 every client reads.

        The library answers 204 when no attributes were asked for, which the RFC
        allows; Okta's documented PATCH exchanges expect the updated resource.
        """
        return self.resource_response(
            self.publish(base_url, resource),
            Context.RESOURCE_REPLACEMENT_RESPONSE,
            response_parameters,
        )


@lru_cache(maxsize=256)
def _match(method: str, path: str) -> Target:
    """:func:`scim2_server.routing.match`, which is a pure function of its arguments."""
    return match(method, path)
