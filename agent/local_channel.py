"""The local channel: a loopback-only HTTP server the login page talks to.

It binds 127.0.0.1 only, on the first free port of a fixed list that the
service's login page also knows. Defences:

* the Host header must name a loopback host and our port (DNS rebinding);
* the browser ``Origin`` (or the ``Referer``'s origin when there is none) must
  be one the *server-signed* challenge allows; preflights are answered only for
  origins the enrolled service declared;
* CORS and Private-Network-Access headers are sent only to those origins;
* a cap on the request size, bodies read by the strict JSON reader
  (``trust_protocol/strict_json.py``), short socket timeouts, a total deadline
  per connection (a client trickling a byte at a time is cut off), and a cap on
  concurrent connections (the excess gets a quick 503 ``busy``);
* a request refused before its body was read closes its connection
  (``Connection: close``), so a keep-alive client never reuses a broken one.

The listening socket uses ``SO_REUSEADDR`` (``SO_EXCLUSIVEADDRUSE`` on Windows),
so an agent restarted at once is not blocked by its old connections in
TIME_WAIT, while a port held by a running program (another agent) still is; the
error then says which program holds which port.

``/v1/recheck`` (the login page's "recheck now") makes the agent collect and
report its posture at once, through its own report ceremony; at most one every
few seconds.

``/v1/enroll`` lets the login page have this agent enroll with a code from IT
(``agent/page_enroll.py``): only with the service this agent was configured
for, or is enrolled with; never with a server the page chooses.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent import __version__, page_enroll, reauth
from agent.authenticate import Refusal, answer, origin_of, post_callback
from agent.config import AgentConfig
from agent.state import Enrollment
from trust_protocol import strict_json
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.errors import ProtocolError

log = logging.getLogger(__name__)

MAX_REQUEST = 16 * 1024
RECHECK_MIN_INTERVAL = 3.0  # seconds between two "recheck now" reports
SOCKET_TIMEOUT = 2.0  # seconds one read may wait
CONNECTION_DEADLINE = 10.0  # seconds a connection may spend sending requests, in all
MAX_CONNECTIONS = 16  # connections served at once; the next one gets 503 busy
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class ChannelState:
    """What the handler needs; swapped atomically when enrollment changes."""

    def __init__(
        self,
        keys: DeviceKeys,
        enrollment: Enrollment | None,
        *,
        direct_callback: bool = True,
        on_recheck: Callable[[], dict[str, Any]] | None = None,
        services: tuple[str, ...] = (),
        state_dir: Path | None = None,
        config: AgentConfig | None = None,
    ) -> None:
        self.keys = keys
        self.enrollment = enrollment
        self.direct_callback = direct_callback
        self.on_recheck = on_recheck
        self.recheck_lock = threading.Lock()
        self.last_recheck = float("-inf")
        # Page enrollment: the services this agent may enroll with while not enrolled
        # (--service), where to store the enrollment, and the attempt limit.
        self.services = services
        self.state_dir = state_dir
        self.config = config  # the server key pin a page enrollment must match
        self.enroll_gate = page_enroll.AttemptGate()

    def known_origins(self) -> set[str]:
        """Origins the enrolled service declared (for preflights and ping)."""
        if self.enrollment is None:
            return set()
        return {*self.enrollment.origins, self.enrollment.server_origin}


class Handler(BaseHTTPRequestHandler):
    """One request on the local channel."""

    server: LocalChannel
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    server_version = f"devicetrust-agent/{__version__}"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("local channel: " + format, *args)

    def setup(self) -> None:
        """Read through a deadline: each read waits at most what is left of it."""
        super().setup()
        deadline = time.monotonic() + self.server.connection_deadline
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def parse_request(self) -> bool:
        self.body_read = False
        return super().parse_request()

    def _read_body(self, length: int) -> bytes:
        data = self.rfile.read(length)
        self.body_read = True
        return data

    def _body_pending(self) -> bool:
        """Whether the request announced a body this handler did not read."""
        if getattr(self, "body_read", True) or self.headers is None:
            return False
        if self.headers.get("Transfer-Encoding"):
            return True
        length = self.headers.get("Content-Length", "0").strip()
        return length != "0"

    # -- helpers -------------------------------------------------------------------------
    def _origin(self) -> str | None:
        origin = self.headers.get("Origin")
        if origin and origin != "null":
            return origin.rstrip("/")
        referer = self.headers.get("Referer")
        return origin_of(referer) if referer else None

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        port = self.server.server_address[1]
        return host in {f"{h}:{port}" for h in LOOPBACK_HOSTS}

    def _send(self, status: int, body: dict[str, Any], origin: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self._body_pending():
            # The unread body would be read as the next request: end the connection.
            self.send_header("Connection", "close")
            self.close_connection = True
        if origin:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
            self.send_header("Access-Control-Allow-Private-Network", "true")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, origin: str | None = None) -> None:
        self._send(status, {"error": {"code": code, "message": message}}, origin)

    def _cors_origin(self, origin: str | None, allowed: set[str] | tuple[str, ...]) -> str | None:
        return origin if origin and origin in allowed else None

    # -- methods -------------------------------------------------------------------------
    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib naming
        """CORS / Private Network Access preflight."""
        if not self._host_ok():
            self._error(403, "bad_host", "Host must be a loopback name.")
            return
        origin = self._origin()
        state = self.server.state
        # An agent that is not enrolled has no declared origins: it lets any page ask,
        # so that the page can read not_enrolled (/v1/enroll checks origins itself).
        open_to_all = state.enrollment is None and origin is not None
        if not open_to_all and (origin is None or origin not in state.known_origins()):
            self._error(403, "origin_not_allowed", "Unknown origin.")
            return
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Vary", "Origin")
        self.send_header("Access-Control-Allow-Methods", "GET, POST")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Access-Control-Allow-Private-Network", "true")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        """``/v1/ping``: is an agent here, and is it enrolled."""
        if not self._host_ok():
            self._error(403, "bad_host", "Host must be a loopback name.")
            return
        origin = self._origin()
        cors = self._cors_origin(origin, self.server.state.known_origins())
        if urlsplit(self.path).path != "/v1/ping":
            self._error(404, "not_found", "No such endpoint.", cors)
            return
        if origin is not None and cors is None:
            self._error(403, "origin_not_allowed", "Unknown origin.")
            return
        enrolled = self.server.state.enrollment is not None
        self._send(
            200, {"agent": "devicetrust", "version": __version__, "enrolled": enrolled}, cors
        )

    def do_POST(self) -> None:  # noqa: N802
        """``/v1/challenge``: answer a login challenge; ``/v1/recheck``: collect and report now;
        ``/v1/enroll``: enroll for the login page."""
        if not self._host_ok():
            self._error(403, "bad_host", "Host must be a loopback name.")
            return
        origin = self._origin()
        state = self.server.state
        path = urlsplit(self.path).path
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "length_required", "Content-Length is required.")
            return
        if not 0 <= length <= MAX_REQUEST:
            self._error(413, "too_large", f"Requests are capped at {MAX_REQUEST} bytes.")
            return
        raw = self._read_body(length)
        if path == "/v1/recheck":
            self._recheck(origin)
            return
        if path == "/v1/enroll":
            self._enroll(raw)
            return
        if path != "/v1/challenge":
            self._error(404, "not_found", "No such endpoint.")
            return
        if state.enrollment is None:
            err = {
                "code": "not_enrolled",
                "message": "This device is not enrolled. Run: devicetrust-agent enroll URL CODE",
                # Whether this page may have the agent enroll (POST /v1/enroll).
                "enroll_here": page_enroll.allowed_origin(
                    self.headers.get("Origin"), None, state.services
                ),
            }
            self._send(409, {"error": err}, self._cors_origin(origin, (origin or "",)))
            return
        try:
            token = strict_json.loads_object(raw, max_size=MAX_REQUEST).get("challenge")
        except ProtocolError:
            token = None
        if not isinstance(token, str):
            self._error(400, "malformed", 'Send {"challenge": "<token>"}.')
            return
        try:
            ans = answer(
                token,
                origin=origin,
                enrollment=state.enrollment,
                keys=state.keys,
                # Only when this agent posts its own callback, which brings the successor back.
                reauth_token=reauth.current(state.state_dir) if state.direct_callback else None,
            )
        except Refusal as exc:
            # Only reflect CORS to origins the enrolled service declared.
            cors = self._cors_origin(origin, state.known_origins())
            self._error(exc.status, exc.code, exc.message, cors)
            return
        if state.direct_callback:
            post_callback(
                ans, state_dir=state.state_dir, keys=state.keys, enrollment=state.enrollment
            )
        self._send(200, {"response": ans.envelope.decode()}, origin)

    def _recheck(self, origin: str | None) -> None:
        """Collect and report posture now, for a page of the enrolled service."""
        state = self.server.state
        cors = self._cors_origin(origin, state.known_origins())
        if cors is None:
            self._error(403, "origin_not_allowed", "Unknown origin.")
            return
        if state.on_recheck is None:
            self._error(409, "not_enrolled", "This device is not enrolled.", cors)
            return
        with state.recheck_lock:
            now = time.monotonic()
            if now - state.last_recheck < RECHECK_MIN_INTERVAL:
                self._error(429, "too_many_requests", "Wait a few seconds, then retry.", cors)
                return
            state.last_recheck = now
            try:
                result = state.on_recheck()
            except Exception as exc:  # noqa: BLE001 - report the failure to the page
                code = getattr(exc, "code", "report_failed")
                self._error(502, code, "The posture report did not go through.", cors)
                return
        self._send(200, {"status": "reported", "result": result}, cors)

    def _enroll(self, raw: bytes) -> None:
        """Enroll with this agent's own service, for its login page (``agent/page_enroll.py``)."""
        state = self.server.state
        # The Origin header only: browsers always send it on these requests.
        origin = (self.headers.get("Origin") or "").rstrip("/") or None
        enrollment = state.enrollment
        if state.state_dir is None or not page_enroll.allowed_origin(
            origin, enrollment, state.services
        ):
            self._error(403, "origin_not_allowed", "This web page may not enroll this device.")
            return
        try:
            req = page_enroll.parse_enroll_request(raw)
            state.enroll_gate.admit()
            if not state.enroll_gate.busy.acquire(blocking=False):
                raise page_enroll.EnrollRefusal(
                    "enroll_in_progress", "An enrollment is already running; wait for it.", 409
                )
            try:
                outcome = page_enroll.enroll_from_page(
                    req,
                    origin=origin,  # type: ignore[arg-type]  # allowed_origin: not None
                    enrollment=enrollment,
                    services=state.services,
                    keys=state.keys,
                    state_dir=state.state_dir,
                    config=state.config,
                )
            finally:
                state.enroll_gate.busy.release()
        except page_enroll.EnrollRefusal as exc:
            self._send(exc.status, exc.to_json(), origin)
            return
        except Exception:  # noqa: BLE001 - never leave the page without an answer
            log.exception("enrollment from the login page failed")
            self._error(502, "enroll_failed", "Enrollment failed; see the agent's log.", origin)
            return
        state.enrollment = outcome.enrollment
        self._send(200, outcome.to_json(), origin)


class _DeadlineReader(socket.SocketIO):
    """A socket's reading side that ends at ``deadline`` (``time.monotonic()``).

    Each read waits at most :data:`SOCKET_TIMEOUT` and never past the deadline,
    so however slowly a client trickles bytes its connection ends in time. A
    timeout is a :class:`TimeoutError`, which the request handler answers by
    closing the connection.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__(sock, "rb")
        self._deadline = deadline

    def readinto(self, b: Any) -> int | None:  # noqa: ANN001 - io signature
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("connection deadline passed")
        self._sock.settimeout(min(SOCKET_TIMEOUT, left))
        return super().readinto(b)


_BUSY = json.dumps(
    {"error": {"code": "busy", "message": "Too many connections to the agent; retry."}}
).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Cache-Control: no-store\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY
)


class LocalChannel(ThreadingHTTPServer):
    """The HTTP server; ``state`` is read by every request.

    At most ``max_connections`` connections are served at once, each for at most
    ``connection_deadline`` seconds of reading.
    """

    daemon_threads = True
    allow_reuse_address = False  # set in server_bind, the right way for the platform
    request_queue_size = 16

    def __init__(
        self,
        port: int,
        state: ChannelState,
        *,
        max_connections: int = MAX_CONNECTIONS,
        connection_deadline: float = CONNECTION_DEADLINE,
    ) -> None:
        self.state = state
        self.connection_deadline = connection_deadline
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(("127.0.0.1", port), Handler)

    def server_bind(self) -> None:
        """Bind with address reuse, so a restart is not blocked by TIME_WAIT sockets.

        On POSIX, ``SO_REUSEADDR`` allows that and still refuses a port another
        socket listens on. On Windows the same option would let another program
        take over a port in use, so there it is ``SO_EXCLUSIVEADDRUSE`` (Windows
        does not block a restart on TIME_WAIT). Never ``SO_REUSEPORT``.
        """
        if os.name == "nt":  # pragma: no cover - Windows
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread, or refuse it at once when all slots are taken."""
        if not self.slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse_busy(self, request: socket.socket) -> None:
        try:
            request.settimeout(0.5)
            request.sendall(_BUSY_RESPONSE)
        except OSError:
            pass
        self.shutdown_request(request)


def _holder(port: int) -> str:
    """Who listens on 127.0.0.1:``port``: another devicetrust agent (and its pid) or not."""
    who = "another program"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            sock.sendall(
                f"GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = b""
            while len(answer) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        body = answer.partition(b"\r\n\r\n")[2]
        ping = strict_json.loads_object(body, max_size=4096)
        if ping.get("agent") == "devicetrust":
            who = f"another devicetrust agent (version {str(ping.get('version'))[:20]})"
    except (OSError, ProtocolError):
        pass
    pid = _listener_pid(port)
    return who + (f", pid {pid}" if pid else "")


def _listener_pid(port: int) -> int | None:
    """The pid listening on 127.0.0.1:``port``, when the system tells us (best effort)."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if (
                conn.status == psutil.CONN_LISTEN
                and conn.laddr
                and conn.laddr.port == port
                and conn.pid
            ):
                return conn.pid
    except Exception:  # noqa: BLE001, S110 - not allowed to look, or no psutil: no pid
        pass
    return None


def bind_first_free(ports: list[int] | tuple[int, ...], state: ChannelState) -> LocalChannel:
    """Bind the first port of ``ports`` that is free on 127.0.0.1.

    A port in use is skipped; when none is free, the error names what holds each
    one (another devicetrust agent, with its pid when the system says).
    """
    errors = []
    for port in ports:
        try:
            return LocalChannel(port, state)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                holder = _holder(port)
                log.warning("127.0.0.1:%d is in use by %s", port, holder)
                errors.append(f"127.0.0.1:{port} is in use by {holder}")
            else:
                errors.append(f"127.0.0.1:{port}: {exc.strerror or exc}")
    raise OSError("no free port for the local channel (" + "; ".join(errors) + ")")


def serve_in_thread(channel: LocalChannel) -> threading.Thread:
    """Serve until ``channel.shutdown()``."""
    thread = threading.Thread(target=channel.serve_forever, name="local-channel", daemon=True)
    thread.start()
    return thread


__all__ = ["ChannelState", "LocalChannel", "bind_first_free", "serve_in_thread"]
