"""A do-nothing WSGI app: the HTTP floor of one report exchange, for ``bench/ingest.py``.

It reads the request body exactly and answers 200 with a body the size of a signed
acknowledgement. Served by granian with the ingest tier's settings, it measures what
one request and its answer cost the HTTP server and the load generator's client, with
no service work at all: the part of a report's CPU that no application code can save.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# An acknowledgement's shape and size: {"ack": base64 of ~180 bytes, "signature": 64 bytes}.
ANSWER = b'{"ack":"' + b"A" * 240 + b'","signature":"' + b"B" * 86 + b'","status":"accepted"}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the body, answer the fixed acknowledgement-sized body."""
    given = environ.get("CONTENT_LENGTH") or ""
    if given.isdigit() and int(given) > 0:
        environ["wsgi.input"].read(int(given))
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))],
    )
    return [ANSWER]
