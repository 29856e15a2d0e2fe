"""The service's body reader (idp_service/web/bodies.py ``read_body``) keeps its bound however
a body arrives: with a ``Content-Length`` or chunked (no length, the server ends the stream),
whole or in short reads, and when the route's bound is the process-wide one
(``MAX_CONTENT_LENGTH``, ``DEVICETRUST_MAX_REQUEST_BYTES``), where werkzeug's own stream
stops reading. A body of at most the bound is returned whole; a longer one is 413
``too_large``, never a truncated body judged as if it were complete.

The wire cases (a real gunicorn) are in tests/e2e/test_hostile_bodies_e2e.py.
"""

from __future__ import annotations

import io

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from idp_service.platform.errors import TooLarge
from idp_service.web.bodies import read_body


class ShortReads(io.RawIOBase):
    """A server's input stream that hands the body over in pieces of the given sizes."""

    def __init__(self, body: bytes, pieces: list[int]) -> None:
        self.body, self.pieces, self.pos = body, list(pieces), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self.body)
        piece = self.pieces.pop(0) if self.pieces else size
        data = self.body[self.pos : self.pos + max(1, min(size, piece))]
        self.pos += len(data)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _read(body: bytes, pieces: list[int], *, limit: int, max_length: int, chunked: bool):
    """``read_body(limit)`` in a request carrying ``body``, as gunicorn hands it over."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_length
    environ = {"wsgi.input": ShortReads(body, pieces), "wsgi.input_terminated": True}
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = str(len(body))
    with app.test_request_context("/", method="POST", environ_overrides=environ):
        from flask import request

        assert request.content_length == (None if chunked else len(body))
        try:
            return read_body(limit)
        except TooLarge as exc:
            assert exc.code == "too_large"
            return None


@given(
    size=st.integers(1, 300),
    limit=st.integers(1, 200),
    max_extra=st.integers(-50, 50),
    chunked=st.booleans(),
    pieces=st.lists(st.integers(1, 64), max_size=20),
)
def test_a_body_is_returned_whole_or_refused(size, limit, max_extra, chunked, pieces):
    max_length = max(1, limit + max_extra)
    body = bytes(i % 251 for i in range(size))
    got = _read(body, pieces, limit=limit, max_length=max_length, chunked=chunked)
    bound = min(limit, max_length)
    if size <= bound:
        assert got == body
    else:
        assert got is None


@pytest.mark.parametrize("chunked", [False, True])
def test_the_process_wide_bound_is_kept_for_chunked_bodies(chunked):
    """The v2 full report's case: the route's bound is MAX_CONTENT_LENGTH itself."""
    bound = 1024 * 1024
    for size, expected in ((bound, True), (bound + 1, False), (4 * bound, False)):
        body = b"{" + b" " * (size - 2) + b"}"
        got = _read(body, [], limit=bound, max_length=bound, chunked=chunked)
        assert (got == body) if expected else (got is None), (chunked, size)
