"""Trusted-device approval codes (idp_service/devices/approve.py) in process, on SQLite.

What each call does to the request, its sealed notices and the audit log: the codes
(their shape, their MAC, who gets one and what the sealed notice says, opened with the
trusted device's own keys), the signed poll that fetches them and each of its refusals,
and every outcome of a typed code: wrong, right, expired, exhausted, closed, each bound
at the value allowed and one beyond, and the reissue of an expired code.

Written for the mutation run over that module: the end-to-end tests
(tests/devices/test_approve_e2e.py, test_approve_hostile.py) reach it inside the service,
where a mutation run cannot credit them. PostgreSQL runs the same calls there and in
tests/devices/test_approve_voucher.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import threading
import time
import uuid

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from sqlalchemy import create_engine, delete, func, select, text, update
from sqlalchemy.pool import NullPool

from idp_service.devices import approve, registry
from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.devices.codes import CODE_ALPHABET
from idp_service.platform.errors import Conflict, Forbidden, Invalid
from idp_service.platform.keys import load_secret
from idp_service.platform.models import AuditEvent, Device, User, utcnow
from tests.admin_helpers import make_device, make_user
from trust_protocol import encoding
from trust_protocol.encoding import b64d
from trust_protocol.errors import ProtocolError
from trust_protocol.notice import open_notice
from trust_protocol.poll import sign_poll

CODE = re.compile(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}")
IP = "203.0.113.9"


class Clock:
    """``Services.clock``, moved by the test (near the wall clock: notices carry real times)."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def svc(sqlite_service_ctx):
    service = sqlite_service_ctx.extensions["devicetrust"]
    service.clock = Clock()
    return service


@pytest.fixture
def pg_svc(postgres_service_ctx):
    service = postgres_service_ctx.extensions["devicetrust"]
    service.clock = Clock()
    return service


def _keyed_device(s, owner, state, hostname=""):
    sign, box = SigningKey.generate(), PrivateKey.generate()
    device = make_device(s, owner, state=state, hostname=hostname)
    device.sign_key, device.box_key = bytes(sign.verify_key), bytes(box.public_key)
    s.flush()
    return device.id, sign, box


def _make_world(svc):
    with svc.db.session() as s:
        dana, erin = make_user(s, "dana@example.com"), make_user(s, "erin@example.com")
        out = {"user": dana.id}
        for key, owner, state in (
            ("a", dana, "trusted"),
            ("b", dana, "trusted"),
            ("r", dana, "revoked"),
            ("n", dana, "pending"),
            ("e", erin, "trusted"),
        ):
            out[key], out[key + "_sign"], out[key + "_box"] = _keyed_device(
                s, owner, state, hostname=f"{key}-host"
            )
    return out


@pytest.fixture
def world(svc):
    """dana: trusted devices A and B, a revoked R, a pending N; erin: a trusted E."""
    return _make_world(svc)


def _open(svc, world) -> ApprovalRequest:
    with svc.db.session() as s:
        req = approve.open_request(svc, s, s.get(Device, world["n"]))
        s.expunge(req)
    return req


def _req(svc, req_id) -> ApprovalRequest:
    with svc.db.session() as s:
        req = s.get(ApprovalRequest, req_id)
        s.expunge(req)
    return req


def _notices(svc, req_id) -> dict[str, bytes]:
    with svc.db.session() as s:
        rows = s.execute(
            select(ApprovalNotice.device_id, ApprovalNotice.sealed).where(
                ApprovalNotice.request_id == req_id
            )
        ).all()
    return {device: bytes(sealed) for device, sealed in rows}


def _read(svc, world, device_key, sealed):
    return open_notice(
        sealed,
        world[device_key + "_box"],
        svc.keys.verify_key,
        world[device_key],
        now=time.time(),
    )


def _code(svc, world, req_id, device_key="a") -> str:
    return _read(svc, world, device_key, _notices(svc, req_id)[world[device_key]]).code


def _wrong(code: str) -> str:
    return "ABCD-EFGH" if code != "ABCD-EFGH" else "HGFE-DCBA"


def _events(svc, action):
    with svc.db.session() as s:
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        )
        return [
            (e.outcome, e.code, e.actor, e.user_id, e.device_id, e.remote_addr, e.details)
            for e in rows
        ]


def _count(svc, table) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(table))


# -- codes --------------------------------------------------------------------------------


def test_new_codes_are_8_symbols_of_the_alphabet_in_two_groups():
    codes = [approve.new_code() for _ in range(300)]
    assert all(CODE.fullmatch(c) for c in codes), codes[:5]
    assert len(set(codes)) == len(codes)
    assert set("".join(codes).replace("-", "")) == set(CODE_ALPHABET)  # every symbol drawn


def test_code_mac_is_the_hmac_of_the_normalized_code():
    key = b"k" * 32
    want = hmac.new(key, b"ABCDEFGH", hashlib.sha256).hexdigest()
    for typed in ("ABCD-EFGH", "abcd-efgh", " abCD efGH ", "ABCDEFGH"):
        assert approve.code_mac(key, typed) == want
    assert approve.code_mac(b"j" * 32, "ABCD-EFGH") != want


def test_load_key_reads_the_server_secret_once(svc):
    svc.approval_code_key = None
    key = approve.load_key(svc)
    assert key == load_secret(svc.db, "approval.code_key") and len(key) == 32
    assert svc.approval_code_key == key
    svc.approval_code_key = b"cached" * 6
    assert approve.load_key(svc) == b"cached" * 6


def test_the_new_device_is_described_in_printable_short_fields():
    seen = dt.datetime(2026, 12, 1, 8, 30, 15, 900000, tzinfo=dt.UTC)
    device = Device(
        hostname="a\x00b\nc" + "x" * 300, platform="", serial="\x07\x08", first_seen=seen
    )
    assert approve._device_json(device) == {
        "hostname": "abc" + "x" * 253,
        "platform": None,
        "serial": None,
        "first_seen": int(seen.timestamp()),
    }
    device = Device(hostname=None, platform="linux", serial="SN 1", first_seen=seen)
    assert approve._device_json(device)["hostname"] is None
    assert approve._device_json(device)["serial"] == "SN 1"


# -- opening a request ----------------------------------------------------------------------


def test_open_request_seals_a_code_to_each_other_trusted_device_of_the_user(svc, world):
    before = int(time.time())
    req = _open(svc, world)
    after = int(time.time())
    assert (req.device_id, req.user_id, req.status) == (world["n"], world["user"], "open")
    assert (req.code_seq, req.attempts, req.max_attempts) == (1, 0, 5)
    assert req.expires_at == svc.clock.now + dt.timedelta(seconds=600)
    sealed = _notices(svc, req.id)
    assert set(sealed) == {world["a"], world["b"]}  # not R (revoked), N itself, nor erin's E
    key = approve.load_key(svc)
    with svc.db.session() as s:
        macs = dict(
            s.execute(
                select(ApprovalNotice.device_id, ApprovalNotice.code_mac).where(
                    ApprovalNotice.request_id == req.id
                )
            ).all()
        )
    codes = set()
    for who in ("a", "b"):
        notice = _read(svc, world, who, sealed[world[who]])
        assert (notice.kind, notice.kid, notice.id, notice.to) == (
            "approval",
            svc.keys.kid,
            req.id,
            world[who],
        )
        assert before <= notice.issued_at <= after
        assert notice.expires_at == int(req.expires_at.timestamp())
        assert notice.device["hostname"] == "n-host" and notice.device["platform"] == "linux"
        assert CODE.fullmatch(notice.code)
        assert macs[world[who]] == approve.code_mac(key, notice.code)
        codes.add(notice.code)
    assert len(codes) == 2  # each device its own code
    assert _events(svc, "approval.issue") == [
        (
            "ok",
            None,
            None,
            world["user"],
            world["n"],
            None,
            {
                "request_id": req.id,
                "recipients": 2,
                "expires_at": req.expires_at.isoformat(),
                "max_attempts": 5,
            },
        )
    ]


def test_the_attempts_come_from_the_settings(svc, world):
    svc.settings = dataclasses.replace(svc.settings, approval_attempts=2, approval_code_ttl=60)
    req = _open(svc, world)
    assert req.max_attempts == 2
    assert req.expires_at == svc.clock.now + dt.timedelta(seconds=60)


def test_a_code_sealed_when_the_request_already_expired_lives_one_second(svc, world):
    svc.clock.now -= dt.timedelta(hours=1)  # the request expired before it was sealed
    req = _open(svc, world)
    notice = _read(svc, world, "a", _notices(svc, req.id)[world["a"]])
    assert notice.expires_at == notice.issued_at + 1


def test_a_device_never_vouches_for_itself(svc, world):
    # open_request is called for a new, pending device; given a trusted one, that device
    # still gets no code of its own request.
    with svc.db.session() as s:
        req = approve.open_request(svc, s, s.get(Device, world["a"]))
        req_id = req.id
    assert set(_notices(svc, req_id)) == {world["b"]}


def test_open_for_device(svc, world):
    with svc.db.session() as s:
        assert approve.open_for_device(s, world["n"]) is None
    req = _open(svc, world)
    with svc.db.session() as s:
        assert approve.open_for_device(s, world["n"]).id == req.id
        assert approve.open_for_device(s, world["a"]) is None


def test_latest_requests_gives_each_device_its_newest(svc, world):
    with svc.db.session() as s:
        assert approve.latest_requests(s, []) == {}
        other = make_device(s, s.get(User, world["user"]), state="pending").id
        base = svc.clock.now
        for rid, device, created in (
            ("r-old", world["n"], base),
            ("r-new", world["n"], base + dt.timedelta(seconds=1)),
            ("r-other", other, base),
        ):
            s.add(
                ApprovalRequest(
                    id=rid,
                    device_id=device,
                    user_id=world["user"],
                    status="closed",
                    max_attempts=5,
                    expires_at=base,
                    created_at=created,
                )
            )
        # Two requests of the same instant: the greater id is the later one.
        for rid in ("t-2", "t-1"):
            s.add(
                ApprovalRequest(
                    id=rid,
                    device_id=world["r"],
                    user_id=world["user"],
                    status="closed",
                    max_attempts=5,
                    expires_at=base,
                    created_at=base,
                )
            )
    with svc.db.session() as s:
        assert approve.latest_requests(s, [world["r"]])[world["r"]].id == "t-2"
        got = approve.latest_requests(s, [world["n"], other, world["a"]])
        assert {k: v.id for k, v in got.items()} == {world["n"]: "r-new", other: "r-other"}
        assert {k: v.id for k, v in approve.latest_requests(s, [other]).items()} == {
            other: "r-other"
        }


def _request(status="open", expires_at=None, closed_at=None) -> ApprovalRequest:
    return ApprovalRequest(
        id="req-1",
        status=status,
        attempts=2,
        max_attempts=5,
        created_at=dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC),
        expires_at=expires_at or dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC),
        closed_at=closed_at,
    )


def test_request_view_calls_an_open_request_past_its_code_expired():
    at = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
    second = dt.timedelta(seconds=1)
    req = _request(expires_at=at)
    assert approve.request_view(req, at - second)["status"] == "open"
    assert approve.request_view(req, at)["status"] == "expired"
    assert approve.request_view(req, at + second)["status"] == "expired"
    assert approve.request_view(_request("approved", at), at + second)["status"] == "approved"
    assert approve.request_view(_request("exhausted", at), at - second)["status"] == "exhausted"
    # Without ``now``: the wall clock.
    assert (
        approve.request_view(_request(expires_at=utcnow() + dt.timedelta(hours=1)))["status"]
        == "open"
    )
    assert approve.request_view(_request(expires_at=utcnow() - second))["status"] == "expired"
    assert approve.request_view(req, at - second) == {
        "id": "req-1",
        "status": "open",
        "attempts": 2,
        "max_attempts": 5,
        "created_at": req.created_at,
        "expires_at": at,
        "closed_at": None,
    }


def test_request_json_writes_the_times_in_iso_8601():
    closed = dt.datetime(2026, 12, 6, 8, 30, tzinfo=dt.UTC)
    req = _request("closed", closed_at=closed)
    assert approve.request_json(req) == {
        "id": "req-1",
        "status": "closed",
        "attempts": 2,
        "max_attempts": 5,
        "created_at": "2026-12-06T08:00:00+00:00",
        "expires_at": "2026-12-06T09:00:00+00:00",
        "closed_at": "2026-12-06T08:30:00+00:00",
    }
    assert approve.request_json(_request())["closed_at"] is None
    # ``now`` is the one request_view judges by (the wall clock is past 2026-12-06 09:00).
    before = dt.datetime(2026, 12, 6, 8, 59, tzinfo=dt.UTC)
    assert approve.request_json(_request(), before)["status"] == "open"
    assert approve.request_json(_request())["status"] == "expired"


# -- the trusted device's poll -----------------------------------------------------------------


def _poll(world, device_key, *, sign=None, at=None, device_id=None) -> bytes:
    body = sign_poll(
        device_id or world[device_key],
        sign or world[device_key + "_sign"],
        int(time.time()) if at is None else at,
    )
    return encoding.dumps(body)


def test_a_trusted_device_fetches_its_own_notices_of_open_requests(svc, world):
    req = _open(svc, world)
    sealed = _notices(svc, req.id)
    got = approve.notices_for(svc, _poll(world, "a"), remote_addr=IP)
    assert [b64d(x) for x in got] == [sealed[world["a"]]]
    assert [b64d(x) for x in approve.notices_for(svc, _poll(world, "b"), remote_addr=IP)] == [
        sealed[world["b"]]
    ]
    assert approve.notices_for(svc, _poll(world, "e"), remote_addr=IP) == []
    assert _events(svc, "approval.poll") == []  # only refusals are audited


def test_notices_come_in_the_order_they_were_sealed(svc, world):
    first = _open(svc, world)
    with svc.db.session() as s:
        second_device = make_device(s, s.get(User, world["user"]), state="pending")
        second = approve.open_request(svc, s, second_device)
        second_id = second.id
    with svc.db.session() as s:
        ids = dict(
            s.execute(
                select(ApprovalNotice.request_id, ApprovalNotice.id).where(
                    ApprovalNotice.device_id == world["a"]
                )
            ).all()
        )
    assert ids[first.id] < ids[second_id]
    got = [b64d(x) for x in approve.notices_for(svc, _poll(world, "a"), remote_addr=IP)]
    assert got == [_notices(svc, first.id)[world["a"]], _notices(svc, second_id)[world["a"]]]


def test_notices_of_closed_or_expired_requests_are_not_sent(svc, world):
    req = _open(svc, world)
    svc.clock.now = req.expires_at - dt.timedelta(seconds=1)
    assert len(approve.notices_for(svc, _poll(world, "a"), remote_addr=IP)) == 1
    svc.clock.now = req.expires_at  # the code's last instant is past
    assert approve.notices_for(svc, _poll(world, "a"), remote_addr=IP) == []
    svc.clock.now = req.expires_at - dt.timedelta(seconds=1)
    with svc.db.session() as s:
        s.execute(update(ApprovalRequest).values(status="closed"))
    assert approve.notices_for(svc, _poll(world, "a"), remote_addr=IP) == []


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("not a poll", "malformed"),
        ("unknown device", "device_unknown"),
        ("another key", "bad_poll_signature"),
        ("too old", "poll_expired"),
        ("too new", "poll_expired"),
    ],
)
def test_bad_polls_are_refused_and_audited(svc, world, case, code):
    _open(svc, world)
    now, skew = int(time.time()), svc.settings.approval_poll_skew
    body = {
        "not a poll": b'{"poll": "", "signature": ""}',
        "unknown device": _poll(world, "a", device_id=str(uuid.uuid4())),
        "another key": _poll(world, "a", sign=world["b_sign"]),
        "too old": _poll(world, "a", at=now - skew - 60),
        "too new": _poll(world, "a", at=now + skew + 60),
    }[case]
    with pytest.raises(ProtocolError) as err:
        approve.notices_for(svc, body, remote_addr=IP)
    assert err.value.code == code
    assert _events(svc, "approval.poll") == [("rejected", code, None, None, None, IP, None)]


def test_a_poll_within_the_skew_is_accepted(svc, world):
    _open(svc, world)
    now, skew = int(time.time()), svc.settings.approval_poll_skew
    for at in (now - skew + 60, now + skew - 60):
        assert len(approve.notices_for(svc, _poll(world, "a", at=at), remote_addr=None)) == 1


@pytest.mark.parametrize("device_key", ["n", "r"])
def test_a_device_that_is_not_trusted_gets_no_notices(svc, world, device_key):
    _open(svc, world)
    with pytest.raises(Forbidden) as err:
        approve.notices_for(svc, _poll(world, device_key), remote_addr=IP)
    assert err.value.code == "device_not_trusted"
    assert err.value.message == "Only trusted devices receive approval notices."
    assert _events(svc, "approval.poll") == [
        ("rejected", "device_not_trusted", None, None, None, IP, None)
    ]


# -- the typed code -------------------------------------------------------------------------


@pytest.mark.parametrize("typed", [None, 12345678, b"ABCD-EFGH", "", "A" * 65])
def test_a_missing_or_oversized_code_is_refused_before_anything(svc, world, typed):
    req = _open(svc, world)
    events = _count(svc, AuditEvent)
    with pytest.raises(Invalid) as err:
        approve.submit(svc, world["n"], typed)
    assert (err.value.code, err.value.message) == (
        "code_required",
        "Enter the code shown on your other device.",
    )
    assert _req(svc, req.id).attempts == 0 and _count(svc, AuditEvent) == events


def test_a_code_of_one_and_of_64_characters_is_an_attempt(svc, world):
    req = _open(svc, world)
    assert approve.submit(svc, world["n"], "A") == approve.Outcome("wrong", 4)
    assert approve.submit(svc, world["n"], "A" * 64) == approve.Outcome("wrong", 3)
    assert _req(svc, req.id).attempts == 2


def test_no_open_request_is_a_conflict(svc, world):
    with pytest.raises(Conflict) as err:
        approve.submit(svc, world["n"], "ABCD-EFGH")
    assert (err.value.code, err.value.message, err.value.hint) == (
        "approval_closed",
        "This device has no open approval request.",
        "Check again, or ask IT to approve this device.",
    )
    with pytest.raises(Conflict) as err:
        approve.reissue(svc, world["n"])
    assert err.value.code == "approval_closed"


def test_the_right_code_trusts_the_device_in_any_spelling(svc, world):
    req = _open(svc, world)
    code = _code(svc, world, req.id, "b")
    outcome = approve.submit(svc, world["n"], code.lower().replace("-", " "), remote_addr=IP)
    assert outcome == approve.Outcome("approved", 4)
    with svc.db.session() as s:
        assert s.get(Device, world["n"]).state == "trusted"
    assert _req(svc, req.id).status == "approved"
    ((outcome_, _, actor, _, device, addr, details),) = _events(svc, "device.approve")
    assert (outcome_, actor, device, addr) == ("ok", f"trusted-device:{world['b']}", world["n"], IP)
    assert details["method"] == "trusted_device_code"
    assert (details["request_id"], details["attempts"]) == (req.id, 1)
    assert _notices(svc, req.id) == {}
    with svc.db.session() as s:
        reason = s.get(Device, world["n"]).state_reason
    assert reason == f"approved with a code from trusted device {world['b']}"
    assert _req(svc, req.id).close_reason == "trusted device code"


def test_approving_a_request_whose_device_is_gone_is_refused(svc, world):
    # An open request's device exists (the row cascades on delete, and submit holds the
    # request's row lock); _approve still refuses rather than approve nothing.
    req = ApprovalRequest(id="r-gone", device_id=str(uuid.uuid4()), attempts=1, max_attempts=5)
    with svc.db.session() as s, pytest.raises(Conflict) as err:
        approve._approve(s, req, world["a"], {"remote_addr": None})
    assert (err.value.code, err.value.message) == (
        "approval_closed",
        "This device is no longer waiting for approval.",
    )


def test_each_trusted_device_s_code_approves(svc, world):
    req = _open(svc, world)
    code = _code(svc, world, req.id, "a")
    assert approve.submit(svc, world["n"], code).result == "approved"
    assert _events(svc, "device.approve")[0][2] == f"trusted-device:{world['a']}"


def test_a_wrong_code_burns_an_attempt_and_replaces_every_code(svc, world):
    req = _open(svc, world)
    old = {k: _code(svc, world, req.id, k) for k in ("a", "b")}
    svc.clock.now += dt.timedelta(seconds=30)
    outcome = approve.submit(svc, world["n"], _wrong(old["a"]), remote_addr=IP)
    assert outcome == approve.Outcome("wrong", 4)
    after = _req(svc, req.id)
    assert (after.status, after.attempts, after.code_seq) == ("open", 1, 2)
    assert after.expires_at == svc.clock.now + dt.timedelta(seconds=600)
    new = {k: _code(svc, world, req.id, k) for k in ("a", "b")}
    assert set(_notices(svc, req.id)) == {world["a"], world["b"]}
    assert new["a"] != old["a"] and new["b"] != old["b"]
    assert _events(svc, "approval.code") == [
        (
            "rejected",
            "approval_code_wrong",
            None,
            world["user"],
            world["n"],
            IP,
            {"request_id": req.id, "attempts_left": 4, "recipients": 2},
        )
    ]
    # The replaced code is wrong now; the new one approves.
    assert approve.submit(svc, world["n"], old["b"]) == approve.Outcome("wrong", 3)
    code = _code(svc, world, req.id, "b")
    assert approve.submit(svc, world["n"], code) == approve.Outcome("approved", 2)


def test_a_wrong_code_burns_an_attempt_of_this_request_only(svc, world):
    req = _open(svc, world)
    with svc.db.session() as s:
        other = approve.open_request(
            svc, s, make_device(s, s.get(User, world["user"]), state="pending")
        )
        other_id, other_device = other.id, other.device_id
    assert approve.submit(svc, world["n"], "XXXX-XXXX") == approve.Outcome("wrong", 4)
    assert _req(svc, req.id).attempts == 1
    assert (_req(svc, other_id).attempts, _req(svc, other_id).code_seq) == (0, 1)
    assert approve.submit(svc, other_device, "XXXX-XXXX") == approve.Outcome("wrong", 4)
    assert _req(svc, req.id).attempts == 1


def test_the_last_attempt_closes_the_request(svc, world):
    req = _open(svc, world)
    for left in (4, 3, 2, 1):
        assert approve.submit(svc, world["n"], "XXXX-XXXX") == approve.Outcome("wrong", left)
    code = _code(svc, world, req.id, "a")
    assert approve.submit(svc, world["n"], _wrong(code), remote_addr=IP) == approve.Outcome(
        "exhausted", 0
    )
    after = _req(svc, req.id)
    assert (after.status, after.attempts, after.close_reason) == (
        "exhausted",
        5,
        "too many wrong codes",
    )
    assert _notices(svc, req.id) == {}
    assert _events(svc, "approval.code")[-1] == (
        "rejected",
        "approval_exhausted",
        None,
        world["user"],
        world["n"],
        IP,
        {"request_id": req.id, "attempts": 5},
    )
    with svc.db.session() as s:
        assert s.get(Device, world["n"]).state == "pending"
    with pytest.raises(Conflict) as err:
        approve.submit(svc, world["n"], code)
    assert err.value.code == "approval_closed"


def test_the_last_attempt_can_be_the_right_code(svc, world):
    svc.settings = dataclasses.replace(svc.settings, approval_attempts=1)
    req = _open(svc, world)
    code = _code(svc, world, req.id, "a")
    assert approve.submit(svc, world["n"], code) == approve.Outcome("approved", 0)


def test_an_open_request_with_no_attempt_left_takes_no_more(svc, world):
    req = _open(svc, world)
    code = _code(svc, world, req.id, "a")
    with svc.db.session() as s:
        s.execute(update(ApprovalRequest).values(attempts=5))
    with pytest.raises(Conflict) as err:
        approve.submit(svc, world["n"], code)
    assert (err.value.code, err.value.message) == (
        "approval_closed",
        "This approval request is closed.",
    )
    after = _req(svc, req.id)
    assert (after.attempts, after.status) == (5, "open")
    with svc.db.session() as s:
        s.execute(update(ApprovalRequest).values(attempts=4))
    assert approve.submit(svc, world["n"], code) == approve.Outcome("approved", 0)


def test_an_expired_code_is_refused_without_an_attempt(svc, world):
    req = _open(svc, world)
    code = _code(svc, world, req.id, "a")
    svc.clock.now = req.expires_at
    assert approve.submit(svc, world["n"], code, remote_addr=IP) == approve.Outcome("expired", 5)
    assert _req(svc, req.id).attempts == 0
    assert _events(svc, "approval.code") == [
        (
            "rejected",
            "approval_expired",
            None,
            world["user"],
            world["n"],
            IP,
            {"request_id": req.id},
        )
    ]
    svc.clock.now = req.expires_at - dt.timedelta(seconds=1)  # its last second
    assert approve.submit(svc, world["n"], code) == approve.Outcome("approved", 4)


def test_the_expired_outcome_counts_the_attempts_left(svc, world):
    req = _open(svc, world)
    approve.submit(svc, world["n"], "XXXX-XXXX")
    svc.clock.now = _req(svc, req.id).expires_at + dt.timedelta(seconds=1)
    assert approve.submit(svc, world["n"], "XXXX-XXXX") == approve.Outcome("expired", 4)


@pytest.mark.parametrize("change", ["revoke", "owner"])
def test_a_code_whose_device_is_no_longer_trusted_by_the_user_is_wrong(svc, world, change):
    req = _open(svc, world)
    code = _code(svc, world, req.id, "a")
    with svc.db.session() as s:
        if change == "revoke":
            registry.change_state(s, world["a"], "revoke", reason="stolen", actor="test")
        else:
            s.get(Device, world["a"]).user_id = make_user(s, "fred@example.com").id
    if change == "revoke":  # the revocation closed nothing of N's: the request is still open
        assert _req(svc, req.id).status == "open"
    assert approve.submit(svc, world["n"], code) == approve.Outcome("wrong", 4)
    with svc.db.session() as s:
        assert s.get(Device, world["n"]).state == "pending"


# -- reissue -----------------------------------------------------------------------------------


def test_a_code_still_valid_is_not_reissued(svc, world):
    req = _open(svc, world)
    svc.clock.now = req.expires_at - dt.timedelta(seconds=1)
    with pytest.raises(Conflict) as err:
        approve.reissue(svc, world["n"])
    assert (err.value.code, err.value.message) == (
        "approval_not_expired",
        "The current code is still valid: enter the code shown on your other device.",
    )
    assert _req(svc, req.id).code_seq == 1


def test_an_expired_code_is_reissued_keeping_the_attempts(svc, world):
    req = _open(svc, world)
    approve.submit(svc, world["n"], "XXXX-XXXX")
    old = _code(svc, world, req.id, "a")
    svc.clock.now = _req(svc, req.id).expires_at  # expired from this instant
    assert approve.reissue(svc, world["n"], remote_addr=IP) == 4
    after = _req(svc, req.id)
    assert (after.attempts, after.code_seq, after.status) == (1, 3, "open")
    assert after.expires_at == svc.clock.now + dt.timedelta(seconds=600)
    new = _code(svc, world, req.id, "a")
    assert new != old and set(_notices(svc, req.id)) == {world["a"], world["b"]}
    assert _events(svc, "approval.reissue") == [
        (
            "ok",
            None,
            None,
            world["user"],
            world["n"],
            IP,
            {"request_id": req.id, "recipients": 2},
        )
    ]
    assert approve.submit(svc, world["n"], new) == approve.Outcome("approved", 3)


# -- on PostgreSQL: the row lock, and the order of the notices ---------------------------------


def _wait_for_a_lock_wait(svc) -> None:
    # Its own connection, outside the service's pool: a pooled one could take the slot
    # submit needs, and submit would then wait for the pool instead of the row lock.
    watcher = create_engine(svc.db.engine.url, poolclass=NullPool)
    try:
        deadline = time.monotonic() + 10
        with watcher.connect() as conn:
            while time.monotonic() < deadline:
                waiting = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
                if waiting:
                    return
                time.sleep(0.02)
    finally:
        watcher.dispose()
    raise AssertionError("submit never waited for the request's row lock")


@pytest.mark.postgres
def test_submit_reads_the_request_under_its_row_lock(pg_svc):
    """A change committed while submit waits for the request is the one submit builds on:
    it read the request under the lock, not before it (a stale read would lose the change)."""
    world = _make_world(pg_svc)
    req = _open(pg_svc, world)
    done: dict = {}
    # The lock holder's own connection too: the service's pool stays whole for submit.
    holder = create_engine(pg_svc.db.engine.url, poolclass=NullPool)
    with holder.connect() as other:
        tx = other.begin()
        other.execute(
            select(ApprovalRequest.id).where(ApprovalRequest.id == req.id).with_for_update()
        )
        worker = threading.Thread(
            target=lambda: done.update(outcome=approve.submit(pg_svc, world["n"], "XXXX-XXXX"))
        )
        worker.start()
        _wait_for_a_lock_wait(pg_svc)
        other.execute(
            update(ApprovalRequest).where(ApprovalRequest.id == req.id).values(code_seq=10)
        )
        tx.commit()
    holder.dispose()
    worker.join(timeout=20)
    assert done["outcome"] == approve.Outcome("wrong", 4)
    after = _req(pg_svc, req.id)
    assert (after.attempts, after.code_seq) == (1, 11)


@pytest.mark.postgres
def test_notices_come_in_id_order_whatever_the_table_s_physical_order(pg_svc):
    world = _make_world(pg_svc)
    first = _open(pg_svc, world)
    with pg_svc.db.session() as s:
        pending = make_device(s, s.get(User, world["user"]), state="pending")
        second_id = approve.open_request(pg_svc, s, pending).id
    with pg_svc.db.session() as s:  # A's notices stored anew: the higher id first
        rows = s.scalars(
            select(ApprovalNotice)
            .where(ApprovalNotice.device_id == world["a"])
            .order_by(ApprovalNotice.id)
        ).all()
        assert [r.request_id for r in rows] == [first.id, second_id]
        copies = [(r.id, r.request_id, r.code_mac, bytes(r.sealed)) for r in rows]
        s.execute(delete(ApprovalNotice).where(ApprovalNotice.device_id == world["a"]))
        (low, req_1, mac_1, sealed_1), (high, req_2, mac_2, sealed_2) = copies
        for id_, req_id, mac, sealed in (
            (high + 100, req_1, mac_1, sealed_1),
            (low, req_2, mac_2, sealed_2),
        ):
            s.add(
                ApprovalNotice(
                    id=id_, request_id=req_id, device_id=world["a"], code_mac=mac, sealed=sealed
                )
            )
            s.flush()
    got = [b64d(x) for x in approve.notices_for(pg_svc, _poll(world, "a"), remote_addr=None)]
    assert got == [sealed_2, sealed_1]
