"""User-context facts: the per-user helper and the system agent's socket for it.

Some facts can only be read inside the logged-in user's session: GNOME's screen
lock lives in the user's dconf database behind their session bus, and the
hardened system unit keeps no capability to switch to the user (no
``CAP_SETUID``, ``NoNewPrivileges``). So a small helper, started by a systemd
*user* unit in each graphical session (``devicetrust-agent user-helper``),
reads them as that user and hands them to the system agent over a local Unix
socket (``/run/devicetrust-agent/user.sock`` by default).

The system agent side (:class:`UserSocketServer`) trusts the kernel, not the
message: it asks for the peer's credentials (``SO_PEERCRED``) and

* accepts a connection only from a uid that is a graphical console user of this
  device right now (any other uid, root included, is refused with
  ``uid_not_accepted`` and logged);
* files what it receives under that peer uid; a message never names a user, so
  one user cannot speak for another;
* reads at most :data:`MAX_MESSAGE` bytes through the strict JSON reader, with a
  short timeout and a cap on connections served at once, and checks every field
  (:func:`parse_report`); a refused message changes nothing.

The collectors then use a fresh report (younger than :data:`FRESH_SECONDS`) for
that user's screen lock instead of reading it themselves.

Wire format, one exchange per connection, one JSON object per line::

    helper -> agent  {"v": 1, "screen_lock": {"source": "gsettings", "enabled": true,
                      "timeout_seconds": 300, "idle_seconds": 300, "delay_seconds": 0}}
    agent -> helper  {"ok": true}  or  {"ok": false, "error": "uid_not_accepted"}
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trust_protocol import strict_json
from trust_protocol.errors import ProtocolError

log = logging.getLogger(__name__)

SOCKET_ENV = "DEVICETRUST_AGENT_USER_SOCKET"
DEFAULT_SOCKET = "/run/devicetrust-agent/user.sock"
MAX_MESSAGE = 4096  # bytes of one helper message
SOCKET_TIMEOUT = 2.0  # seconds the agent waits for a helper's message
MAX_CONNECTIONS = 8  # helpers served at once; the next is refused with "busy"
SEND_TIMEOUT = 5.0  # seconds the helper waits for the agent's answer
FRESH_SECONDS = 15 * 60  # a report older than this is not used
MAX_SECONDS = 366 * 86400  # the largest delay a report may state
SOURCES = ("gsettings", "kscreenlockerrc")
_LOCK_FIELDS = ("source", "enabled", "timeout_seconds", "idle_seconds", "delay_seconds")


class HelperRefused(Exception):
    """The agent refused a helper's message; ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


def socket_path() -> Path:
    """Where the system agent listens for user helpers (``DEVICETRUST_AGENT_USER_SOCKET``)."""
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


# --- the message ------------------------------------------------------------------


def _seconds(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_SECONDS:
        raise HelperRefused("invalid_field", f"{name} must be null or 0..{MAX_SECONDS}")
    return value


def parse_report(raw: bytes) -> dict[str, Any]:
    """A helper's message as the screen-lock entry to file, or :class:`HelperRefused`."""
    try:
        obj = strict_json.loads_object(raw, max_size=MAX_MESSAGE, max_depth=4)
    except ProtocolError as exc:
        raise HelperRefused("malformed", "the message is not one small JSON object") from exc
    if set(obj) != {"v", "screen_lock"}:
        raise HelperRefused("malformed", 'the message holds exactly "v" and "screen_lock"')
    if obj["v"] != 1 or type(obj["v"]) is not int:
        raise HelperRefused("unsupported_version", "only version 1 is understood")
    lock = obj["screen_lock"]
    if not isinstance(lock, dict) or set(lock) != set(_LOCK_FIELDS):
        raise HelperRefused("malformed", f"screen_lock holds exactly {', '.join(_LOCK_FIELDS)}")
    if lock["source"] is not None and lock["source"] not in SOURCES:
        raise HelperRefused("invalid_field", f"source must be null or one of {', '.join(SOURCES)}")
    if lock["enabled"] is not None and not isinstance(lock["enabled"], bool):
        raise HelperRefused("invalid_field", "enabled must be true, false or null")
    return {
        "source": lock["source"],
        "enabled": lock["enabled"],
        **{k: _seconds(lock[k], k) for k in ("timeout_seconds", "idle_seconds", "delay_seconds")},
    }


# --- the system agent's side ----------------------------------------------------------


class UserFactsStore:
    """The latest accepted report per uid, with the time it arrived."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: dict[int, tuple[float, dict[str, Any]]] = {}

    def put(self, uid: int, report: dict[str, Any]) -> None:
        """File ``report`` (already checked) under ``uid``."""
        with self._lock:
            self._reports[uid] = (self._clock(), dict(report))

    def get(self, uid: int) -> dict[str, Any] | None:
        """``uid``'s report if one arrived in the last :data:`FRESH_SECONDS`, else None."""
        with self._lock:
            found = self._reports.get(uid)
        if found is None or self._clock() - found[0] > FRESH_SECONDS:
            return None
        return dict(found[1])


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket, from the kernel."""
    # struct ucred: pid_t (signed, but a pid is positive), uid_t and gid_t (unsigned: a
    # uid of 2**31 or more must not read as a negative number).
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3I"))
    _pid, uid, _gid = struct.unpack("3I", creds)
    return uid


def _reply(conn: socket.socket, ok: bool, error: str | None = None) -> None:
    body = {"ok": True} if ok else {"ok": False, "error": error}
    try:
        conn.sendall(json.dumps(body).encode() + b"\n")
    except OSError:
        pass


class _Handler(socketserver.BaseRequestHandler):
    server: UserSocketServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        if not self.server.slots.acquire(blocking=False):
            _reply(conn, False, "busy")
            return
        try:
            self._serve(conn)
        finally:
            self.server.slots.release()

    def _serve(self, conn: socket.socket) -> None:
        uid = peer_uid(conn)
        if not self.server.accepts(uid):
            log.warning("user helper refused: uid %d is not a graphical console user", uid)
            _reply(conn, False, "uid_not_accepted")
            return
        conn.settimeout(SOCKET_TIMEOUT)
        data = b""
        deadline = time.monotonic() + SOCKET_TIMEOUT
        try:
            while b"\n" not in data and len(data) <= MAX_MESSAGE:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = conn.recv(MAX_MESSAGE + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, OSError):
            _reply(conn, False, "timeout")
            return
        try:
            if len(data) > MAX_MESSAGE:
                raise HelperRefused("too_large", f"a message is at most {MAX_MESSAGE} bytes")
            report = parse_report(data.partition(b"\n")[0])
        except HelperRefused as exc:
            log.warning("user helper of uid %d sent a bad message: %s", uid, exc.code)
            _reply(conn, False, exc.code)
            return
        self.server.store.put(uid, report)
        log.info("screen lock of uid %d received from its user helper", uid)
        _reply(conn, True)


class UserSocketServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The system agent's listener for user helpers (see the module docstring)."""

    daemon_threads = True
    request_queue_size = 32  # connections waiting to be accepted (a login wave)

    def __init__(self, path: Path, store: UserFactsStore, accepts: Callable[[int], bool]) -> None:
        self.path = Path(path)
        self.store = store
        self.accepts = accepts
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        _clear_stale_socket(self.path)
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        super().__init__(str(self.path), _Handler)
        # Every local user may connect; the peer credentials decide who is heard.
        os.chmod(self.path, 0o666)  # noqa: S103 - access is checked per connection

    def serve_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread."""
        thread = threading.Thread(target=self.serve_forever, name="user-socket", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self.shutdown()
        self.server_close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by an agent that died; refuse when one still answers."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; remove it or choose another path")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:  # nobody listens: what an agent that died leaves
            path.unlink()
            return
        except OSError:  # e.g. a listener too busy to accept in time: not proof it is gone
            pass
    raise OSError(f"{path} is in use by another agent")


def console_uids(
    host_factory: Callable[[], Any],
    ttl: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[int], bool]:
    """A check "is uid a graphical console user now?", listing users at most every ``ttl`` s."""
    from agent.collectors.linux import local_users

    lock = threading.Lock()
    cache: dict[str, Any] = {"at": None}  # never listed yet

    def accepts(uid: int) -> bool:
        with lock:
            if cache["at"] is None or clock() - cache["at"] > ttl:
                try:
                    users = local_users(host_factory())
                    cache["uids"] = frozenset(u.uid for u in users if u.graphical and u.uid)
                except Exception as exc:  # noqa: BLE001 - nobody can be accepted then
                    log.warning("cannot list console users: %s", exc)
                    cache["uids"] = frozenset()
                cache["at"] = clock()
            return uid in cache["uids"]

    return accepts


# --- the helper's side ----------------------------------------------------------------


def read_own_screen_lock() -> dict[str, Any]:
    """This user's screen lock, read in this session (unknown fields are null)."""
    import pwd

    from agent.collectors.base import CollectorError, Host
    from agent.collectors.common import LocalUser
    from agent.collectors.linux import _user_screen_lock

    uid = os.getuid()
    try:
        entry = pwd.getpwuid(uid)
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:
        name, home = str(uid), os.environ.get("HOME")
    desktop = os.environ.get("XDG_CURRENT_DESKTOP", "")
    user = LocalUser(name, uid, home, desktop, graphical=True)
    try:
        found = _user_screen_lock(Host.local("linux"), user)
    except (CollectorError, OSError) as exc:  # OSError: a home it may not look into
        log.warning("cannot read the screen lock: %s", exc)
        found = {}
    return {k: found.get(k) for k in _LOCK_FIELDS}


def send_report(path: Path, screen_lock: dict[str, Any], timeout: float = SEND_TIMEOUT) -> None:
    """Send one report to the system agent; :class:`HelperRefused` when it says no."""
    message = json.dumps({"v": 1, "screen_lock": screen_lock}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        try:
            conn.sendall(message)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read the message: its answer is already here
        answer = b""
        while b"\n" not in answer and len(answer) < 1024:
            chunk = conn.recv(1024)
            if not chunk:
                break
            answer += chunk
    try:
        reply = strict_json.loads_object(answer.partition(b"\n")[0], max_size=1024)
    except ProtocolError:
        raise HelperRefused(
            "no_answer", "the agent closed the connection without answering"
        ) from None
    if reply.get("ok") is not True:
        code = str(reply.get("error"))[:40]
        hint = {
            "uid_not_accepted": "the agent only hears users logged in at this device's screen",
        }.get(code, "see the agent's log: journalctl -u devicetrust-agent")
        raise HelperRefused(code, hint)
