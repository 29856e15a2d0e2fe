"""A real webhook receiver on loopback for the tests: an HTTP server in a thread.

Each path is one receiver with its own secret and behaviour: ``ok`` answers
204, ``fail:N`` answers 500 to the first N deliveries then 204, ``fail``
always answers 500. Every delivery is kept with its arrival time, headers, raw
body and the result of checking it with the documented verifier
(:func:`trust_protocol.webhook_signature.verify`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from trust_protocol.webhook_signature import WebhookVerificationError, verify


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


@dataclass
class Received:
    """One delivery as the receiver saw it."""

    at: float
    headers: dict[str, str]  # names in lower case
    body: bytes
    verified: str | None  # the webhook-id when the signature checked out
    error: str | None  # else the verifier's code

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Hook:
    """One receiving path."""

    mode: str = "ok"
    secret: str = ""
    received: list[Received] = field(default_factory=list)


class Receiver:
    """``with Receiver() as r: r.url("/a")`` - hooks are added with :meth:`add`."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                hook = receiver.hooks.get(self.path)
                if hook is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                try:
                    verified, error = verify(hook.secret, dict(self.headers.items()), body), None
                except WebhookVerificationError as exc:
                    verified, error = None, exc.code
                with receiver.lock:
                    hook.received.append(
                        Received(
                            time.monotonic(), _lower(self.headers.items()), body, verified, error
                        )
                    )
                    count = len(hook.received)
                failing = hook.mode == "fail" or (
                    hook.mode.startswith("fail:") and count <= int(hook.mode.split(":")[1])
                )
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, path: str, mode: str = "ok") -> Hook:
        """A new receiving path (set ``hook.secret`` once the endpoint is made)."""
        self.hooks[path] = Hook(mode=mode)
        return self.hooks[path]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def wait(self, path: str, count: int, timeout: float = 20.0) -> list[Received]:
        """The first ``count`` deliveries to ``path``, waiting for them to arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = list(self.hooks[path].received)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(got)} deliveries, expected {count}")
