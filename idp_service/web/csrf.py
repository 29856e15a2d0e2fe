"""One CSRF check for the service's HTML forms (the console and the sign-in's approval page).

Each form carries a random token kept in the browser's signed session cookie
(one session key per surface, so the console's token and the sign-in's never
stand in for each other). A POST is refused with 403 ``csrf_invalid`` unless
its ``csrf`` field equals the session's token, compared in constant time, and
its ``Origin`` header, when the browser sends one, is one of the service's
allowed origins. The refusal's message and hint are the surface's own.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from flask import request, session

from idp_service.platform.errors import Forbidden
from idp_service.web.context import ctx

CODE = "csrf_invalid"
TOKEN_BYTES = 32
MIN_LENGTH = 32  # characters of a stored token; a shorter one is not ours


@dataclass(frozen=True)
class CsrfGuard:
    """The CSRF token of one surface's forms: made on first use, checked on every POST."""

    session_key: str
    message: str  # what the refusal says
    hint: str = ""  # what to do next

    def _stored(self) -> str | None:
        token = session.get(self.session_key)
        return token if isinstance(token, str) and len(token) >= MIN_LENGTH else None

    def token(self) -> str:
        """This browser's token for the surface's forms (made on first use)."""
        return self._stored() or self.renew()

    def renew(self) -> str:
        """Replace the token (a privilege change, such as signing in, rotates it)."""
        token = session[self.session_key] = secrets.token_urlsafe(TOKEN_BYTES)
        return token

    def valid(self) -> bool:
        """True when this request's form token is the session's and its origin is ours."""
        expected = self._stored()
        sent = request.form.get("csrf", "")
        origin = request.headers.get("Origin")
        return (
            expected is not None
            and hmac.compare_digest(sent.encode(), expected.encode())
            and (origin is None or origin in ctx().settings.allowed_origins)
        )

    def check(self, on_refusal: Callable[[], None] | None = None) -> None:
        """Raise 403 ``csrf_invalid`` unless :meth:`valid`; ``on_refusal`` runs first (audit)."""
        if self.valid():
            return
        if on_refusal is not None:
            on_refusal()
        raise Forbidden(CODE, self.message, self.hint)
