"""Reading request bodies in the service: bounded, strict, and the same everywhere.

Routes read their bodies through :func:`read_body` (raw protocol messages, which
the protocol parses with :mod:`trust_protocol.strict_json`) or :func:`json_body`
(JSON requests, parsed here with the same reader). Both refuse a body over the
route's limit as 413 ``too_large`` without reading more than one byte past it, and
:func:`json_body` refuses anything the strict reader refuses as 400 ``malformed``:
invalid UTF-8, a byte-order mark, duplicate keys, ``NaN``/``Infinity``, lone
surrogates, nesting deeper than :data:`MAX_DEPTH`.

:class:`UnreadBodyGuard` is the WSGI side of the same rule: a request whose body
was refused before it was read ends its connection (``Connection: close``), so a
keep-alive client never sends its next request on a connection the server is
about to drop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from idp_service.platform.errors import Invalid, TooLarge
from trust_protocol import strict_json

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MAX_DEPTH = strict_json.DEFAULT_MAX_DEPTH
_EMPTY = object()
_JSON_WHITESPACE = b" \t\r\n"


def _too_large(limit: int) -> TooLarge:
    return TooLarge("too_large", f"request body exceeds {limit} bytes")


def read_body(limit: int, *, required: bool = True) -> bytes:
    """The raw request body, at most ``limit`` bytes (else 413 ``too_large``).

    However the body arrives: with a ``Content-Length`` or chunked, and in as many
    reads as the server hands it over in; a body is never cut at the bound and
    judged as if it were whole. An empty body is 400 ``malformed`` when ``required``,
    and so is one that ends before its ``Content-Length``.
    """
    limit = min(limit, current_app.config.get("MAX_CONTENT_LENGTH") or limit)
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    data = _read_up_to(limit + 1 if length is None else length, limit)
    if len(data) > limit:
        raise _too_large(limit)
    if length is not None and len(data) < length:
        raise Invalid("malformed", "request body ended before its Content-Length")
    if required and not data:
        raise Invalid("malformed", "request body is empty")
    return data


def _read_up_to(size: int, limit: int) -> bytes:
    """Read the body until it ends or ``size`` bytes are in (a read may return fewer)."""
    parts: list[bytes] = []
    got = 0
    try:
        stream = request.stream
        while got < size:
            data = stream.read(size - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
    except RequestEntityTooLarge:
        # werkzeug's stream stops at MAX_CONTENT_LENGTH and refuses to read on, so a
        # chunked body that ends exactly there looks like a longer one; the server's
        # own stream (which it ends itself: ``wsgi.input_terminated``) tells them apart.
        if not (got == limit and _ends_here()):
            raise _too_large(limit) from None
    return b"".join(parts)


def _ends_here() -> bool:
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        return False
    return bool(environ["wsgi.input"].read(1) == b"")


def json_body(
    limit: int,
    *,
    empty: Any = _EMPTY,
    max_depth: int = MAX_DEPTH,
    text_code: str = "malformed",
) -> Any:
    """The request body parsed by the strict reader (:mod:`trust_protocol.strict_json`).

    A body that is empty or only whitespace gives ``empty`` when it is passed,
    else it is 400 ``malformed``. Size: 413 ``too_large``; a string holding a lone
    surrogate: 400 ``text_code`` (the admin API has always called that
    ``invalid_body``); anything else the reader refuses: 400 ``malformed``.
    """
    data = read_body(limit, required=False)
    if not data.strip(_JSON_WHITESPACE):
        if empty is _EMPTY:
            raise Invalid("malformed", "request body is empty")
        return empty
    try:
        return strict_json.loads(data, max_size=limit, max_depth=max_depth)
    except strict_json.JsonRefused as exc:
        if exc.code == "too_large":
            raise _too_large(limit) from None
        code = text_code if exc.reason == "lone_surrogate" else "malformed"
        raise Invalid(code, f"the body is not strict JSON: {exc.detail}") from None


# -- WSGI: refused bodies end their connection ---------------------------------------------

# gunicorn decides keep-alive itself and ignores an application's Connection
# header; its pre_request hook hands us the request so that we can ask it to close.
_gunicorn = threading.local()


def gunicorn_pre_request(worker: Any, req: Any) -> None:
    """gunicorn ``pre_request`` hook: remember the request this thread serves."""
    _gunicorn.req = req


class _CountingInput:
    """``wsgi.input``, counting what the application read and whether it hit the end."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.read_bytes = 0
        self.at_end = False

    def _seen(self, data: bytes, asked: int | None) -> bytes:
        self.read_bytes += len(data)
        if not data and asked != 0:
            self.at_end = True
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._seen(self.stream.read(size) if size is not None else self.stream.read(), size)

    def readline(self, size: int | None = -1) -> bytes:
        data = self.stream.readline(size) if size is not None else self.stream.readline()
        return self._seen(data, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = self.stream.readlines(hint)
        self._seen(b"".join(lines), None if not lines else -1)
        return lines

    def __iter__(self) -> Iterable[bytes]:
        return iter(self.readline, b"")


class UnreadBodyGuard:
    """WSGI middleware: an answer that leaves the body unread closes the connection.

    A body of at most ``drain`` bytes left unread is read and dropped instead (for
    at most ``drain_seconds``), so the connection stays usable; a larger one (or
    one that does not arrive in time) gets
    ``Connection: close``, and gunicorn is told to close (it drains at most 64 KiB
    of an unread body itself, then drops the connection without saying so).
    """

    def __init__(
        self, app: WSGIApplication, *, drain: int = 64 * 1024, drain_seconds: float = 2.0
    ) -> None:
        self.app = app
        self.drain = drain
        self.drain_seconds = drain_seconds

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1  # not a number: where the next request starts is unknown
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length == 0 and not chunked:
            return self.app(environ, start_response)
        counting = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = counting

        def guarded_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not self._consumed(environ, counting, length, chunked):
                headers = [(k, v) for k, v in headers if k.lower() != "connection"]
                headers.append(("Connection", "close"))
                req = getattr(_gunicorn, "req", None)
                if req is not None:
                    req.must_close = True
            return start_response(status, headers, exc_info)

        return self.app(environ, guarded_start)

    def _consumed(
        self, environ: WSGIEnvironment, counting: _CountingInput, length: int, chunked: bool
    ) -> bool:
        """Whether the body is all read, after draining a small rest (for a short while)."""
        if length < 0:
            return False
        if not chunked and counting.read_bytes >= length:
            return True
        if chunked and counting.at_end:
            return True
        rest = self.drain if chunked else length - counting.read_bytes
        if rest > self.drain:
            return False
        sock = environ.get("gunicorn.socket")
        before = sock.gettimeout() if sock is not None else None
        deadline = time.monotonic() + self.drain_seconds
        try:
            while rest > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if sock is not None:
                    sock.settimeout(left)
                data = counting.read(min(rest, 16 * 1024))
                if not data:  # the end: of a chunked body, or a client that sent less
                    return chunked or counting.read_bytes >= length
                rest -= len(data)
            return counting.read(1) == b"" if chunked else True
        except Exception:  # noqa: BLE001 - a client that stalls or breaks: close
            return False
        finally:
            if sock is not None:
                try:
                    sock.settimeout(before)
                except OSError:
                    pass


def install(app: Any) -> Callable[..., Any]:
    """Wrap ``app.wsgi_app`` (SCIM included) in :class:`UnreadBodyGuard`."""
    app.wsgi_app = UnreadBodyGuard(app.wsgi_app)
    return app.wsgi_app


__all__ = [
    "MAX_DEPTH",
    "UnreadBodyGuard",
    "gunicorn_pre_request",
    "install",
    "json_body",
    "read_body",
]
