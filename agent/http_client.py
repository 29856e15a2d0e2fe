"""A small HTTP client on the standard library, to keep the agent lean.

Only what the ceremonies need: JSON GET and POST with short timeouts and a cap
on the size of what the server may send back.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from agent import __version__
from trust_protocol import strict_json
from trust_protocol.errors import ProtocolError

MAX_BODY = 1024 * 1024
USER_AGENT = f"devicetrust-agent/{__version__}"


class ServerError(Exception):
    """The service refused a request (``code`` from its JSON error body) or was unreachable."""

    def __init__(self, code: str, message: str, status: int = 0, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.hint = hint


def request(
    method: str, url: str, body: bytes | None = None, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Send a request and return the JSON body, or raise :class:`ServerError`."""
    if not url.startswith(("http://", "https://")):
        raise ServerError("bad_url", f"not an http(s) URL: {url}")
    req = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - scheme checked
    req.add_header("User-Agent", USER_AGENT)
    req.add_header("Accept", "application/json")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            raw = resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        raw = exc.read(MAX_BODY)
        try:
            err = strict_json.loads(raw, max_size=MAX_BODY)["error"]
            raise ServerError(
                err.get("code", f"http_{exc.code}"),
                err.get("message", ""),
                exc.code,
                err.get("hint", ""),
            ) from None
        except (ProtocolError, KeyError, TypeError, AttributeError):
            raise ServerError(f"http_{exc.code}", f"server answered {exc.code}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError("unreachable", f"cannot reach {url}: {exc}") from None
    if len(raw) > MAX_BODY:
        raise ServerError("too_large", "server response too large")
    try:
        return strict_json.loads(raw, max_size=MAX_BODY)
    except ProtocolError:
        raise ServerError("bad_response", "server did not answer JSON") from None
