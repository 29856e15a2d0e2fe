"""The agent's local channel (``agent/local_channel.py``) served in a thread of this process.

Every defence the module docstring lists, each at its edge: the Host check (DNS rebinding),
the Origin and Referer, the CORS and Private-Network-Access headers only for the enrolled
service's origins, the preflight, the request cap (exactly the cap and one beyond), the
refusals with their codes, ``Connection: close`` after an unread body, the deadline per
connection, the cap on connections, recheck, page enrollment, and the busy-port message.

Written for the mutation run over ``agent/local_channel.py``: ``test_local_channel.py`` and
``test_local_channel_limits.py`` talk to a real ``devicetrust-agent run`` process, which
mutmut cannot credit, and every mutant then cost a service and an agent start. Here the
challenges are signed in the test with a service key (the real protocol code), the channel
is the real ``LocalChannel``, and the service's side, where one is needed (the direct
callback, page enrollment), is a small HTTP server in a thread that records what it got.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import __version__
from agent.config import AgentConfig
from agent.local_channel import (
    CONNECTION_DEADLINE,
    MAX_CONNECTIONS,
    MAX_REQUEST,
    RECHECK_MIN_INTERVAL,
    ChannelState,
    LocalChannel,
    _holder,
    _listener_pid,
    bind_first_free,
    serve_in_thread,
)
from agent.state import Enrollment
from tests.procs import free_port
from trust_protocol.challenge import Challenge, sign_challenge
from trust_protocol.device_keys import DeviceKeys, fingerprint
from trust_protocol.encoding import b64e
from trust_protocol.reauth import Grant, seal_grant
from trust_protocol.response import open_response
from trust_protocol.server_keys import ServerKeys

SERVER = ServerKeys.from_seeds(b"\x11" * 32, b"\x22" * 32)
OTHER = ServerKeys.from_seeds(b"\x33" * 32, b"\x44" * 32)
SERVICE = "https://idp.example.test"
LOGIN = "https://login.example.test"  # a second origin the service declared
EVIL = "https://evil.example"
DEVICE = DeviceKeys.from_seeds("device-unit", b"\x55" * 32, b"\x66" * 32)
BAD_HOST = {"error": {"code": "bad_host", "message": "Host must be a loopback name."}}
UNKNOWN_ORIGIN = {"error": {"code": "origin_not_allowed", "message": "Unknown origin."}}
CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-private-network", "vary")


def enrollment(server_url: str = SERVICE, origins: tuple[str, ...] = (SERVICE, LOGIN)):
    return Enrollment(
        server_url=server_url,
        server_key=b64e(bytes(SERVER.verify_key)),
        kid=SERVER.kid,
        origins=list(origins),
        agent_ports=[47621],
        user="ann@example.test",
        state="trusted",
    )


def challenge(
    *,
    origins: tuple[str, ...] = (SERVICE, LOGIN),
    callback: str = SERVICE + "/agent/v1/callback",
    purpose: str = "authenticate",
    now: float | None = None,
    key: ServerKeys = SERVER,
) -> str:
    now = int(time.time() if now is None else now)
    cid = os.urandom(16)
    return sign_challenge(
        Challenge(
            id=cid,
            purpose=purpose,
            issued_at=now - 5,
            expires_at=now + 55,
            box_key=bytes(key.challenge_box_key(cid).public_key),
            origins=origins,
            callback=callback,
            binding="login:t1",
            kid=key.kid,
        ),
        key.signing_key,
    )


def opened(envelope: str, purposes: tuple[str, ...] = ("authenticate",)):
    return open_response(
        envelope,
        verify_key=SERVER.verify_key,
        box_key_for=SERVER.challenge_box_key,
        now=time.time(),
        purposes=purposes,
    )


class Channel:
    """A LocalChannel serving in a thread; ``url(path)`` and ``raw(bytes)`` talk to it."""

    def __init__(self, state: ChannelState, *, module_thread: bool = False, **kwargs: Any) -> None:
        self.state = state
        self.server = LocalChannel(free_port(), state, **kwargs)
        self.port = self.server.server_address[1]
        if module_thread:
            self.thread = serve_in_thread(self.server)
        else:  # the same, polling for shutdown every 50 ms instead of 500 (quicker teardown)
            self.thread = threading.Thread(
                target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str = "/v1/ping", **headers: str) -> httpx.Response:
        return httpx.get(self.url(path), headers=headers, timeout=10)

    def post(self, path: str, body: bytes | str = b"", **headers: str) -> httpx.Response:
        return httpx.post(self.url(path), content=body, headers=headers, timeout=10)

    def options(self, path: str = "/v1/challenge", **headers: str) -> httpx.Response:
        return httpx.options(self.url(path), headers=headers, timeout=10)

    def raw(self, request: bytes, timeout: float = 10) -> bytes:
        """Send ``request`` as is; everything the channel sends until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(request)
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except ConnectionResetError:
                pass
        return out

    def close(self) -> None:
        if self.thread.is_alive():  # (shutdown() would wait for a loop that never ran)
            self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_channel() -> Iterator[Callable[..., Channel]]:
    made: list[Channel] = []

    def make(state: ChannelState | None = None, **kwargs: Any) -> Channel:
        made.append(
            Channel(state or ChannelState(DEVICE, enrollment(), direct_callback=False), **kwargs)
        )
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="module")
def enrolled() -> Iterator[Channel]:
    """An enrolled agent without a direct callback (tests using it do not change its state)."""
    channel = Channel(ChannelState(DEVICE, enrollment(), direct_callback=False))
    yield channel
    channel.close()


@pytest.fixture(scope="module")
def fresh() -> Iterator[Channel]:
    """An agent that is not enrolled, configured for SERVICE (no state directory)."""
    channel = Channel(ChannelState(DEVICE, None, direct_callback=False, services=(SERVICE,)))
    yield channel
    channel.close()


def _no_cors(r: httpx.Response) -> None:
    for name in CORS_HEADERS:
        assert name not in r.headers, name


def _cors(r: httpx.Response, origin: str) -> None:
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["vary"] == "Origin"
    assert r.headers["access-control-allow-private-network"] == "true"


def _body(value: object) -> str:
    return json.dumps(value)


# --- the state ------------------------------------------------------------------------


def test_channel_state_defaults_and_known_origins(tmp_path):
    state = ChannelState(DEVICE, None)
    assert state.keys is DEVICE and state.enrollment is None
    assert state.direct_callback is True and state.on_recheck is None
    assert state.services == () and state.state_dir is None and state.config is None
    assert state.last_recheck == float("-inf")
    assert state.known_origins() == set()
    assert state.enroll_gate.busy.acquire(blocking=False)
    state.enroll_gate.busy.release()
    # The service's own origin is known even when it is not among the declared origins.
    state = ChannelState(DEVICE, enrollment("https://idp.example.test:8443/base", (LOGIN,)))
    assert state.known_origins() == {LOGIN, "https://idp.example.test:8443"}
    state = ChannelState(DEVICE, None, services=(SERVICE,), state_dir=tmp_path)
    assert state.services == (SERVICE,) and state.state_dir == tmp_path


# --- Host: DNS rebinding ----------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "[::1]:{port}"]
)
def test_loopback_hosts_with_our_port_are_answered(enrolled, host):
    r = enrolled.get(Host=host.format(port=enrolled.port), Origin=SERVICE)
    assert r.status_code == 200 and r.json()["enrolled"] is True


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1",  # our port is part of the name
        "localhost",
        "127.0.0.1:{other}",
        "localhost:{other}",
        "127.0.0.1.nip.io:{port}",
        "localhost.evil.example:{port}",
        "[::1]",
        "::1:{port}",
        "",
    ],
)
def test_any_other_host_is_refused_by_every_method(enrolled, host):
    host = host.format(port=enrolled.port, other=enrolled.port + 1)
    for r in (
        enrolled.get(Host=host, Origin=SERVICE),
        enrolled.post(
            "/v1/challenge", _body({"challenge": challenge()}), Host=host, Origin=SERVICE
        ),
        enrolled.options(Host=host, Origin=SERVICE),
    ):
        assert r.status_code == 403 and r.json() == BAD_HOST
        _no_cors(r)


def test_a_request_without_host_is_refused(enrolled):
    out = enrolled.raw(b"GET /v1/ping HTTP/1.0\r\nOrigin: " + SERVICE.encode() + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403 ")
    assert out.endswith(json.dumps(BAD_HOST).encode())


# --- ping, Origin and Referer -----------------------------------------------------------


def test_ping_answers_the_service_with_cors_and_the_usual_headers(enrolled):
    for origin in (SERVICE, LOGIN, SERVICE + "/"):
        r = enrolled.get(Origin=origin)
        assert r.status_code == 200
        assert r.json() == {"agent": "devicetrust", "version": __version__, "enrolled": True}
        _cors(r, origin.rstrip("/"))
        assert r.headers["content-type"] == "application/json"
        assert r.headers["content-length"] == str(len(r.content))
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "connection" not in r.headers  # kept alive
    assert enrolled.get("/v1/ping?probe=1", Origin=SERVICE).json()["enrolled"] is True


def test_ping_without_origin_answers_local_tools_without_cors(enrolled):
    for headers in ({}, {"Origin": "null"}):
        r = enrolled.get(**headers)
        assert r.status_code == 200 and r.json()["agent"] == "devicetrust"
        _no_cors(r)


def test_the_referer_stands_in_for_a_missing_or_null_origin(enrolled):
    for headers in (
        {"Referer": SERVICE + "/login/x?y=1"},
        {"Origin": "null", "Referer": LOGIN + "/a"},
    ):
        r = enrolled.get(**headers)
        assert r.status_code == 200
        _cors(r, urlsplit_origin(headers["Referer"]))
    for headers in ({"Referer": EVIL + "/probe.html"}, {"Origin": "null", "Referer": EVIL + "/"}):
        r = enrolled.get(**headers)
        assert r.status_code == 403 and r.json() == UNKNOWN_ORIGIN
        _no_cors(r)
    # An Origin, when there is one, wins over the Referer.
    r = enrolled.get(Origin=EVIL, Referer=SERVICE + "/login")
    assert r.status_code == 403


def urlsplit_origin(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


@pytest.mark.parametrize(
    "origin",
    [EVIL, "http://127.0.0.1:1", "https://idp.example.test.evil", "/" + SERVICE, SERVICE + "X"],
)
def test_ping_refuses_a_foreign_page(enrolled, origin):
    r = enrolled.get(Origin=origin)
    assert r.status_code == 403 and r.json() == UNKNOWN_ORIGIN
    _no_cors(r)


def test_an_agent_that_is_not_enrolled_tells_no_page_and_local_tools_the_truth(fresh):
    r = fresh.get(Origin=SERVICE)
    assert r.status_code == 403 and r.json() == UNKNOWN_ORIGIN
    r = fresh.get()
    assert r.json() == {"agent": "devicetrust", "version": __version__, "enrolled": False}


def test_unknown_paths_are_404_with_cors_only_for_known_origins(enrolled):
    for path in ("/v1/pong", "/", "/v1/ping/"):
        r = enrolled.get(path, Origin=SERVICE)
        assert r.status_code == 404
        assert r.json() == {"error": {"code": "not_found", "message": "No such endpoint."}}
        _cors(r, SERVICE)
    r = enrolled.get("/v1/pong", Origin=EVIL)
    assert r.status_code == 404
    _no_cors(r)
    r = enrolled.post("/v1/other", b"{}", Origin=SERVICE)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "No such endpoint."}}
    _no_cors(r)


# --- the preflight ----------------------------------------------------------------------

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Private-Network": "true",
}


def _preflight_ok(r: httpx.Response, origin: str) -> None:
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["vary"] == "Origin"
    assert r.headers["access-control-allow-methods"] == "GET, POST"
    assert r.headers["access-control-allow-headers"] == "Content-Type"
    assert r.headers["access-control-allow-private-network"] == "true"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["content-length"] == "0"


@pytest.mark.parametrize("path", ["/v1/challenge", "/v1/ping", "/v1/enroll", "/v1/recheck"])
def test_preflight_answers_the_services_origins(make_channel, path):
    channel = make_channel(
        ChannelState(DEVICE, enrollment("https://idp.example.test:8443", (LOGIN,)))
    )
    for origin in (LOGIN, "https://idp.example.test:8443"):
        _preflight_ok(channel.options(path, Origin=origin, **PREFLIGHT), origin)


def test_preflight_refuses_other_origins_and_none(enrolled):
    for headers in ({"Origin": EVIL}, {}, {"Origin": "null"}, {"Referer": EVIL + "/x"}):
        r = enrolled.options(**headers, **PREFLIGHT)
        assert r.status_code == 403 and r.json() == UNKNOWN_ORIGIN
        _no_cors(r)
        assert "access-control-allow-methods" not in r.headers


def test_preflight_of_an_agent_that_is_not_enrolled_is_open_to_any_page(fresh):
    for origin in (SERVICE, EVIL):
        _preflight_ok(fresh.options("/v1/enroll", Origin=origin, **PREFLIGHT), origin)
    r = fresh.options("/v1/enroll", **PREFLIGHT)  # but a request without an origin is no page's
    assert r.status_code == 403 and r.json() == UNKNOWN_ORIGIN


# --- POST: lengths and the cap ----------------------------------------------------------


def _post_raw(channel: Channel, headers: str, body: bytes = b"") -> bytes:
    host = f"Host: 127.0.0.1:{channel.port}\r\nOrigin: {SERVICE}\r\nConnection: close\r\n"
    return channel.raw(f"POST /v1/challenge HTTP/1.1\r\n{host}{headers}\r\n".encode() + body)


def test_a_post_needs_a_length(enrolled):
    for headers in (
        "",
        "Content-Length: abc\r\n",
        "Content-Length: \r\n",
        "Content-Length: 1.0\r\n",
    ):
        out = _post_raw(enrolled, headers)
        assert out.startswith(b"HTTP/1.1 411 "), headers
        assert out.endswith(
            b'\r\n\r\n{"error": {"code": "length_required", '
            b'"message": "Content-Length is required."}}'
        )


def test_a_negative_length_is_too_large(enrolled):
    out = _post_raw(enrolled, "Content-Length: -1\r\n")
    assert out.startswith(b"HTTP/1.1 413 ") and b'"too_large"' in out


def _padded(body: dict, length: int) -> bytes:
    raw = json.dumps(body).encode()
    return raw[:-1] + b" " * (length - len(raw)) + b"}"


def test_a_request_of_exactly_the_cap_is_read_and_one_byte_more_is_not(enrolled):
    exact = _padded({"challenge": challenge()}, MAX_REQUEST)
    assert len(exact) == MAX_REQUEST == 16 * 1024
    r = enrolled.post("/v1/challenge", exact, Origin=SERVICE)
    assert r.status_code == 200 and "response" in r.json()
    r = enrolled.post("/v1/challenge", exact + b" ", Origin=SERVICE)
    assert r.status_code == 413
    assert r.json() == {
        "error": {"code": "too_large", "message": "Requests are capped at 16384 bytes."}
    }
    assert r.headers["connection"] == "close"
    _no_cors(r)
    # The same bounds hold for the other endpoints.
    assert enrolled.post("/v1/recheck", b" " * (MAX_REQUEST + 1), Origin=SERVICE).status_code == 413
    assert enrolled.post("/v1/recheck", b" " * MAX_REQUEST, Origin=SERVICE).status_code == 409


# --- Connection: close after an unread body --------------------------------------------


def test_an_unread_body_closes_the_connection_a_read_one_keeps_it(enrolled):
    with httpx.Client(timeout=10) as client:
        ok = client.post(
            enrolled.url("/v1/challenge"), content=b'{"challenge": 1}', headers={"Origin": SERVICE}
        )
        assert ok.status_code == 400 and "connection" not in ok.headers  # body read
        bad = client.post(
            enrolled.url("/v1/challenge"),
            content=b"{}" * 10,
            headers={"Host": "evil.example", "Origin": SERVICE},
        )
        assert bad.status_code == 403 and bad.headers["connection"] == "close"
        assert client.get(enrolled.url("/v1/ping")).status_code == 200  # on a new connection
        empty = client.get(enrolled.url("/v1/ping"), headers={"Host": "evil.example"})
        assert empty.status_code == 403 and "connection" not in empty.headers  # nothing unread


def test_a_chunked_body_left_unread_closes_too(enrolled):
    out = enrolled.raw(
        b"GET /v1/ping HTTP/1.1\r\nHost: evil.example\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 403 ") and b"\r\nConnection: close\r\n" in out


@pytest.mark.parametrize(
    ("length", "closes"), [("0", False), (" 0 ", False), ("00", True), ("5", True)]
)
def test_only_a_zero_length_counts_as_no_body(enrolled, length, closes):
    """A GET refused at once (bad Host) closes unless its Content-Length says no body."""
    with socket.create_connection(("127.0.0.1", enrolled.port), timeout=10) as s:
        body = b"x" * (int(length) if length.strip() != "00" else 0)
        s.sendall(
            b"GET /v1/ping HTTP/1.1\r\nHost: evil.example\r\n"
            + f"Content-Length:{length}\r\n\r\n".encode()
            + body
        )
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 403 ")
        assert (b"\r\nConnection: close\r\n" in head) is closes


# --- /v1/challenge ----------------------------------------------------------------------


def test_not_enrolled_says_so_and_whether_this_page_may_enroll_here(fresh):
    expected_message = "This device is not enrolled. Run: devicetrust-agent enroll URL CODE"
    # enroll_here reads the Origin header as sent (a trailing slash is no browser's origin).
    for origin, here in ((SERVICE, True), (SERVICE + "/", False), (EVIL, False)):
        r = fresh.post("/v1/challenge", _body({"challenge": challenge()}), Origin=origin)
        assert r.status_code == 409
        assert r.json() == {
            "error": {"code": "not_enrolled", "message": expected_message, "enroll_here": here}
        }
        _cors(r, origin.rstrip("/"))  # any page may read this answer
    r = fresh.post("/v1/challenge", b"{}", Referer=SERVICE + "/login")
    assert r.status_code == 409 and r.json()["error"]["enroll_here"] is False  # Origin only
    _cors(r, SERVICE)
    r = fresh.post("/v1/challenge", b"{}")
    assert r.status_code == 409 and r.json()["error"]["enroll_here"] is False
    _no_cors(r)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'"challenge"',
        b'{"nope": 1}',
        b'{"challenge": 5}',
        b'{"challenge": null}',
        b'{"challenge": "a", "challenge": "b"}',
        b"",
    ],
)
def test_a_body_that_is_not_a_challenge_is_malformed(enrolled, body):
    r = enrolled.post("/v1/challenge", body, Origin=SERVICE)
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "malformed", "message": 'Send {"challenge": "<token>"}.'}}
    _no_cors(r)


def test_the_challenge_is_answered_for_the_page_that_asked(enrolled):
    for origin in (SERVICE, LOGIN):
        r = enrolled.post("/v1/challenge", _body({"challenge": challenge()}), Origin=origin)
        assert r.status_code == 200
        _cors(r, origin)
        verified = opened(r.json()["response"])
        assert verified.device_id == DEVICE.device_id
        assert verified.data == {}  # no re-authentication token without a direct callback
    r = enrolled.post(
        "/v1/challenge", _body({"challenge": challenge()}), Referer=SERVICE + "/login/x"
    )
    assert r.status_code == 200
    _cors(r, SERVICE)


@pytest.mark.parametrize(
    ("token", "origin", "status", "code", "cors"),
    [
        (lambda: challenge(key=OTHER), SERVICE, 403, "unknown_server", True),
        (lambda: challenge(origins=(LOGIN,)), SERVICE, 403, "origin_not_allowed", True),
        (lambda: challenge(), EVIL, 403, "origin_not_allowed", False),
        (lambda: challenge(), None, 403, "origin_not_allowed", False),
        (lambda: challenge(now=time.time() - 400), SERVICE, 410, "challenge_expired", True),
        (lambda: challenge(purpose="register"), SERVICE, 403, "wrong_purpose", True),
        (lambda: "abc.def", SERVICE, 400, "malformed", True),
    ],
)
def test_refused_challenges_keep_their_status_and_code(enrolled, token, origin, status, code, cors):
    headers = {"Origin": origin} if origin else {}
    r = enrolled.post("/v1/challenge", _body({"challenge": token()}), **headers)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert r.json()["error"]["message"]
    if cors:
        _cors(r, origin)
    else:
        _no_cors(r)


class Service:
    """A stand-in for the sign-in service's agent endpoints, served in a thread."""

    def __init__(self, replies: dict[str, Any] | None = None) -> None:
        """``replies``: path -> (status, body), or a function of the request body to that."""
        self.posts: list[tuple[str, bytes]] = []
        self.got = threading.Event()
        self.replies = replies or {}
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.posts.append((self.path, body))
                reply = outer.replies.get(self.path, (200, {"status": "ok"}))
                self._answer(*(reply(body) if callable(reply) else reply))
                outer.got.set()

            def do_GET(self) -> None:  # noqa: N802
                self._answer(*outer.replies.get(self.path, (404, {"error": {"code": "not_found"}})))

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[Service]:
    s = Service()
    yield s
    s.close()


def _store_reauth(state_dir: Path) -> str:
    token = "R" * 43
    (state_dir / "reauth.json").write_text(
        json.dumps({"token": token, "expires_at": int(time.time()) + 3600})
    )
    return token


@pytest.mark.parametrize("direct", [True, False])
def test_the_direct_callback_and_its_reauth_token(make_channel, service, tmp_path, direct):
    token = _store_reauth(tmp_path)
    state = ChannelState(
        DEVICE, enrollment(service.url, (service.url,)), direct_callback=direct, state_dir=tmp_path
    )
    channel = make_channel(state)
    ch = challenge(origins=(service.url,), callback=service.url + "/agent/v1/callback")
    r = channel.post("/v1/challenge", _body({"challenge": ch}), Origin=service.url)
    assert r.status_code == 200, r.text
    envelope = r.json()["response"]
    assert opened(envelope).data == ({"reauth": token} if direct else {})
    assert service.got.wait(10 if direct else 0.5) is direct
    if direct:
        assert service.posts == [("/agent/v1/callback", envelope.encode())]


# --- /v1/recheck ------------------------------------------------------------------------


class Recheck:
    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self.calls = 0
        self.result = {"passed": True} if result is None else result
        self.error = error

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result


def test_recheck_reports_for_the_services_pages_only(make_channel):
    recheck = Recheck()
    channel = make_channel(ChannelState(DEVICE, enrollment(), on_recheck=recheck))
    for headers in ({"Origin": EVIL}, {}, {"Referer": EVIL + "/x"}):
        r = channel.post("/v1/recheck", b"", **headers)
        assert r.status_code == 403 and r.json() == UNKNOWN_ORIGIN
        _no_cors(r)
    assert recheck.calls == 0
    r = channel.post("/v1/recheck", b"", Referer=LOGIN + "/page")
    assert r.status_code == 200
    assert r.json() == {"status": "reported", "result": {"passed": True}}
    _cors(r, LOGIN)
    assert recheck.calls == 1


def test_recheck_at_most_once_per_interval(make_channel):
    recheck = Recheck()
    state = ChannelState(DEVICE, enrollment(), on_recheck=recheck)
    channel = make_channel(state)
    assert channel.post("/v1/recheck", b"", Origin=SERVICE).status_code == 200
    r = channel.post("/v1/recheck", b"", Origin=SERVICE)
    assert r.status_code == 429
    assert r.json() == {
        "error": {"code": "too_many_requests", "message": "Wait a few seconds, then retry."}
    }
    _cors(r, SERVICE)
    assert recheck.calls == 1
    assert RECHECK_MIN_INTERVAL == 3.0
    state.last_recheck = time.monotonic() - RECHECK_MIN_INTERVAL + 0.5
    assert channel.post("/v1/recheck", b"", Origin=SERVICE).status_code == 429
    state.last_recheck = time.monotonic() - RECHECK_MIN_INTERVAL - 0.01
    assert channel.post("/v1/recheck", b"", Origin=SERVICE).status_code == 200
    assert recheck.calls == 2


def test_recheck_without_a_reporter_is_not_enrolled(make_channel):
    channel = make_channel(ChannelState(DEVICE, enrollment()))
    r = channel.post("/v1/recheck", b"", Origin=SERVICE)
    assert r.status_code == 409
    assert r.json() == {
        "error": {"code": "not_enrolled", "message": "This device is not enrolled."}
    }
    _cors(r, SERVICE)


class CodedError(Exception):
    code = "device_unknown"


@pytest.mark.parametrize(
    ("error", "code"), [(CodedError("x"), "device_unknown"), (RuntimeError("x"), "report_failed")]
)
def test_a_failed_recheck_is_502_with_its_code_and_still_counts(make_channel, error, code):
    recheck = Recheck(error=error)
    channel = make_channel(ChannelState(DEVICE, enrollment(), on_recheck=recheck))
    r = channel.post("/v1/recheck", b"", Origin=SERVICE)
    assert r.status_code == 502
    assert r.json() == {
        "error": {"code": code, "message": "The posture report did not go through."}
    }
    _cors(r, SERVICE)
    assert channel.post("/v1/recheck", b"", Origin=SERVICE).status_code == 429


# --- /v1/enroll -------------------------------------------------------------------------


def _enroll_body(token: str = "abc.def", code: str | None = "ABCD-EFGH") -> bytes:
    return json.dumps({"challenge": token, "code": code}).encode()


def test_enroll_needs_a_page_of_the_service_and_a_state_directory(make_channel, tmp_path):
    refused = {
        "error": {
            "code": "origin_not_allowed",
            "message": "This web page may not enroll this device.",
        }
    }
    channel = make_channel(ChannelState(DEVICE, None, services=(SERVICE,), state_dir=tmp_path))
    for headers in (
        {"Origin": EVIL},
        {},
        {"Referer": SERVICE + "/login"},
        {"Origin": SERVICE + "X"},
    ):
        r = channel.post("/v1/enroll", _enroll_body(), **headers)
        assert r.status_code == 403 and r.json() == refused
        _no_cors(r)
    no_dir = make_channel(ChannelState(DEVICE, None, services=(SERVICE,)))
    r = no_dir.post("/v1/enroll", _enroll_body(), Origin=SERVICE)
    assert r.status_code == 403 and r.json() == refused
    # The service's page gets past the origin check (its request is malformed here).
    r = channel.post("/v1/enroll", b"[]", Origin=SERVICE + "/")
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed"
    _cors(r, SERVICE)


def test_enroll_refusals_keep_their_status_and_code(make_channel, tmp_path):
    channel = make_channel(ChannelState(DEVICE, enrollment(), state_dir=tmp_path))
    r = channel.post("/v1/enroll", _enroll_body(code="no!"), Origin=LOGIN)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "enroll_code_invalid"
    assert r.json()["error"]["hint"].startswith("Codes have letters")
    _cors(r, LOGIN)
    # A challenge for sign-in, not registration: refused by the ceremony, which then frees
    # its one-at-a-time lock (the next attempt is refused for its own reason again).
    for _ in range(2):
        r = channel.post("/v1/enroll", _enroll_body(challenge()), Origin=SERVICE)
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_purpose"
        _cors(r, SERVICE)


def test_one_enrollment_at_a_time(make_channel, tmp_path):
    state = ChannelState(DEVICE, enrollment(), state_dir=tmp_path)
    channel = make_channel(state)
    assert state.enroll_gate.busy.acquire(blocking=False)
    try:
        r = channel.post("/v1/enroll", _enroll_body(challenge(purpose="register")), Origin=SERVICE)
    finally:
        state.enroll_gate.busy.release()
    assert r.status_code == 409
    assert r.json() == {
        "error": {
            "code": "enroll_in_progress",
            "message": "An enrollment is already running; wait for it.",
        }
    }
    _cors(r, SERVICE)


def test_enrollment_attempts_are_counted(make_channel, tmp_path):
    state = ChannelState(DEVICE, enrollment(), state_dir=tmp_path)
    channel = make_channel(state)
    limit = state.enroll_gate.limit
    codes = [
        channel.post("/v1/enroll", _enroll_body(challenge()), Origin=SERVICE).json()["error"][
            "code"
        ]
        for _ in range(limit + 1)
    ]
    assert codes == ["wrong_purpose"] * limit + ["too_many_requests"]
    # A malformed request is refused before it counts.
    state.enroll_gate.recent.clear()
    for _ in range(limit + 1):
        assert (
            channel.post("/v1/enroll", b"{", Origin=SERVICE).json()["error"]["code"] == "malformed"
        )


def _registration_service(user: str = "ann@example.test") -> Service:
    return Service({"/agent/v1/register": (200, {"user": user, "state": "trusted"})})


def test_an_enrolled_agent_registers_again_with_its_service_from_its_page(make_channel, tmp_path):
    svc = _registration_service("bob@example.test")
    try:
        state = ChannelState(
            DEVICE, enrollment(svc.url, (svc.url, LOGIN)), state_dir=tmp_path, direct_callback=False
        )
        channel = make_channel(state)
        token = challenge(
            purpose="register", origins=(LOGIN,), callback=svc.url + "/agent/v1/register"
        )
        r = channel.post("/v1/enroll", _enroll_body(token), Origin=LOGIN)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "status": "enrolled",
            "state": "trusted",
            "user": "bob@example.test",
            "server_url": svc.url,
        }
        _cors(r, LOGIN)
        assert state.enrollment is not None and state.enrollment.user == "bob@example.test"
        [(path, envelope)] = svc.posts
        assert path == "/agent/v1/register"
        verified = opened(envelope.decode(), ("register",))
        assert verified.data == {"enrollment_code": "ABCD-EFGH"}
        assert verified.device_id == DEVICE.device_id
        # ... and ping says so.
        assert channel.get(Origin=LOGIN).json()["enrolled"] is True
    finally:
        svc.close()


def test_an_unexpected_failure_is_502_enroll_failed(make_channel, tmp_path, caplog):
    svc = _registration_service()
    try:
        not_a_dir = tmp_path / "file"
        not_a_dir.write_text("")
        state = ChannelState(DEVICE, enrollment(svc.url, (svc.url,)), state_dir=not_a_dir)
        channel = make_channel(state)
        token = challenge(
            purpose="register", origins=(svc.url,), callback=svc.url + "/agent/v1/register"
        )
        r = channel.post("/v1/enroll", _enroll_body(token), Origin=svc.url)
        assert r.status_code == 502
        assert r.json() == {
            "error": {
                "code": "enroll_failed",
                "message": "Enrollment failed; see the agent's log.",
            }
        }
        _cors(r, svc.url)
        [failure] = [r for r in caplog.records if r.name == "agent.local_channel"]
        assert failure.levelno == logging.ERROR and failure.exc_info
        assert failure.getMessage() == "enrollment from the login page failed"
        assert state.enrollment.user == "ann@example.test"  # unchanged
        # The lock was released: the next attempt is not "in progress".
        r = channel.post("/v1/enroll", _enroll_body(token), Origin=svc.url)
        assert r.status_code == 502
    finally:
        svc.close()


# --- time limits and connection limits --------------------------------------------------


def test_a_silent_client_is_cut_off_by_the_read_timeout_or_the_deadline(make_channel):
    short = make_channel(connection_deadline=0.3)
    with socket.create_connection(("127.0.0.1", short.port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(b"GET /v1/ping HTTP/1.1\r\n")
        assert s.recv(1024) == b""
        assert time.monotonic() - started < 1.5  # the deadline, not the 2 s read timeout
    assert CONNECTION_DEADLINE == 10.0
    default = make_channel()
    assert default.server.connection_deadline == CONNECTION_DEADLINE
    with socket.create_connection(("127.0.0.1", default.port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(b"GET /v1/ping HTTP/1.1\r\n")
        assert s.recv(1024) == b""
        took = time.monotonic() - started
    assert 1.5 < took < 6  # one read waits 2 s (SOCKET_TIMEOUT)


def test_a_trickling_client_is_cut_off_at_the_deadline(make_channel):
    channel = make_channel(connection_deadline=1.0)
    with socket.create_connection(("127.0.0.1", channel.port), timeout=10) as s:
        s.setblocking(False)
        started = time.monotonic()
        closed = False
        for byte in b"GET /v1/ping?" + b"a" * 200:
            try:
                if s.recv(1024) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
                break
            try:
                s.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        took = time.monotonic() - started
    assert closed and took < 4


def test_keep_alive_requests_share_the_deadline(make_channel):
    channel = make_channel(connection_deadline=1.0)
    ping = f"GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1:{channel.port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", channel.port), timeout=10) as s:
        s.sendall(ping)
        first = b""
        while not first.endswith(b"}") and (chunk := s.recv(65536)):
            first += chunk
        assert first.startswith(b"HTTP/1.1 200 ")
        time.sleep(1.2)
        try:
            s.sendall(ping)
            answer = s.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
    assert answer == b""  # past the deadline: closed, not answered


def _wait_for(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        time.sleep(0.01)
    pytest.fail("condition not reached")


def test_connections_beyond_the_cap_get_a_quick_503_and_slots_come_back(make_channel, capsys):
    channel = make_channel(max_connections=2)
    idle = [socket.create_connection(("127.0.0.1", channel.port), timeout=10) for _ in range(2)]
    try:
        _wait_for(lambda: channel.server.slots._value == 0)
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", channel.port), timeout=10) as extra:
            answer = b""
            while chunk := extra.recv(4096):
                answer += chunk
        assert time.monotonic() - started < 1.5
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b"\r\n") == [
            b"HTTP/1.1 503 Service Unavailable",
            b"Content-Type: application/json",
            b"Cache-Control: no-store",
            b"Connection: close",
            b"Retry-After: 1",
            b"Content-Length: " + str(len(body)).encode(),
        ]
        assert json.loads(body) == {
            "error": {"code": "busy", "message": "Too many connections to the agent; retry."}
        }
    finally:
        for s in idle:
            s.close()
    _wait_for(lambda: channel.server.slots._value == 2)
    for _ in range(5):  # each served connection gives its slot back
        assert channel.get().status_code == 200
    assert "Traceback" not in capsys.readouterr().err  # the refusal itself went cleanly
    assert MAX_CONNECTIONS == 16
    assert make_channel().server.slots._value == MAX_CONNECTIONS


def test_the_log_line_names_the_channel(enrolled, caplog):
    caplog.set_level(logging.DEBUG, logger="agent.local_channel")
    enrolled.get("/v1/ping?logged=1")
    _wait_for(lambda: "/v1/ping?logged=1" in caplog.text)
    line = next(r for r in caplog.records if "/v1/ping?logged=1" in r.getMessage())
    assert line.getMessage().startswith("local channel: ")


# --- binding --------------------------------------------------------------------------


def test_binds_127_0_0_1_only_with_address_reuse(make_channel):
    channel = make_channel(module_thread=True)
    assert channel.thread.is_alive()
    assert channel.server.server_address == ("127.0.0.1", channel.port)
    sock = channel.server.socket
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    assert channel.thread.name == "local-channel" and channel.thread.daemon is True
    assert channel.get().status_code == 200


def test_bind_first_free_skips_a_busy_port_and_names_the_holder(enrolled, caplog):
    free = free_port()
    second = bind_first_free([enrolled.port, free], enrolled.state)
    try:
        assert second.server_address == ("127.0.0.1", free)
        assert second.state is enrolled.state
    finally:
        second.server_close()
    [warning] = [r for r in caplog.records if r.name == "agent.local_channel"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        f"127.0.0.1:{enrolled.port} is in use by another devicetrust agent "
        f"(version {__version__}), pid {os.getpid()}"
    )


def test_no_free_port_names_every_holder(enrolled):
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)  # listens, never answers
    with other:
        port = other.getsockname()[1]
        with pytest.raises(OSError) as err:
            bind_first_free([enrolled.port, port], enrolled.state)
    assert str(err.value) == (
        "no free port for the local channel ("
        f"127.0.0.1:{enrolled.port} is in use by another devicetrust agent "
        f"(version {__version__}), pid {os.getpid()}; "
        f"127.0.0.1:{port} is in use by another program, pid {os.getpid()})"
    )


def _answering_ping(body: bytes) -> tuple[socket.socket, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, thread


@pytest.mark.parametrize(
    ("body", "who"),
    [
        (
            b'{"agent": "devicetrust", "version": "' + b"9" * 30 + b'"}',
            "another devicetrust agent (version " + "9" * 20 + ")",
        ),
        (b'{"agent": "devicetrust", "version": 7}', "another devicetrust agent (version 7)"),
        (b'{"agent": "other", "version": "1"}', "another program"),
        (b'{"version": "1"}', "another program"),
        (b"[1]", "another program"),
        (b"<html>", "another program"),
        # JSON may hold a blank line in its white space: the body starts at the first one.
        (
            b'{"agent": "devicetrust",\r\n\r\n"version": "2"}',
            "another devicetrust agent (version 2)",
        ),
    ],
)
def test_the_holder_is_named_by_its_ping(enrolled, body, who):
    sock, thread = _answering_ping(body)
    with sock:
        port = sock.getsockname()[1]
        with pytest.raises(OSError) as err:
            bind_first_free([port], enrolled.state)
        thread.join(10)
    assert str(err.value) == (
        "no free port for the local channel "
        f"(127.0.0.1:{port} is in use by {who}, pid {os.getpid()})"
    )


def test_a_long_ping_answer_is_read_in_part(enrolled):
    """At most 4 KiB of the holder's answer is read: a longer one is not parsed."""
    pad = b" " * 5000
    sock, thread = _answering_ping(b'{"agent": "devicetrust", "version": "1"' + pad + b"}")
    with sock:
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match="is in use by another program"):
            bind_first_free([port], enrolled.state)
        thread.join(10)


def test_a_free_port_has_no_listener_pid():
    port = free_port()
    assert _listener_pid(port) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert _listener_pid(port) is None  # bound, not listening
        s.listen(1)
        assert _listener_pid(port) == os.getpid()


def test_channel_uses_its_own_keys(make_channel):
    keys = DeviceKeys.generate(str(uuid.uuid4()))
    channel = make_channel(ChannelState(keys, enrollment(), direct_callback=False))
    r = channel.post("/v1/challenge", _body({"challenge": challenge()}), Origin=SERVICE)
    assert opened(r.json()["response"]).device_id == keys.device_id


def test_the_callbacks_reply_brings_the_next_reauth_token(make_channel, tmp_path):
    """The channel hands its state directory, keys and enrollment to the direct callback,
    which stores the successor token the service's reply carries."""

    def grant_for(envelope: bytes) -> tuple[int, dict]:
        cid = opened(envelope.decode()).challenge.id_text
        now = int(time.time())
        grant = Grant(SERVER.kid, DEVICE.device_id, cid, "family-1", "N" * 43, now, now + 3600)
        return 200, {
            "status": "ok",
            "reauth": b64e(seal_grant(grant, SERVER.signing_key, DEVICE.box_public)),
        }

    svc = Service({"/agent/v1/callback": grant_for})
    try:
        old = _store_reauth(tmp_path)
        state = ChannelState(DEVICE, enrollment(svc.url, (svc.url,)), state_dir=tmp_path)
        channel = make_channel(state)
        ch = challenge(origins=(svc.url,), callback=svc.url + "/agent/v1/callback")
        r = channel.post("/v1/challenge", _body({"challenge": ch}), Origin=svc.url)
        assert r.status_code == 200 and opened(r.json()["response"]).data == {"reauth": old}
        _wait_for(lambda: "N" * 43 in (tmp_path / "reauth.json").read_text())
    finally:
        svc.close()


def _first_enrollment_service(user: str = "cy@example.test") -> Service:
    svc = Service({"/agent/v1/register": (200, {"user": user, "state": "pending"})})
    svc.replies["/agent/v1/server"] = (
        200,
        {
            "server_key": b64e(bytes(SERVER.verify_key)),
            "kid": SERVER.kid,
            "origins": [svc.url],
            "agent_ports": [47621],
            "public_url": svc.url,
        },
    )
    return svc


@pytest.mark.parametrize("pin", [None, "right", "wrong"])
def test_an_agent_not_enrolled_enrolls_with_its_configured_service(make_channel, tmp_path, pin):
    svc = _first_enrollment_service()
    try:
        pins = {
            None: AgentConfig(),
            "right": AgentConfig(server_key_fingerprint=fingerprint(bytes(SERVER.verify_key))),
            "wrong": AgentConfig(server_key_fingerprint=fingerprint(bytes(OTHER.verify_key))),
        }
        state = ChannelState(
            DEVICE, None, services=(svc.url,), state_dir=tmp_path, config=pins[pin]
        )
        channel = make_channel(state)
        token = challenge(
            purpose="register", origins=(svc.url,), callback=svc.url + "/agent/v1/register"
        )
        r = channel.post("/v1/enroll", _enroll_body(token), Origin=svc.url)
        _cors(r, svc.url)
        if pin == "wrong":
            assert r.status_code == 502 and r.json()["error"]["code"] == "server_key_mismatch"
            assert state.enrollment is None and svc.posts == []
            return
        assert r.status_code == 200, r.text
        assert r.json() == {
            "status": "enrolled",
            "state": "pending",
            "user": "cy@example.test",
            "server_url": svc.url,
        }
        assert state.enrollment is not None and state.enrollment.server_url == svc.url
        [(_, envelope)] = svc.posts
        assert opened(envelope.decode(), ("register",)).device_id == DEVICE.device_id
        assert channel.get(Origin=svc.url).json()["enrolled"] is True
    finally:
        svc.close()


def test_a_connection_past_its_deadline_is_closed_before_reading(make_channel, caplog):
    caplog.set_level(logging.DEBUG, logger="agent.local_channel")
    channel = make_channel(connection_deadline=0)
    out = channel.raw(f"GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1:{channel.port}\r\n\r\n".encode())
    assert out == b""
    expected = "local channel: Request timed out: TimeoutError('connection deadline passed')"
    _wait_for(lambda: any(r.getMessage() == expected for r in caplog.records))


def test_a_port_bound_by_a_program_that_does_not_listen_has_no_pid(enrolled):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))  # bound, not listening, no SO_REUSEADDR
        port = other.getsockname()[1]
        with pytest.raises(OSError) as err:
            bind_first_free([port], enrolled.state)
    assert str(err.value) == (
        f"no free port for the local channel (127.0.0.1:{port} is in use by another program)"
    )


def _answering_in_pieces(*pieces: bytes) -> tuple[socket.socket, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            for piece in pieces:
                conn.sendall(piece)
                time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, thread


def _holder_named(*pieces: bytes) -> str:
    sock, thread = _answering_in_pieces(*pieces)
    with sock:
        who = _holder(sock.getsockname()[1])
        thread.join(10)
    return who.rsplit(", pid ", 1)[0]


PING = b'{"agent": "devicetrust", "version": "1"}'


def _head(body_length: int, pad: int = 0) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nX-Pad: "
        + b"p" * pad
        + b"\r\nContent-Length: "
        + str(body_length).encode()
        + b"\r\n\r\n"
    )


def test_the_holder_reads_4096_bytes_of_answer_at_most():
    # 4097 bytes at once: the last byte completes the JSON, and is not read.
    head = _head(len(PING), 0)
    pad = 4097 - len(head) - len(PING)
    answer = _head(len(PING), pad) + PING
    assert len(answer) == 4097
    assert _holder_named(answer) == "another program"
    # One byte less is read whole.
    answer = _head(len(PING), pad - 1) + PING
    assert _holder_named(answer) == "another devicetrust agent (version 1)"
    # Below 4096 bytes it reads on: 4093 bytes, then the rest.
    answer = _head(len(PING), pad + 3) + PING
    assert len(answer) == 4100
    assert _holder_named(answer[:4093], answer[4093:]) == "another devicetrust agent (version 1)"


def test_the_holder_parses_a_body_of_4096_bytes_at_most():
    def body(length: int) -> bytes:
        return PING[:-1] + b" " * (length - len(PING)) + b"}"

    for length, who in ((4096, "another devicetrust agent (version 1)"), (4097, "another program")):
        data = body(length)
        # The head and part of the body, then the rest: read in two pieces.
        assert _holder_named(_head(length) + data[:2000], data[2000:]) == who, length


def test_the_holder_waits_one_second_for_a_silent_program(enrolled):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)  # accepts (the kernel does), never answers
        started = time.monotonic()
        assert _holder(other.getsockname()[1]) == f"another program, pid {os.getpid()}"
        assert 0.9 < time.monotonic() - started < 1.9


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_a_port_refused_for_another_reason_says_why(enrolled):
    """Not in use but not allowed (a port below 1024 for a user): the error says so."""
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as fh:
        if int(fh.read()) <= 80:
            pytest.skip("unprivileged users may bind port 80 here")
    second = bind_first_free([free_port()], enrolled.state)  # (in-process, for mutmut)
    second.server_close()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                bind_first_free([80, 81], enrolled.state)
                out = "bound"
            except OSError as exc:
                out = str(exc)
            os.write(write, out.encode())
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    assert data.decode() == (
        "no free port for the local channel "
        "(127.0.0.1:80: Permission denied; 127.0.0.1:81: Permission denied)"
    )


def test_the_holder_gives_up_connecting_after_one_second():
    """A program whose accept queue is full never completes the connection."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(0)
        port = other.getsockname()[1]
        waiting = []
        try:
            for _ in range(3):  # fill the queue (never accepted)
                c = socket.socket()
                c.settimeout(0.3)
                try:
                    c.connect(("127.0.0.1", port))
                except OSError:
                    pass
                waiting.append(c)
            found: list[str] = []
            started = time.monotonic()
            thread = threading.Thread(target=lambda: found.append(_holder(port)), daemon=True)
            thread.start()
            thread.join(5)
            assert not thread.is_alive(), "the holder waited without a timeout"
            assert found == [f"another program, pid {os.getpid()}"]
            assert time.monotonic() - started < 1.9
        finally:
            for c in waiting:
                c.close()


def test_an_unread_body_is_never_read_as_the_next_request(make_channel):
    """A body left unread (the request was refused first) is not parsed as a request of its
    own: the channel answers once and closes."""
    channel = make_channel(connection_deadline=2.0)
    smuggled = f"GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1:{channel.port}\r\n\r\n".encode()
    out = channel.raw(
        b"POST /v1/challenge HTTP/1.1\r\nHost: evil.example\r\n"
        + f"Content-Length: {len(smuggled)}\r\n\r\n".encode()
        + smuggled
    )
    assert out.count(b"HTTP/1.1 ") == 1
    assert out.startswith(b"HTTP/1.1 403 ") and b"\r\nConnection: close\r\n" in out
