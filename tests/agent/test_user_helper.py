"""The per-user helper's socket (agent/user_helper.py): a real ``devicetrust-agent run``
listens, and clients under other uids (forked from the test and dropped to that uid
with os.setuid, as root) are heard or refused by what the kernel says they are.

The agent replays the recorded ``luks2`` device, whose console users are carol
(uid 1000, GNOME at the seat) and dave (uid 1002, GNOME over the network)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.collectors.linux import collect_screen_lock
from agent.user_helper import (
    MAX_MESSAGE,
    HelperRefused,
    UserFactsStore,
    parse_report,
    send_report,
)
from tests.posture_helpers import FIXTURES, recorded_host
from tests.procs import make_agent

GOOD = {
    "source": "gsettings",
    "enabled": True,
    "timeout_seconds": 300,
    "idle_seconds": 300,
    "delay_seconds": 0,
}


def _as_uid(uid: int, action) -> dict:
    """Run ``action()`` in a forked child that has dropped to ``uid``; its outcome."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so nothing new has to be importable as uid
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                out = {"ok": True, "value": action()}
            except HelperRefused as exc:
                out = {"ok": False, "code": exc.code}
            except OSError as exc:
                out = {"ok": False, "oserror": exc.errno}
            os.write(write, json.dumps({"uid": os.getuid(), **out}).encode())
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def agent_with_socket(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("running clients under other uids needs root")
    # A socket other uids can reach (pytest's tmp_path is 0700).
    shared = Path(tempfile.mkdtemp(prefix="dt-user-sock-"))
    shared.chmod(0o755)
    sock = shared / "run" / "user.sock"
    device = tmp_path / "device"
    shutil.copytree(FIXTURES / "linux" / "luks2", device, symlinks=True)
    agent = make_agent(tmp_path, "helper")
    agent.start("--replay", str(device), "--user-socket", str(sock), "--no-approvals")
    yield agent, sock
    agent.stop()
    shutil.rmtree(shared, ignore_errors=True)


def _raw(sock: Path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(sock))
        conn.sendall(payload)
        return json.loads(conn.makefile("rb").readline())


def test_the_console_user_is_heard_and_other_uids_are_refused(agent_with_socket):
    agent, sock = agent_with_socket
    assert (sock.stat().st_mode & 0o777) == 0o666
    carol = _as_uid(1000, lambda: send_report(sock, GOOD))
    assert carol == {"uid": 1000, "ok": True, "value": None}
    # dave is logged in, but over the network: not a console user.
    assert _as_uid(1002, lambda: send_report(sock, GOOD)) == {
        "uid": 1002,
        "ok": False,
        "code": "uid_not_accepted",
    }
    # Nobody logged in as 1001; root is no console user either.
    assert _as_uid(1001, lambda: send_report(sock, GOOD))["code"] == "uid_not_accepted"
    with pytest.raises(HelperRefused) as refused:
        send_report(sock, GOOD)
    assert refused.value.code == "uid_not_accepted"
    log = agent.log()
    assert "uid 1000 received" in log
    assert "uid 1002 is not a graphical console user" in log
    assert "uid 0 is not a graphical console user" in log


def test_a_bad_message_from_the_console_user_is_refused(agent_with_socket):
    agent, sock = agent_with_socket

    def send(payload: bytes):
        return lambda: _raw(sock, payload)

    cases = {
        b"not json\n": "malformed",
        b'{"v": 2, "screen_lock": {}}\n': "unsupported_version",
        json.dumps({"v": 1, "screen_lock": {**GOOD, "user": "root"}}).encode() + b"\n": (
            "malformed"
        ),
        json.dumps({"v": 1, "screen_lock": {**GOOD, "timeout_seconds": -5}}).encode() + b"\n": (
            "invalid_field"
        ),
        b"{" + b" " * (MAX_MESSAGE + 10) + b"}\n": "too_large",
    }
    for payload, code in cases.items():
        assert _as_uid(1000, send(payload))["value"] == {"ok": False, "error": code}
    # A helper that never finishes its line is cut off.
    silent = _as_uid(1000, send(b'{"v": 1'))
    assert silent["value"] == {"ok": False, "error": "timeout"}
    assert agent.proc.poll() is None  # and the agent is still serving


def test_the_socket_path_is_not_taken_from_a_running_agent(agent_with_socket, tmp_path):
    agent, sock = agent_with_socket
    second = make_agent(tmp_path, "second")
    refused = second.cli("run", "--user-socket", str(sock), "--no-approvals", check=False)
    assert refused.returncode == 1
    assert "in use by another agent" in refused.stderr
    assert _as_uid(1000, lambda: send_report(sock, GOOD))["ok"] is True


def test_a_stale_socket_is_replaced_and_a_file_is_never_removed(tmp_path):
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # bound, never listening, then closed: what a crash leaves
    agent = make_agent(tmp_path, "stale")
    agent.start("--user-socket", str(stale), "--no-approvals", "--no-reports")
    try:
        with pytest.raises(HelperRefused):  # it answers now (root is refused)
            send_report(stale, GOOD)
    finally:
        agent.stop()
    assert not stale.exists()  # removed on a clean stop
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    other = make_agent(tmp_path, "file")
    refused = other.cli("run", "--user-socket", str(precious), "--no-approvals", check=False)
    assert refused.returncode == 1 and "is not a socket" in refused.stderr
    assert precious.read_text() == "keep me"


def test_a_fresh_helper_report_is_the_users_screen_lock(tmp_path):
    host = recorded_host("linux/luks2", tmp_path)
    recorded = collect_screen_lock(host)
    carol = next(u for u in recorded["users"] if u["user"] == "carol")
    assert carol["timeout_seconds"] == 900  # the recording: read with runuser as root
    now = [0.0]
    store = UserFactsStore(clock=lambda: now[0])
    store.put(1000, {**GOOD, "timeout_seconds": 120, "idle_seconds": 120})
    store.put(1002, {**GOOD, "enabled": False})  # not at the seat: never consulted
    host = recorded_host("linux/luks2", tmp_path / "again")
    host.user_reports = store.get
    lock = collect_screen_lock(host)
    assert [u["user"] for u in lock["users"]] == ["carol"]
    assert lock["users"][0] == {
        "user": "carol",
        **GOOD,
        "timeout_seconds": 120,
        "idle_seconds": 120,
    }
    assert lock["max_timeout_seconds"] == 120
    now[0] = 15 * 60 + 1  # too old: read as before
    host = recorded_host("linux/luks2", tmp_path / "stale")
    host.user_reports = store.get
    assert collect_screen_lock(host)["max_timeout_seconds"] == 900


def test_parse_report_accepts_exactly_the_documented_shape():
    raw = json.dumps({"v": 1, "screen_lock": GOOD}).encode()
    assert parse_report(raw) == GOOD
    unknown = {k: None for k in GOOD}
    assert parse_report(json.dumps({"v": 1, "screen_lock": unknown}).encode()) == unknown
    for bad in (
        {"v": True, "screen_lock": GOOD},
        {"v": 1, "screen_lock": {**GOOD, "enabled": 1}},
        {"v": 1, "screen_lock": {**GOOD, "source": "regedit"}},
        {"v": 1, "screen_lock": {**GOOD, "idle_seconds": 1.5}},
        {"v": 1, "screen_lock": {**GOOD, "idle_seconds": True}},
        {"v": 1, "screen_lock": GOOD, "uid": 0},
        {"v": 1},
    ):
        with pytest.raises(HelperRefused):
            parse_report(json.dumps(bad).encode())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=16), inner),
    max_leaves=12,
)


@given(
    st.one_of(
        st.binary(max_size=200),
        st.fixed_dictionaries(
            {"v": st.just(1), "screen_lock": st.dictionaries(st.sampled_from(list(GOOD)), _json)}
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_parse_report_refuses_or_returns_a_clean_entry(raw):
    try:
        entry = parse_report(raw)
    except HelperRefused as exc:
        assert exc.code in {"malformed", "unsupported_version", "invalid_field"}
        return
    assert set(entry) == set(GOOD)
    assert entry["source"] in (None, "gsettings", "kscreenlockerrc")
    assert entry["enabled"] in (None, True, False)
    for key in ("timeout_seconds", "idle_seconds", "delay_seconds"):
        value = entry[key]
        assert value is None or (type(value) is int and 0 <= value <= 366 * 86400)


def test_connections_beyond_the_cap_are_turned_away_at_once(agent_with_socket):
    _agent, sock = agent_with_socket
    from agent.user_helper import MAX_CONNECTIONS

    def flood() -> list[str]:
        conns = []
        for _ in range(MAX_CONNECTIONS + 1):  # none of them says anything
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(10)
            conn.connect(str(sock))
            conns.append(conn)
        answers = []
        for conn in conns:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
            answers.append(json.loads(data)["error"])
            conn.close()
        return answers

    # The console user's silent connections hold their slots until they time out;
    # the one past the cap is told "busy" without waiting.
    answers = _as_uid(1000, flood)["value"]
    assert sorted(answers) == ["busy"] + ["timeout"] * MAX_CONNECTIONS
    assert _as_uid(1000, lambda: send_report(sock, GOOD))["ok"] is True  # slots come back
