"""Benchmark: full SAML logins per second through HAProxy with 1, 2 and 3 service replicas.

Every replica is a separate ``devicetrust serve`` (gunicorn, one worker) with a
data directory of its own, on one PostgreSQL database; HAProxy (Debian's) balances
them round robin and health-checks ``/readyz``. The load generator is the login
bench's (``bench/login.py``): one process per client, each one browser tab plus one
device answering challenges with the agent's protocol code. Prints, in one run:

  * logins/s straight to one replica (no balancer): the single-process figure;
  * logins/s through the balancer with 1, 2 and 3 replicas, each with its ratio
    to the single-process figure, its failures, and the CPU per login of the
    replicas, HAProxy and PostgreSQL;
  * the overhead per replica: what an idle replica costs (its jobs and health
    checks), and the CPU per login added by each extra replica.

On a 2-core machine shared with the load generator the figures show overhead,
not scaling. The same code (``Cluster``, ``drive``) is the harness of
``tests/e2e/test_replicas.py``, which kills a replica with ``kill -9`` mid-run.

Usage: python bench/replicas.py [--seconds 10] [--clients 6] [--smoke]
       [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SP_ENTITY = "https://bench-sp.example.com/metadata"
SP_ACS = "https://bench-sp.example.com/acs"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
# HAProxy's log line per request: our request id, the replica, status, termination state.
LOG_LINE = re.compile(r"req=\{?(?P<req>[^ }]*)\}? srv=(?P<srv>\S+) st=(?P<st>-?\d+) ts=(?P<ts>\S+)")


# ---- the cluster: replicas and the balancer -------------------------------------------------


@dataclass
class Replica:
    """One ``devicetrust serve`` process group (gunicorn master and worker)."""

    name: str
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        """``kill -9`` the whole replica (master and worker), as a lost machine would be."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def pids(self) -> list[int]:
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            master = psutil.Process(self.proc.pid)
            return [master.pid, *(c.pid for c in master.children(recursive=True))]
        except psutil.Error:
            return []


def _free_port() -> int:
    from tests.procs import free_port

    return free_port()


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def wait_ready(url: str, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _get(url) == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


@dataclass
class Cluster:
    """N replicas on one database behind HAProxy, in ``tmp``; a context manager."""

    tmp: Path
    database_url: str
    replicas: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)
    threads: int = 8
    members: list[Replica] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        """The balancer's URL: the service's public URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def haproxy_log(self) -> Path:
        return self.tmp / "haproxy.log"

    def env(self) -> dict[str, str]:
        """The replicas' shared settings (each adds its own data directory)."""
        from tests.procs import base_env

        return base_env(
            DEVICETRUST_DATABASE_URL=self.database_url,
            DEVICETRUST_PUBLIC_URL=self.url,
            # Secrets every replica must share, given to each (not in a shared directory):
            # the audit key and the checkpoint key (docs/deploy.md, "Scale-out").
            DEVICETRUST_AUDIT_KEY=self.audit_key,
            DEVICETRUST_AUDIT_CHECKPOINT_KEY=self.checkpoint_key,
            DEVICETRUST_TRUSTED_PROXIES="1",
            **self.extra_env,
        )

    def __post_init__(self) -> None:
        self.port = _free_port()
        self.audit_key = os.urandom(32).hex()
        self.checkpoint_key = os.urandom(32).hex()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``devicetrust ARGS`` with the replicas' settings."""
        env = {**self.env(), "DEVICETRUST_DATA_DIR": str(self.tmp / "cli-data")}
        return subprocess.run(
            [sys.executable, "-m", "idp_service", *args],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self) -> Cluster:
        """Migrate, start the replicas (in parallel) and the balancer; wait until ready."""
        self.cli("migrate")
        for i in range(self.replicas):
            self.add_replica(f"r{i + 1}", wait=False)
        for member in self.members:
            self.wait_replica(member)
        self.start_haproxy()
        return self

    def add_replica(self, name: str, *, wait: bool = True) -> Replica:
        port = _free_port()
        member = Replica(name, port, self.tmp / f"{name}-data", self.tmp / f"{name}.log")
        self.members.append(member)
        self.launch(member)
        if wait:
            self.wait_replica(member)
        return member

    def launch(self, member: Replica) -> None:
        """Start (or restart) ``member``'s process group."""
        env = {**self.env(), "DEVICETRUST_DATA_DIR": str(member.data_dir)}
        log = member.log_path.open("ab")
        member.proc = subprocess.Popen(
            [sys.executable, "-m", "idp_service", "serve", "--port", str(member.port),
             "--workers", "1", "--threads", str(self.threads)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 takes master and worker
        )  # fmt: skip
        log.close()

    def wait_replica(self, member: Replica, timeout: float = 90.0) -> None:
        try:
            wait_ready(member.url + "/readyz", timeout)
        except TimeoutError:
            raise RuntimeError(
                f"replica {member.name} did not start:\n{self.log(member)}"
            ) from None

    def log(self, member: Replica) -> str:
        return member.log_path.read_text(errors="replace") if member.log_path.exists() else ""

    def haproxy_config(self) -> str:
        servers = "\n".join(f"    server {m.name} 127.0.0.1:{m.port} check" for m in self.members)
        observe = "observe layer4 error-limit 1 on-error mark-down"
        return f"""global
    log stdout format raw local0 info
    maxconn 4096
defaults
    mode http
    log global
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    # A connection a replica refused (it died) is retried on another; a request that
    # reached a replica is never sent twice (retry-on defaults to connection failures).
    retries 3
    option redispatch 1
    option forwardfor
frontend devicetrust
    bind 127.0.0.1:{self.port}
    http-request capture req.hdr(X-Req-Id) len 64
    log-format "req=%[capture.req.hdr(0)] srv=%s st=%ST ts=%tsc ta=%Ta"
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # Health checks every second (faster while a replica is failing); live traffic that
    # cannot connect marks a replica down at once.
    default-server inter 1s fastinter 250ms downinter 500ms fall 2 rise 2 {observe}
    http-response set-header X-Replica %[srv_name]
{servers}
"""

    def start_haproxy(self) -> None:
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(self.haproxy_config())
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(
                f"haproxy -c refused the configuration:\n{check.stdout}{check.stderr}"
            )
        log = self.haproxy_log.open("ab")
        self.haproxy = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_ready(self.url + "/readyz", 30)
        # Until HAProxy's first health check passes for all, it may count some as down.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(self.served_by(20)) < len(self.alive()):
            time.sleep(0.2)

    def alive(self) -> list[Replica]:
        return [m for m in self.members if m.proc is not None and m.proc.poll() is None]

    def served_by(self, n: int) -> set[str]:
        """Which replicas answered ``n`` requests through the balancer."""
        names = set()
        for _ in range(n):
            req = urllib.request.Request(self.url + "/healthz", headers={"Connection": "close"})
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310 - loopback
                    names.add(resp.headers.get("X-Replica"))
            except OSError:
                pass
        return names

    def requests(self) -> list[dict[str, str]]:
        """Every request HAProxy logged: our request id, replica, status, termination."""
        out = []
        for line in self.haproxy_log.read_text(errors="replace").splitlines():
            m = LOG_LINE.search(line)
            if m:
                out.append(m.groupdict())
        return out

    def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
        for member in self.members:
            member.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- the load generator: the login bench's client, with request ids ------------------------


def authn_request(sso_url: str) -> tuple[str, str]:
    """(the AuthnRequest's ID, its Redirect-binding query string)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    request_id = f"_{uuid.uuid4().hex}"
    xml = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="{request_id}" Version="2.0" IssueInstant="{now}" Destination="{sso_url}" '
        f'AssertionConsumerServiceURL="{SP_ACS}" '
        'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
        f"<saml:Issuer>{SP_ENTITY}</saml:Issuer></samlp:AuthnRequest>"
    ).encode()
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    query = urlencode({"SAMLRequest": base64.b64encode(c.compress(xml) + c.flush()).decode()})
    return request_id, query


_SAML_RESPONSE = re.compile(rb'name="SAMLResponse" value="([^"]+)"')
_CERT = re.compile(rb"<ds:X509Certificate>([^<]+)</ds:X509Certificate>")


def cert_id(b64: bytes) -> str:
    """A short name for a certificate as it appears in ``<ds:X509Certificate>``."""
    return hashlib.sha256(b"".join(b64.split())).hexdigest()[:16]


def signed_with(page: bytes) -> str:
    """The certificate (:func:`cert_id`) in the SAML Response a POST form carries."""
    m = _SAML_RESPONSE.search(page)
    if not m:
        return ""
    cert = _CERT.search(base64.b64decode(m.group(1)))
    return cert_id(cert.group(1)) if cert else ""


class Browser:
    """The login bench's raw-socket keep-alive client (``bench/login.py``), which also
    sends a request id (``X-Req-Id``, logged by HAProxy) and reads ``X-Replica``."""

    def __init__(self, base: str) -> None:
        u = urlsplit(base)
        self.address = (u.hostname, u.port)
        self.host = f"Host: {u.netloc}\r\n".encode()
        self.cookies: dict[bytes, bytes] = {}
        self.replica = ""
        self.closed = True
        self.retries = 0  # requests sent again after a reused connection closed unanswered
        self.resent = False  # the last request was one of them

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False
        self.answered = 0  # responses read on this connection

    def _more(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        if not self.closed:
            self.sock.close()
            self.closed = True

    def send(
        self, method: str, path: str, body: bytes | None = None, ctype: str = "", rid: str = ""
    ) -> tuple[int, str | None, bytes]:
        """One request and its response. Like a browser, a request that finds its reused
        keep-alive connection closed before any byte of an answer is sent again once on a
        new connection: HAProxy closes a client's connection without answering when the
        replica it reused a connection to closed it as the request was sent
        (``http-reuse safe``), which leaves the retry to the client."""
        if self.closed:
            self._connect()
        head = [f"{method} {path} HTTP/1.1\r\n".encode(), self.host]
        if rid:
            head.append(f"X-Req-Id: {rid}\r\n".encode())
        if self.cookies:
            jar = b"; ".join(k + b"=" + v for k, v in self.cookies.items())
            head.append(b"Cookie: " + jar + b"\r\n")
        if body is not None:
            head.append(f"Content-Length: {len(body)}\r\n".encode())
        if ctype:
            head.append(f"Content-Type: {ctype}\r\n".encode())
        head.append(b"\r\n")
        self.replica = ""
        self.resent = False
        message = b"".join(head) + (body or b"")
        for attempt in (1, 2):
            reused = self.answered > 0
            try:
                self.sock.sendall(message)
                while (end := self.buf.find(b"\r\n\r\n")) < 0:
                    self._more()
                break
            except OSError:
                self.close()
                if attempt == 2 or not reused or self.buf:
                    raise
                self.retries += 1
                self.resent = True
                self._connect()
        lines = self.buf[:end].split(b"\r\n")
        self.buf = self.buf[end + 4 :]
        status = int(lines[0].split(b" ", 2)[1])
        length, location, close = 0, None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"location":
                location = value.strip().decode()
            elif name == b"set-cookie":
                pair = value.strip().split(b";", 1)[0]
                key, _, val = pair.partition(b"=")
                self.cookies[key] = val
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"x-replica":
                self.replica = value.strip().decode()
            elif name == b"transfer-encoding":
                raise http.client.HTTPException("chunked responses are not expected here")
        try:
            while len(self.buf) < length:
                self._more()
        except OSError:
            self.close()
            raise
        data, self.buf = self.buf[:length], self.buf[length:]
        self.answered += 1
        if close:
            self.close()
        return status, location, data


@dataclass
class Device:
    """How a client answers challenges: the agent's protocol code in-process (``code``: an
    enrollment code it registers with first), or a real ``devicetrust-agent run`` on
    ``agent_port``."""

    code: str = ""
    agent_port: int = 0
    # Fresh enrollment codes: every ``register_every``-th round registers one more device.
    extra_codes: list[str] = field(default_factory=list)
    register_every: int = 0


class Failed(Exception):
    """A step of a login (or registration) got an unexpected answer."""

    def __init__(self, rid: str, what: str) -> None:
        super().__init__(what)
        self.rid = rid


def _register(b: Browser, verify_key: Any, code: str, rid: str) -> tuple[Any, dict[str, Any], str]:
    """Register a new in-process device with ``code``; (keys, platform, device id)."""
    from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, seal_response

    keys = DeviceKeys.generate(str(uuid.uuid4()))
    status, _, issued = b.send(
        "POST", "/agent/v1/challenges", b'{"purpose":"register"}', "application/json", rid + "-c"
    )
    if status != 200:
        raise Failed(rid + "-c", f"register challenge: {status}")
    token = json.loads(issued)["challenge"]
    platform = {
        "hardware_uuid": f"hw-{keys.device_id}",
        "serial": keys.device_id[:12],
        "os": "linux",
    }
    body = ResponseBody(
        token, keys.public_json(), platform, "bench", time.time(), data={"enrollment_code": code}
    )
    envelope = seal_response(body, parse_challenge(token, verify_key), keys)
    status, _, data = b.send("POST", "/agent/v1/register", envelope, rid=rid + "-r")
    if status != 201:
        raise Failed(rid + "-r", f"register: {status} {data[:200]!r}")
    return keys, platform, json.loads(data)["device_id"]


def drive(
    name: str,
    base: str,
    device: Device,
    start_at: float,
    stop_at: float,
    out: Any,
    public: str = "",
    finished: Any = None,
) -> None:
    """One client: log in (and now and then register a device) until ``stop_at``, or
    until ``finished`` (an event) is set.

    Puts ``{"logins": [...], "registrations": [...], "warm_done": n}`` on ``out``: per
    login its AuthnRequest ID, outcome, start and end time, the request id of the
    failing request and what failed; per registration its device id (acknowledged) or
    the failing request id.
    """
    from nacl.signing import VerifyKey

    from trust_protocol import ResponseBody, parse_challenge, seal_response
    from trust_protocol.encoding import b64d

    b = Browser(base)
    _, _, info = b.send("GET", "/agent/v1/server", rid=f"{name}-info")
    verify_key = VerifyKey(b64d(json.loads(info)["server_key"], length=32))
    keys = platform = None
    if not device.agent_port:
        keys, platform, _ = _register(b, verify_key, device.code, f"{name}-setup")
    sso = (public or base) + "/saml/sso"  # the AuthnRequest's Destination: the public URL
    logins: list[dict[str, Any]] = []
    registrations: list[dict[str, Any]] = []
    codes = list(device.extra_codes)
    while time.time() < start_at:
        time.sleep(0.01)
    n = 0
    while time.time() < stop_at and not (finished is not None and finished.is_set()):
        n += 1
        rid = f"{name}-{n}"
        if device.register_every and codes and n % device.register_every == 0:
            try:
                _, _, device_id = _register(b, verify_key, codes.pop(), rid)
                registrations.append({"rid": rid, "ok": True, "device_id": device_id})
            except (Failed, OSError, http.client.HTTPException, ValueError) as exc:
                registrations.append(
                    {"rid": getattr(exc, "rid", rid), "ok": False, "error": repr(exc)[:200]}
                )
            continue
        t0 = time.time()
        request_id, query = authn_request(sso)
        record: dict[str, Any] = {"rid": rid, "request_id": request_id, "t0": t0, "ok": False}
        step = f"{rid}-sso"
        try:
            status, location, _ = b.send("GET", "/saml/sso?" + query, rid=step)
            if status != 303 or not location:
                raise Failed(step, f"sso: {status}")
            txn = location.rsplit("/", 1)[-1]
            step = f"{rid}-ch"
            status, _, ch = b.send(
                "POST", f"/login/{txn}/challenge", b"{}", "application/json", step
            )
            if status != 200:
                raise Failed(step, f"challenge: {status} {ch[:200]!r}")
            token = json.loads(ch)["challenge"]
            if device.agent_port:
                step = f"{rid}-agent"
                # A new connection per challenge, as the login page's fetch would make.
                agent = http.client.HTTPConnection("127.0.0.1", device.agent_port, timeout=30)
                agent.request(
                    "POST",
                    "/v1/challenge",
                    json.dumps({"challenge": token}).encode(),
                    {"Origin": public or base, "Content-Type": "application/json"},
                )
                answer = agent.getresponse()
                raw = answer.read()
                agent.close()
                if answer.status != 200:
                    raise Failed(step, f"agent: {answer.status} {raw[:200]!r}")
                envelope = json.loads(raw)["response"].encode()
            else:
                assert keys is not None and platform is not None
                envelope = seal_response(
                    ResponseBody(token, keys.public_json(), platform, "bench", time.time()),
                    parse_challenge(token, verify_key),
                    keys,
                )
            step = f"{rid}-resp"
            status, _, st = b.send("POST", f"/login/{txn}/response", envelope, rid=step)
            if status != 200 or b'"verified"' not in st:
                raise Failed(step, f"response: {status} {st[:200]!r}")
            step = f"{rid}-cont"
            record["t_cont"] = time.time()
            status, _, page = b.send("GET", f"/login/{txn}/continue", rid=step)
            if status != 200 or b'name="SAMLResponse"' not in page:
                raise Failed(step, f"continue: {status} {page[:200]!r}")
            record.update(ok=True, replica=b.replica, txn=txn, cert=signed_with(page))
        except (Failed, OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            record.update(
                failed_rid=getattr(exc, "rid", step), error=repr(exc)[:300], resent=b.resent
            )
            time.sleep(0.2)  # a person tries again a moment later, not at once
        record["t1"] = time.time()
        logins.append(record)
    b.close()
    out.put({"name": name, "logins": logins, "registrations": registrations, "retries": b.retries})


def run_load(
    base: str,
    devices: list[Device],
    seconds: float,
    *,
    warmup: float = 1.0,
    during: Any = None,
    public: str = "",
) -> tuple[list[dict[str, Any]], float, float]:
    """Run one ``drive`` process per device for ``seconds`` after ``warmup``; returns
    (the clients' results, measured window start, end). ``during(start, end, finish)``
    runs in this process while the clients do (to kill something, or watch CPU);
    calling ``finish()`` ends the run early."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    finished = ctx.Event()
    start_at = time.time() + 2.0  # time for the clients to register their devices
    stop_at = start_at + warmup + seconds
    procs = [
        ctx.Process(
            target=drive, args=(f"c{i}", base, d, start_at, stop_at, queue, public, finished)
        )
        for i, d in enumerate(devices)
    ]
    for p in procs:
        p.start()
    if during is not None:
        during(start_at + warmup, stop_at, finished.set)
    results = [queue.get(timeout=seconds + warmup + 120) for _ in procs]
    for p in procs:
        p.join(10)
    return results, start_at + warmup, stop_at


# ---- the benchmark ----------------------------------------------------------------------------


class CpuWatch:
    """CPU seconds of groups of processes (by pid) and of PostgreSQL over a window."""

    def __init__(self, groups: dict[str, list[int]], dbname: str) -> None:
        self.groups, self.dbname = groups, dbname
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        import psutil

        out = {name: 0.0 for name in (*self.groups, "postgres")}
        procs = [(name, pid) for name, pids in self.groups.items() for pid in pids]
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith("postgres:") and self.dbname in cmd:
                procs.append(("postgres", p.pid))
        for name, pid in procs:
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            out[name] += t.user + t.system
        t = psutil.cpu_times()
        out["machine"] = t.user + t.system + t.nice + t.irq + t.softirq + t.steal
        out["wall"] = time.time()
        return out

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> None:
        after = self._sample()
        self.used = {k: after[k] - self.before.get(k, 0.0) for k in after}


@contextlib.contextmanager
def audit_key(cluster: Cluster) -> Iterator[None]:
    """Write through this process with the replicas' audit key (rows it audits must verify
    with theirs); the process's own key is put back afterwards."""
    from idp_service.platform import audit_keys

    saved = audit_keys._key
    audit_keys._key = bytes.fromhex(cluster.audit_key)
    try:
        yield
    finally:
        audit_keys._key = saved


def enrollment_codes(cluster: Cluster, n: int) -> list[str]:
    """``n`` enrollment codes of a new user (written here with the replicas' audit key)."""
    from idp_service.devices import enroll
    from idp_service.directory import users
    from idp_service.platform.db import Database

    db = Database(cluster.database_url)
    with audit_key(cluster), db.session() as s:
        user = users.create(s, f"bench-{uuid.uuid4().hex[:8]}@example.com")
        codes = [enroll.create_code(s, user, ttl_seconds=900)[0] for _ in range(n)]
    db.dispose()
    return codes


def setup(cluster: Cluster, clients: int) -> list[Device]:
    """The bench SP (once) and a device per client, each with its own user's code."""
    from idp_service.platform.db import Database
    from idp_service.saml import api
    from tests.saml_support import sp_metadata

    db = Database(cluster.database_url)
    with audit_key(cluster):
        if not any(sp["entity_id"] == SP_ENTITY for sp in api.list_sps(db)):
            api.create_sp(db, {"metadata_xml": sp_metadata(SP_ENTITY, [SP_ACS]).decode()})
    db.dispose()
    return [Device(code=enrollment_codes(cluster, 1)[0]) for _ in range(clients)]


def measure(
    cluster: Cluster, base: str, clients: int, seconds: float, pids: dict[str, list[int]]
) -> dict[str, Any]:
    """Logins/s against ``base`` and CPU per login of each group in ``pids``."""
    dbname = urlsplit(cluster.database_url).path[1:]
    devices = setup(cluster, clients)
    watch = CpuWatch(pids, dbname)

    def during(start: float, stop: float, _finish: Any) -> None:
        time.sleep(max(0.0, start - time.time()))
        watch.start()
        time.sleep(max(0.0, stop - time.time()))
        watch.stop()

    results, start, stop = run_load(base, devices, seconds, during=during, public=cluster.url)
    logins = [r for res in results for r in res["logins"] if r["t0"] >= start]
    done = sum(1 for r in logins if r["ok"])
    failed = sum(1 for r in logins if not r["ok"])
    for r in [r for r in logins if not r["ok"]][:3]:
        print(f"login failed: {r['error']}", file=sys.stderr)
    wall = watch.used["wall"]
    per = {k: 1000 * v / max(done, 1) for k, v in watch.used.items() if k != "wall"}
    busy = watch.used["machine"] / wall
    return {"rate": done / wall, "failed": failed, "cpu_ms": per, "done": done, "busy": busy}


def idle_cpu(pids: list[int], seconds: float) -> float:
    """CPU (fraction of a core) ``pids`` use while idle."""
    watch = CpuWatch({"x": pids}, "-")
    watch.start()
    time.sleep(seconds)
    watch.stop()
    return watch.used["x"] / watch.used["wall"]


def main() -> None:
    """Run the benchmark and print the figures."""
    from bench.login import _scratch_pg

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per setup")
    parser.add_argument("--clients", type=int, default=6, help="load-generator processes")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test runs this); figures mean nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.clients = 0.5, 1
    counts = (1, 2) if args.smoke else (1, 2, 3)
    url, drop = _scratch_pg(args.pg_url)
    load_before = os.getloadavg()[0]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cluster = Cluster(
                Path(tmp), url, replicas=max(counts),
                extra_env={"DEVICETRUST_RATELIMIT_ENABLED": "false"},
            )  # fmt: skip
            try:
                cluster.cli("migrate")
                first = cluster.add_replica("r1")
                time.sleep(0.5 if args.smoke else 3)  # let the worker finish loading
                idle = idle_cpu(first.pids(), 1 if args.smoke else 5)
                single = measure(
                    cluster, first.url, args.clients, args.seconds, {"replicas": first.pids()}
                )
                for n in counts:
                    while len(cluster.members) < n:  # only the replicas measured run
                        cluster.add_replica(f"r{len(cluster.members) + 1}")
                        time.sleep(0.5 if args.smoke else 3)
                    if cluster.haproxy is not None:
                        cluster.haproxy.terminate()
                        cluster.haproxy.wait(10)
                    cluster.start_haproxy()
                    pids = {
                        "replicas": [p for m in cluster.members for p in m.pids()],
                        "haproxy": [cluster.haproxy.pid] if cluster.haproxy else [],
                    }
                    rows.append(
                        (n, measure(cluster, cluster.url, args.clients, args.seconds, pids))
                    )
            finally:
                cluster.stop()
    finally:
        drop()
    print(
        f"logins through HAProxy, N replicas (gunicorn 1 worker x 8 threads each), "
        f"PostgreSQL, {args.clients} clients, {args.seconds:.0f} s each"
    )
    print(f"  load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    s = single["cpu_ms"]
    print(
        f"single process, no balancer: {single['rate']:,.0f} logins/s ({single['failed']} failed);"
        f" CPU per login: service {s['replicas']:.2f} ms, postgres {s['postgres']:.2f} ms"
    )
    print(f"  (machine busy {single['busy']:.2f} of {os.cpu_count()} cores)")
    print(f"{'replicas':>8} {'logins/s':>9} {'ratio':>6} {'failed':>6}"
          f" {'replica ms':>10} {'haproxy ms':>10} {'pg ms':>6} {'busy':>5}")  # fmt: skip
    for n, r in rows:
        c = r["cpu_ms"]
        print(
            f"{n:>8} {r['rate']:>9,.0f} {r['rate'] / single['rate']:>6.0%} {r['failed']:>6}"
            f" {c['replicas']:>10.2f} {c['haproxy']:>10.2f} {c['postgres']:>6.2f}"
            f" {r['busy']:>5.2f}"
        )
    print("  (ratio: to the single process; ms: CPU per login; busy: cores in use, all work)")
    print(
        f"idle replica: {100 * idle:.1f}% of a core (its jobs: audit seal every 1 s, webhook"
        " poll every 1 s, the other leases' checks)"
    )
    base_ms = rows[0][1]["cpu_ms"]["replicas"]
    for n, r in rows[1:]:
        extra = (r["cpu_ms"]["replicas"] - base_ms) / (n - 1)
        print(f"  CPU per login added per extra replica ({n} replicas): {extra:+.2f} ms")
    print(
        f"  balancer overhead per login: {rows[0][1]['cpu_ms']['haproxy']:.2f} ms (HAProxy), "
        f"ratio 1 replica via HAProxy / single process: {rows[0][1]['rate'] / single['rate']:.0%}"
    )


if __name__ == "__main__":
    main()
