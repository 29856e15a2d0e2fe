"""The user-helper socket (``agent/user_helper.py``) in this process: the message checks at
each limit, the store's freshness, the server's refusals (uid, size, timeouts, busy), the
socket file's life, the console-user check on a recorded device, and the helper's side.

Written for the mutation run over ``agent/user_helper.py``: ``test_user_helper.py`` runs
the real ``devicetrust-agent run`` and forked clients under other uids, which mutmut cannot
credit; here the server runs in a thread of the test process (it hears the test itself, uid
``os.getuid()``, and ``accepts`` decides), and only the cases that need another uid fork.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import user_helper
from agent.collectors.base import CollectorError, Host
from agent.user_helper import (
    DEFAULT_SOCKET,
    FRESH_SECONDS,
    MAX_CONNECTIONS,
    MAX_MESSAGE,
    MAX_SECONDS,
    SEND_TIMEOUT,
    SOCKET_ENV,
    HelperRefused,
    UserFactsStore,
    UserSocketServer,
    console_uids,
    parse_report,
    peer_uid,
    read_own_screen_lock,
    send_report,
    socket_path,
)
from tests.posture_helpers import FIXTURES

GOOD = {
    "source": "gsettings",
    "enabled": True,
    "timeout_seconds": 300,
    "idle_seconds": 120,
    "delay_seconds": 5,
}
ME = os.getuid()


def _msg(lock: object = None, **top: object) -> bytes:
    return json.dumps({"v": 1, "screen_lock": GOOD if lock is None else lock, **top}).encode()


def _refused(raw: bytes) -> HelperRefused:
    with pytest.raises(HelperRefused) as err:
        parse_report(raw)
    return err.value


def _logged(caplog: pytest.LogCaptureFixture, message: str, level: int = logging.INFO) -> bool:
    """Whether the module logged exactly ``message`` at ``level``."""
    return any(
        r.name == "agent.user_helper" and r.levelno == level and r.getMessage() == message
        for r in caplog.records
    )


# --- the message ----------------------------------------------------------------------


def test_helper_refused_carries_its_code_and_message():
    exc = HelperRefused("too_large", "a message is at most 4096 bytes")
    assert (exc.code, exc.message) == ("too_large", "a message is at most 4096 bytes")
    assert str(exc) == "a message is at most 4096 bytes (too_large)"


def test_socket_path_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    assert socket_path() == Path(DEFAULT_SOCKET) == Path("/run/devicetrust-agent/user.sock")
    monkeypatch.setenv(SOCKET_ENV, "")
    assert socket_path() == Path(DEFAULT_SOCKET)
    monkeypatch.setenv(SOCKET_ENV, "/tmp/x/user.sock")
    assert socket_path() == Path("/tmp/x/user.sock")


def test_a_good_report_is_returned_field_by_field():
    assert parse_report(_msg()) == GOOD
    kde = {**GOOD, "source": "kscreenlockerrc", "enabled": False}
    assert parse_report(_msg(kde)) == kde
    unknown = dict.fromkeys(GOOD)
    assert parse_report(_msg(unknown)) == unknown


@pytest.mark.parametrize("field", ["timeout_seconds", "idle_seconds", "delay_seconds"])
def test_each_duration_at_its_bounds(field):
    for ok in (0, 1, MAX_SECONDS, None):
        assert parse_report(_msg({**GOOD, field: ok}))[field] == ok
    assert MAX_SECONDS == 366 * 86400
    for bad in (-1, MAX_SECONDS + 1, True, False, 1.0, "5", [5]):
        exc = _refused(_msg({**GOOD, field: bad}))
        assert exc.code == "invalid_field", bad
        assert exc.message == f"{field} must be null or 0..{MAX_SECONDS}"


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (b"not json", "malformed", "the message is not one small JSON object"),
        (b"[1]", "malformed", "the message is not one small JSON object"),
        (b"", "malformed", "the message is not one small JSON object"),
        (_msg(uid=0), "malformed", 'the message holds exactly "v" and "screen_lock"'),
        (b'{"v": 1}', "malformed", 'the message holds exactly "v" and "screen_lock"'),
        (b'{"screen_lock": {}}', "malformed", 'the message holds exactly "v" and "screen_lock"'),
        (b'{"v": 2, "screen_lock": {}}', "unsupported_version", "only version 1 is understood"),
        (b'{"v": 0, "screen_lock": {}}', "unsupported_version", "only version 1 is understood"),
        (b'{"v": true, "screen_lock": {}}', "unsupported_version", "only version 1 is understood"),
        (b'{"v": 1.0, "screen_lock": {}}', "unsupported_version", "only version 1 is understood"),
        (b'{"v": "1", "screen_lock": {}}', "unsupported_version", "only version 1 is understood"),
    ],
)
def test_refusals_of_the_envelope(raw, code, message):
    exc = _refused(raw)
    assert (exc.code, exc.message) == (code, message)


LOCK_SHAPE = (
    "screen_lock holds exactly source, enabled, timeout_seconds, idle_seconds, delay_seconds"
)


@pytest.mark.parametrize(
    ("lock", "code", "message"),
    [
        ([], "malformed", LOCK_SHAPE),
        (None, "malformed", LOCK_SHAPE),  # a JSON null: not an object
        ({k: v for k, v in GOOD.items() if k != "enabled"}, "malformed", LOCK_SHAPE),
        ({**GOOD, "user": "root"}, "malformed", LOCK_SHAPE),
        ({**GOOD, "source": "regedit"}, "invalid_field", None),
        ({**GOOD, "source": "GSETTINGS"}, "invalid_field", None),
        ({**GOOD, "source": 1}, "invalid_field", None),
        ({**GOOD, "enabled": 1}, "invalid_field", "enabled must be true, false or null"),
        ({**GOOD, "enabled": "true"}, "invalid_field", "enabled must be true, false or null"),
    ],
)
def test_refusals_of_the_screen_lock(lock, code, message):
    raw = (
        json.dumps({"v": 1, "screen_lock": lock}).encode()
        if lock is not None
        else b'{"v": 1, "screen_lock": null}'
    )
    exc = _refused(raw)
    assert exc.code == code
    assert exc.message == (message or "source must be null or one of gsettings, kscreenlockerrc")


def test_the_size_cap_of_a_message():
    body = _msg()
    exact = body[:-1] + b" " * (MAX_MESSAGE - len(body)) + b"}"
    assert len(exact) == MAX_MESSAGE and parse_report(exact) == GOOD
    assert _refused(b" " + exact).code == "malformed"


def test_the_depth_cap_of_a_message():
    # Four levels (message, screen_lock, two lists) are read, and refused for the field;
    # a fifth is refused by the reader before any field is looked at.
    assert _refused(_msg({**GOOD, "source": [[]]})).code == "invalid_field"
    assert _refused(_msg({**GOOD, "source": [[[]]]})).code == "malformed"


# --- the store --------------------------------------------------------------------------


def test_the_store_keeps_a_copy_per_uid_while_fresh():
    now = [100.0]
    store = UserFactsStore(clock=lambda: now[0])
    assert store.get(1000) is None
    report = dict(GOOD)
    store.put(1000, report)
    report["enabled"] = False  # the caller's dict is not the stored one
    got = store.get(1000)
    assert got == GOOD
    got["source"] = "kscreenlockerrc"  # nor is the one handed out
    assert store.get(1000) == GOOD
    assert store.get(1001) is None
    store.put(1001, {**GOOD, "delay_seconds": 0})
    assert store.get(1000) == GOOD and store.get(1001)["delay_seconds"] == 0
    now[0] = 100.0 + FRESH_SECONDS  # exactly as old as allowed
    assert store.get(1000) == GOOD
    now[0] = 100.0 + FRESH_SECONDS + 0.001
    assert store.get(1000) is None
    store.put(1000, GOOD)  # a new report is fresh again
    assert store.get(1000) == GOOD
    assert FRESH_SECONDS == 15 * 60


def test_the_store_reads_the_monotonic_clock_by_default():
    store = UserFactsStore()
    store.put(5, GOOD)
    assert store.get(5) == GOOD


# --- the server -------------------------------------------------------------------------


def test_peer_uid_is_what_the_kernel_says():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_uid(a) == ME == peer_uid(b)


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another uid needs root")
@pytest.mark.parametrize("uid", [1000, 2**31 - 1, 2**31, 3_000_000_000, 2**32 - 2])
def test_peer_uid_of_another_uid_including_those_past_2_31(uid):
    """uid_t is unsigned: a uid of 2**31 or more (large directory-service ranges) must not
    read as a negative number."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(f"\0dt-peer-uid-{os.getpid()}-{uid}")  # abstract: no file permissions
        listener.listen(1)
        name = listener.getsockname()

        def connect() -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(name)
                return "connected"

        pid = os.fork()
        if pid == 0:  # the child: become uid, connect, leave
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                connect()
            finally:
                os._exit(0)
        conn, _ = listener.accept()
        with conn:
            assert peer_uid(conn) == uid
        os.waitpid(pid, 0)


def test_reply_lines():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        user_helper._reply(a, True)
        assert b.recv(100) == b'{"ok": true}\n'
        user_helper._reply(a, False, "busy")
        assert b.recv(100) == b'{"ok": false, "error": "busy"}\n'
        a.close()
        user_helper._reply(a, False, "timeout")  # a closed connection: no exception


class Served:
    """A UserSocketServer serving in a thread of this process."""

    def __init__(self, path: Path) -> None:
        self.allowed = {ME}
        self.store = UserFactsStore()
        self.path = path
        self.server = UserSocketServer(path, self.store, lambda uid: uid in self.allowed)
        self.thread = self.server.serve_in_thread()
        # Serving at once: a server that does not serve fails here, not after long waits.
        assert self.raw(b"\n", timeout=2) == {"ok": False, "error": "malformed"}

    def raw(self, payload: bytes, *, shut: bool = False, timeout: float = 10) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(self.path))
            try:
                conn.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the message was read: the answer is there
            if shut:
                conn.shutdown(socket.SHUT_WR)
            return json.loads(conn.makefile("rb").readline())


@pytest.fixture
def served(tmp_path, monkeypatch) -> Iterator[Served]:
    monkeypatch.setattr(user_helper, "SOCKET_TIMEOUT", 0.5)
    s = Served(tmp_path / "run" / "sub" / "user.sock")
    yield s
    s.server.close()


def test_the_socket_file_its_directory_and_thread(served, tmp_path):
    assert stat.S_ISSOCK(served.path.lstat().st_mode)
    assert stat.S_IMODE(served.path.stat().st_mode) == 0o666
    assert served.server.path == served.path
    # The directory is made 0755 whatever the umask lets through (here: everything).
    old = os.umask(0)
    try:
        wide = Served(tmp_path / "wide" / "user.sock")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(wide.path.parent.stat().st_mode) == 0o755
        assert stat.S_IMODE(wide.path.stat().st_mode) == 0o666
    finally:
        wide.server.close()
    assert served.thread.name == "user-socket"
    assert served.thread.daemon is True and served.thread.is_alive()


def test_an_accepted_uid_is_heard_and_filed_under_its_uid(served, caplog):
    caplog.set_level(logging.INFO, logger="agent.user_helper")
    assert send_report(served.path, GOOD) is None
    assert served.store.get(ME) == GOOD
    assert served.store.get(ME + 1) is None
    assert _logged(caplog, f"screen lock of uid {ME} received from its user helper")


def test_another_uid_is_refused_and_nothing_is_filed(served, caplog):
    served.allowed = {ME + 1}
    with pytest.raises(HelperRefused) as err:
        send_report(served.path, GOOD)
    assert err.value.code == "uid_not_accepted"
    assert err.value.message == ("the agent only hears users logged in at this device's screen")
    assert served.store.get(ME) is None
    assert _logged(
        caplog, f"user helper refused: uid {ME} is not a graphical console user", logging.WARNING
    )


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json\n", "malformed"),
        (b'{"v": 2, "screen_lock": {}}\n', "unsupported_version"),
        (_msg({**GOOD, "idle_seconds": -1}) + b"\n", "invalid_field"),
    ],
)
def test_a_bad_message_is_refused_with_its_code(served, caplog, payload, code):
    caplog.clear()  # (the fixture's own first exchange was malformed too)
    assert served.raw(payload) == {"ok": False, "error": code}
    assert served.store.get(ME) is None
    assert _logged(caplog, f"user helper of uid {ME} sent a bad message: {code}", logging.WARNING)


def _padded(length: int) -> bytes:
    """A good message of exactly ``length`` bytes (spaces before its closing brace)."""
    body = _msg()
    return body[:-1] + b" " * (length - len(body)) + b"}"


def test_the_line_with_its_newline_is_at_most_max_message_bytes(served):
    assert served.raw(_padded(MAX_MESSAGE - 1) + b"\n") == {"ok": True}
    assert served.raw(_padded(MAX_MESSAGE) + b"\n") == {"ok": False, "error": "too_large"}
    assert served.raw(_padded(MAX_MESSAGE * 3) + b"\n") == {"ok": False, "error": "too_large"}
    # What follows the line is not read as part of the message.
    assert served.raw(_msg() + b"\nmore") == {"ok": True}


def _in_two_pieces(served: Served, first: bytes, second: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(served.path))
        conn.sendall(first)
        time.sleep(0.2)  # the agent has read the first piece on its own
        try:
            conn.sendall(second)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return json.loads(conn.makefile("rb").readline())


def test_the_cap_holds_when_the_newline_comes_later(served):
    """MAX_MESSAGE bytes, then the newline: one byte too many, however they arrive."""
    assert _in_two_pieces(served, _padded(MAX_MESSAGE - 1), b"\n") == {"ok": True}
    assert _in_two_pieces(served, _padded(MAX_MESSAGE), b"\n") == {
        "ok": False,
        "error": "too_large",
    }


def test_a_message_ended_by_closing_needs_no_newline(served):
    assert served.raw(_padded(MAX_MESSAGE), shut=True) == {"ok": True}
    assert served.store.get(ME) == GOOD
    assert served.raw(_padded(MAX_MESSAGE + 1), shut=True) == {
        "ok": False,
        "error": "too_large",
    }


def test_a_message_in_pieces_is_put_together(served):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(served.path))
        body = _msg()
        conn.sendall(body[:10])
        time.sleep(0.1)
        conn.sendall(body[10:] + b"\n")
        assert json.loads(conn.makefile("rb").readline()) == {"ok": True}


def test_a_silent_helper_is_cut_off(served):
    started = time.monotonic()
    assert served.raw(b'{"v": 1') == {"ok": False, "error": "timeout"}
    assert time.monotonic() - started < 3


def test_a_trickling_helper_is_cut_off_at_the_deadline(served):
    """One byte every 0.1 s never waits out the 0.5 s read timeout; the deadline ends it."""
    answer: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(served.path))
        started = time.monotonic()
        conn.setblocking(False)
        for byte in b" " * 100:
            try:
                answer.append(conn.recv(100))
                break
            except BlockingIOError:
                pass
            conn.send(bytes([byte]))
            time.sleep(0.1)
        took = time.monotonic() - started
    assert answer and json.loads(answer[0]) == {"ok": False, "error": "timeout"}
    assert took < 3


def test_the_connection_past_the_cap_is_told_busy_and_slots_come_back(served):
    for _ in range(MAX_CONNECTIONS):
        assert served.server.slots.acquire(blocking=False)
    try:
        started = time.monotonic()
        assert served.raw(_msg() + b"\n") == {"ok": False, "error": "busy"}
        assert time.monotonic() - started < 3  # at once, not after a slot frees
    finally:
        for _ in range(MAX_CONNECTIONS):
            served.server.slots.release()
    # Every served connection gives its slot back, refused or not.
    for _ in range(MAX_CONNECTIONS + 2):
        assert served.raw(b"nope\n")["error"] == "malformed"
    served.allowed = set()
    for _ in range(MAX_CONNECTIONS + 2):
        assert served.raw(b"\n")["error"] == "uid_not_accepted"
    served.allowed = {ME}
    assert served.raw(_msg() + b"\n") == {"ok": True}


def test_close_removes_the_socket_and_tolerates_it_gone(tmp_path):
    s = Served(tmp_path / "user.sock")
    s.server.close()
    assert not s.path.exists()
    s.thread.join(5)
    assert not s.thread.is_alive()
    again = Served(tmp_path / "user.sock")
    again.path.unlink()
    again.server.close()  # no FileNotFoundError


def test_a_live_socket_too_busy_to_accept_is_not_taken_over(tmp_path):
    """A listener whose backlog is full does not accept the probe in time: it is still a
    running program, and its socket file stays."""
    path = tmp_path / "busy.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    waiting = []
    try:
        for _ in range(64):  # fill the backlog (never accepted)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(str(path))
            except BlockingIOError:
                c.close()
                break
            waiting.append(c)
        else:
            pytest.fail("the backlog never filled")
        outcome: list[BaseException] = []

        def start() -> None:
            try:
                UserSocketServer(path, UserFactsStore(), lambda uid: True).close()
            except OSError as exc:
                outcome.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(10)
        took = time.monotonic() - started
        assert not thread.is_alive(), "the probe waited without a timeout"
        assert [str(e) for e in outcome] == [f"{path} is in use by another agent"]
        assert took < 1.9  # the probe waits one second
        assert stat.S_ISSOCK(path.lstat().st_mode)
    finally:
        for c in waiting:
            c.close()
        listener.close()


def test_a_stale_socket_is_replaced_a_live_one_and_a_file_are_not(tmp_path):
    path = tmp_path / "user.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))  # bound, never listening, then closed: what a crash leaves
    served = Served(path)
    try:
        assert send_report(path, GOOD) is None
        with pytest.raises(OSError, match=r"^.*user\.sock is in use by another agent$"):
            UserSocketServer(path, UserFactsStore(), lambda uid: True)
        assert send_report(path, GOOD) is None  # the first one still serves
    finally:
        served.server.close()
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    with pytest.raises(OSError, match="precious exists and is not a socket; remove it or"):
        UserSocketServer(precious, UserFactsStore(), lambda uid: True)
    assert precious.read_text() == "keep me"


# --- the console users ------------------------------------------------------------------


def _recording(tmp_path: Path, sessions: str) -> Path:
    """The luks2 device, with ``sessions`` (loginctl show-session output) logged in."""
    dest = tmp_path / "device"
    shutil.copytree(FIXTURES / "linux" / "luks2", dest, symlinks=True)
    spec = json.loads((dest / "host.json").read_text())
    blocks = [b for b in sessions.strip().split("\n\n") if b]
    ids = [str(i + 1) for i in range(len(blocks))]
    commands = [c for c in spec["commands"] if c["argv"][0] != "loginctl"]
    commands.append(
        {
            "argv": ["loginctl", "list-sessions", "--no-legend"],
            "returncode": 0,
            "stdout": "".join(f"  {i} 0 x seat0 tty{i}\n" for i in ids),
        }
    )
    commands.append(
        {
            "argv": [
                "loginctl",
                "show-session",
                *ids,
                "-p",
                "Name,Type,Class,Remote,Desktop,State",
            ],
            "returncode": 0,
            "stdout": sessions.strip() + "\n",
        }
    )
    spec["commands"] = commands
    (dest / "host.json").write_text(json.dumps(spec))
    return dest


SESSIONS = """
Name=carol
Type=wayland
Class=user
Remote=no
Desktop=GNOME
State=active

Name=root
Type=x11
Class=user
Remote=no
Desktop=KDE
State=active

Name=nobody
Type=tty
Class=user
Remote=no
Desktop=
State=active
"""


def _counting(device: Path) -> tuple[Callable[[], Host], list[int]]:
    calls: list[int] = []

    def factory() -> Host:
        calls.append(1)
        return Host.from_recording(device)

    return factory, calls


def test_only_graphical_console_users_other_than_root_are_accepted(tmp_path):
    factory, calls = _counting(_recording(tmp_path, SESSIONS))
    accepts = console_uids(factory, ttl=3600)
    assert accepts(1000) is True  # carol, at the seat
    assert accepts(0) is False  # root is never a console user here
    assert accepts(65534) is False  # nobody, on a text console
    assert accepts(1002) is False  # not logged in
    assert len(calls) == 1  # listed once within the ttl


def test_the_list_is_read_again_after_the_ttl(tmp_path):
    factory, calls = _counting(_recording(tmp_path, SESSIONS))
    accepts = console_uids(factory, ttl=-1)  # always stale
    assert accepts(1000) and accepts(1000) and not accepts(0)
    assert len(calls) == 3
    factory, calls = _counting(_recording(tmp_path / "b", SESSIONS))
    # A very long ttl still lists the first time.
    accepts = console_uids(factory, ttl=1e9)
    assert accepts(1000) and accepts(1000) and len(calls) == 1


def test_the_default_ttl_lists_once_then_keeps_the_answer(tmp_path):
    factory, calls = _counting(_recording(tmp_path, SESSIONS))
    accepts = console_uids(factory)
    assert [accepts(1000) for _ in range(3)] == [True] * 3
    assert len(calls) == 1


def test_the_list_is_kept_for_ten_seconds_exactly(tmp_path):
    factory, calls = _counting(_recording(tmp_path, SESSIONS))
    now = [-5.0]  # a clock may start anywhere, even below zero
    accepts = console_uids(factory, clock=lambda: now[0])
    assert accepts(1000) and len(calls) == 1
    now[0] = 5.0  # ten seconds on: still the same list
    assert accepts(1000) and len(calls) == 1
    now[0] = 5.001
    assert accepts(1000) and len(calls) == 2
    now[0] = 15.001
    assert not accepts(0) and len(calls) == 2
    now[0] = 15.002
    assert not accepts(0) and len(calls) == 3


def test_a_failing_listing_accepts_nobody_until_it_works(tmp_path, caplog):
    device = _recording(tmp_path, SESSIONS)
    broken = [True]

    def factory() -> Host:
        if broken[0]:
            raise RuntimeError("logind is gone")
        return Host.from_recording(device)

    accepts = console_uids(factory, ttl=-1)
    assert accepts(1000) is False
    assert _logged(caplog, "cannot list console users: logind is gone", logging.WARNING)
    broken[0] = False
    assert accepts(1000) is True
    broken[0] = True
    assert accepts(1000) is False  # a later failure forgets the earlier list


# --- the helper's side ------------------------------------------------------------------


def test_read_own_screen_lock_has_exactly_the_lock_fields(monkeypatch):
    monkeypatch.setenv("XDG_CURRENT_DESKTOP", "XFCE")  # no known screen locker
    assert read_own_screen_lock() == dict.fromkeys(GOOD)


def test_a_screen_lock_that_cannot_be_read_is_unknown_and_logged(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("XDG_CURRENT_DESKTOP", "GNOME")
    # gsettings (where installed) finds no schema at all
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path))
    monkeypatch.setenv("GSETTINGS_SCHEMA_DIR", str(tmp_path))
    assert read_own_screen_lock() == dict.fromkeys(GOOD)
    [record] = [r for r in caplog.records if r.name == "agent.user_helper"]
    assert record.levelno == logging.WARNING
    [error] = record.args
    assert isinstance(error, CollectorError) and str(error)
    assert record.getMessage() == f"cannot read the screen lock: {error}"


def _in_child(uid: int, env: dict[str, str | None], action: Callable[[], object]) -> object:
    """``action()`` in a forked child running as ``uid`` with ``env`` changed; its result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            out = {"value": action()}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"error": repr(exc)}
        finally:
            os.write(write, json.dumps(out).encode())
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another uid needs root")
@pytest.mark.parametrize(("desktop", "owned"), [("KDE", True), (None, True), ("KDE", False)])
def test_a_user_without_a_passwd_entry_reads_the_kde_file_in_home(monkeypatch, desktop, owned):
    """No passwd entry: $HOME is the home; KDE named, or not named and its file present.
    A file there that another user owns is not the user's setting (it is not read)."""
    monkeypatch.setenv("XDG_CURRENT_DESKTOP", "XFCE")
    assert read_own_screen_lock() == dict.fromkeys(GOOD)  # (this process is credited too)
    uid = 54321
    home = Path(tempfile.mkdtemp(prefix="dt-helper-home-"))
    try:
        home.chmod(0o755)
        config = home / ".config"
        config.mkdir()
        rc = config / "kscreenlockerrc"
        rc.write_text("[Daemon]\nAutolock=true\nTimeout=7\nLockGrace=9\n")
        os.chown(config, uid, uid)
        if owned:
            os.chown(rc, uid, uid)
        got = _in_child(
            uid, {"HOME": str(home), "XDG_CURRENT_DESKTOP": desktop}, read_own_screen_lock
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if not owned:
        assert got["value"]["source"] == "kscreenlockerrc"
        assert got["value"]["timeout_seconds"] != 7 * 60 + 9  # the file was not used
        return
    assert got == {
        "value": {
            "source": "kscreenlockerrc",
            "enabled": True,
            "timeout_seconds": 7 * 60 + 9,
            "idle_seconds": 7 * 60,
            "delay_seconds": 9,
        }
    }


class Answering:
    """A Unix socket that answers each connection with fixed bytes (a stand-in agent)."""

    def __init__(self, path: Path, answer: bytes, *, read_first: bool = True) -> None:
        self.path = path
        self.answer = answer
        self.read_first = read_first
        self.received: list[bytes] = []
        self.release = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            if self.read_first:
                data = b""
                while b"\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                self.received.append(data)
            for piece in self.answer.split(b"|"):
                conn.sendall(piece)
                time.sleep(0.05)
            self.release.wait(10)  # hold the connection open until the test is done

    def close(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def answering(tmp_path) -> Iterator[Callable[..., Answering]]:
    made: list[Answering] = []

    def make(answer: bytes, **kwargs: bool) -> Answering:
        made.append(Answering(tmp_path / f"a{len(made)}.sock", answer, **kwargs))
        return made[-1]

    yield make
    for a in made:
        a.close()


def test_send_report_sends_one_line_and_reads_one(answering):
    agent = answering(b'{"ok": tr|ue}\n{"ok": false}\n')  # in two pieces, then another line
    assert send_report(agent.path, GOOD) is None
    assert agent.received == [json.dumps({"v": 1, "screen_lock": GOOD}).encode() + b"\n"]


def test_send_report_waits_five_seconds_by_default():
    assert inspect.signature(send_report).parameters["timeout"].default == SEND_TIMEOUT == 5.0


def _json_of(length: int, ok: bool = True) -> bytes:
    raw = json.dumps({"ok": ok}).encode()
    return raw[:-1] + b" " * (length - len(raw)) + b"}"


def test_send_report_reads_an_answer_of_up_to_1024_bytes(answering):
    # 1024 bytes and no newline yet: that is all it reads, and it is the answer.
    agent = answering(_json_of(1024) + b"x")
    assert send_report(agent.path, GOOD, timeout=5) is None
    # An answer line of 1024 bytes that arrives in two pieces is read whole.
    agent = answering(_json_of(1024)[:1000] + b"|" + _json_of(1024)[1000:] + b"\n")
    assert send_report(agent.path, GOOD, timeout=5) is None
    # One of 1025 bytes is not an answer.
    agent = answering(_json_of(1025)[:1000] + b"|" + _json_of(1025)[1000:] + b"\n")
    with pytest.raises(HelperRefused) as err:
        send_report(agent.path, GOOD, timeout=5)
    assert err.value.code == "no_answer"


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (
            b'{"ok": false, "error": "uid_not_accepted"}\n',
            "uid_not_accepted",
            "the agent only hears users logged in at this device's screen",
        ),
        (
            b'{"ok": false, "error": "busy"}\n',
            "busy",
            "see the agent's log: journalctl -u devicetrust-agent",
        ),
        (
            b'{"ok": false, "error": "' + b"e" * 60 + b'"}\n',
            "e" * 40,
            "see the agent's log: journalctl -u devicetrust-agent",
        ),
        (b'{"ok": 1}\n', "None", "see the agent's log: journalctl -u devicetrust-agent"),
        (b'{"ok": "true"}\n', "None", "see the agent's log: journalctl -u devicetrust-agent"),
        (b"", "no_answer", "the agent closed the connection without answering"),
        (b"[true]\n", "no_answer", "the agent closed the connection without answering"),
        (b"ok\n", "no_answer", "the agent closed the connection without answering"),
    ],
)
def test_send_report_turns_a_refusal_into_its_code(answering, answer, code, message):
    agent = answering(answer)
    if not answer:
        agent.release.set()  # close at once, without a word
    with pytest.raises(HelperRefused) as err:
        send_report(agent.path, GOOD, timeout=5)
    assert (err.value.code, err.value.message) == (code, message)


def test_send_report_reads_at_most_1024_bytes_of_answer(answering):
    agent = answering(b"x" * 1024)  # no newline, and the connection stays open
    started = time.monotonic()
    with pytest.raises(HelperRefused) as err:
        send_report(agent.path, GOOD, timeout=5)
    assert err.value.code == "no_answer"
    assert time.monotonic() - started < 3  # it did not wait for more


def test_send_report_gives_up_after_its_timeout(answering):
    agent = answering(b"", read_first=True)  # reads, never answers, holds the connection
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            send_report(agent.path, GOOD, timeout=0.3)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "send_report did not time out"
    assert isinstance(outcome[0], TimeoutError)


def test_send_report_reads_the_answer_of_an_agent_that_did_not_read(answering):
    """Refused before it read the message: the big write fails, the answer is still read."""
    agent = answering(b'{"ok": false, "error": "uid_not_accepted"}\n', read_first=False)
    agent.release.set()  # answer, then close without reading
    big = {**GOOD, "source": "x" * (4 * 1024 * 1024)}
    with pytest.raises(HelperRefused) as err:
        send_report(agent.path, big, timeout=5)
    assert err.value.code == "uid_not_accepted"
