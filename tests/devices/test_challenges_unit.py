"""``idp_service/devices/challenges.py`` in-process, on SQLite and PostgreSQL.

* ``issue`` signs exactly the challenge it returns: a 16-byte random id, this server's
  ttl, box key, origins, callback and key id, the caller's purpose, binding and data.
* ``consume`` records every field of the answered challenge, once: the second answer is
  ``challenge_replayed`` and changes nothing; a rolled-back caller does not burn it.
* ``accept_once`` judges in the shared order and commits detection's refusal with the
  challenge marked; any other refusal leaves nothing behind.
* ``open_answer`` applies this server's keys, clock, purpose, skew bound and size cap.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from nacl.signing import SigningKey
from sqlalchemy import inspect

from idp_service.devices import challenges
from idp_service.services import Services
from tests.signin_helpers import answer, challenge_rows, trusted_device
from tests.signin_helpers import shared_service as shared_service  # noqa: F401 - the fixture
from trust_protocol import ResponseBody, parse_challenge, seal_response
from trust_protocol.challenge import Challenge, sign_challenge
from trust_protocol.errors import ProtocolError
from trust_protocol.response import RegisteredDevice


@pytest.fixture
def service(shared_service: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    # One database per module and backend: each test reads back only its own challenges,
    # and gets the skew bound back as it was.
    settings = shared_service.settings
    monkeypatch.setattr(settings, "max_clock_skew", settings.max_clock_skew)
    return shared_service


def _rows(service: Services, *answered: Challenge) -> list:
    """The recorded rows of these challenges."""
    wanted = {c.id_text for c in answered}
    return [r for r in challenge_rows(service) if r.id in wanted]


def _refused(code: str, call, *args, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        call(*args, **kwargs)
    assert refused.value.code == code, refused.value
    return refused.value


# ---- timestamp ------------------------------------------------------------------------------


def test_timestamp_is_aware_utc():
    assert challenges.timestamp(0) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert challenges.timestamp(86400.5) == dt.datetime(1970, 1, 2, 0, 0, 0, 500000, dt.UTC)
    assert challenges.timestamp(0).utcoffset() == dt.timedelta(0)


# ---- issue ----------------------------------------------------------------------------------


def test_issue_signs_the_challenge_it_returns(service):
    settings = service.settings
    before = int(time.time())
    token, challenge = challenges.issue(service, "authenticate", "login:abc", data={"k": "v"})
    after = int(time.time())
    assert parse_challenge(token, service.keys.verify_key) == challenge
    assert len(challenge.id) == 16
    assert challenge.purpose == "authenticate"
    assert challenge.binding == "login:abc"
    assert before <= challenge.issued_at <= after
    assert challenge.expires_at == challenge.issued_at + settings.challenge_ttl
    assert challenge.box_key == bytes(service.keys.challenge_box_key(challenge.id).public_key)
    assert challenge.origins == settings.allowed_origins
    assert challenge.callback == settings.public_url + "/agent/v1/callback"
    assert challenge.kid == service.keys.kid
    assert challenge.data == {"k": "v"}


def test_issue_defaults_and_options(service):
    _, plain = challenges.issue(service, "report", "b")
    assert plain.data == {} and plain.purpose == "report"
    _, other = challenges.issue(service, "report", "b", callback_path="/elsewhere")
    assert other.callback == service.settings.public_url + "/elsewhere"
    assert other.id != plain.id  # random per challenge


def test_an_issued_challenge_can_be_answered_and_opened(service):
    keys, _ = trusted_device(service)
    verified = challenges.open_answer(service, answer(service, keys), "authenticate")
    assert verified.device_id == keys.device_id
    assert verified.challenge.binding == "test"


# ---- consume --------------------------------------------------------------------------------


def _opened(service: Services, **kw):
    keys, _ = trusted_device(service)
    return challenges.open_answer(service, answer(service, keys, **kw), "authenticate")


def test_consume_records_every_field_once(service):
    verified = _opened(service, binding="login:one")
    challenge = verified.challenge
    before = dt.datetime.now(dt.UTC)
    with service.db.session() as s:
        challenges.consume(s, challenge, via="browser", device_id="dev-1")
    after = dt.datetime.now(dt.UTC)
    (row,) = _rows(service, challenge)
    assert row.id == challenge.id_text
    assert (row.purpose, row.binding) == ("authenticate", "login:one")
    assert row.issued_at == challenges.timestamp(challenge.issued_at)
    assert row.expires_at == challenges.timestamp(challenge.expires_at)
    assert before - dt.timedelta(seconds=1) <= row.consumed_at <= after + dt.timedelta(seconds=1)
    assert (row.consumed_via, row.device_id, row.result) == ("browser", "dev-1", "ok")
    # A second answer collides, whoever sends it, and changes nothing.
    with service.db.session() as s:
        _refused(
            "challenge_replayed",
            challenges.consume,
            s,
            challenge,
            via="callback",
            device_id="dev-2",
        )
    (again,) = _rows(service, challenge)
    assert (again.consumed_via, again.device_id, again.consumed_at) == (
        "browser",
        "dev-1",
        row.consumed_at,
    )


def test_consume_in_a_rolled_back_transaction_does_not_burn_the_challenge(service):
    challenge = _opened(service).challenge
    with pytest.raises(RuntimeError), service.db.session() as s:
        challenges.consume(s, challenge, via="browser", device_id="d")
        raise RuntimeError("the caller failed later")
    assert _rows(service, challenge) == []
    with service.db.session() as s:
        challenges.consume(s, challenge, via="agent", device_id="d")
    assert [r.consumed_via for r in _rows(service, challenge)] == ["agent"]


def test_consume_two_challenges_records_both(service):
    first, second = _opened(service).challenge, _opened(service).challenge
    with service.db.session() as s:
        challenges.consume(s, first, via="browser", device_id="a")
        challenges.consume(s, second, via="browser", device_id="b")
    assert sorted(r.device_id for r in _rows(service, first, second)) == ["a", "b"]


# ---- accept_once ----------------------------------------------------------------------------


def _registered(verified, state="trusted", active=True, key=None) -> RegisteredDevice:
    return RegisteredDevice(verified.device_id, key or verified.sign_key, state, active)


def test_accept_once_records_the_answer_with_its_sender(service):
    verified = _opened(service)
    calls: list[str] = []

    def registry():
        calls.append("registry")
        assert len(_rows(service, verified.challenge)) == 0  # not committed yet: same transaction
        return _registered(verified)

    def judge():
        calls.append("judge")
        return None

    with service.db.session() as s:
        challenges.accept_once(s, verified, via="callback", registry=registry, judge=judge)
    assert calls == ["registry", "judge"]
    (row,) = _rows(service, verified.challenge)
    assert (row.consumed_via, row.device_id, row.result) == (
        "callback",
        verified.device_id,
        "ok",
    )


def test_accept_once_without_registry_or_judge_only_records(service):
    verified = _opened(service)
    with service.db.session() as s:
        challenges.accept_once(s, verified, via="report")
    (row,) = _rows(service, verified.challenge)
    assert (row.consumed_via, row.result) == ("report", "ok")


@pytest.mark.parametrize(
    ("state", "active", "other_key", "code"),
    [
        ("revoked", True, False, "device_revoked"),
        ("pending", True, False, "device_pending"),
        ("trusted", False, False, "owner_inactive"),
        ("trusted", True, True, "device_key_mismatch"),
    ],
)
def test_a_registry_refusal_propagates_and_burns_nothing(service, state, active, other_key, code):
    verified = _opened(service)
    key = SigningKey.generate().verify_key.encode() if other_key else None
    judged: list[str] = []
    with pytest.raises(ProtocolError) as refused, service.db.session() as s:
        challenges.accept_once(
            s,
            verified,
            via="browser",
            registry=lambda: _registered(verified, state, active, key),
            judge=lambda: judged.append("judge"),
        )
    assert refused.value.code == code
    assert judged == []  # detection never ran
    assert _rows(service, verified.challenge) == []


def test_an_unknown_device_is_refused_by_the_registry_step(service):
    verified = _opened(service)
    with pytest.raises(ProtocolError) as refused, service.db.session() as s:
        challenges.accept_once(s, verified, via="browser", registry=lambda: None)
    assert refused.value.code == "device_unknown"
    assert _rows(service, verified.challenge) == []


def test_detections_refusal_is_committed_and_raised(service):
    verified = _opened(service)
    # The refusal leaves the caller's block, which rolls back: what stands was committed.
    with pytest.raises(ProtocolError) as refused, service.db.session() as s:
        challenges.accept_once(
            s,
            verified,
            via="callback",
            registry=lambda: _registered(verified),
            judge=lambda: ProtocolError("device_denied", "stale"),
        )
    assert refused.value.code == "device_denied"
    (row,) = _rows(service, verified.challenge)
    assert (row.id, row.result, row.consumed_via) == (
        verified.challenge.id_text,
        "device_denied",
        "callback",
    )


def test_detections_refusal_marks_only_its_own_challenge(service):
    other, verified = _opened(service), _opened(service)
    with service.db.session() as s:
        challenges.accept_once(s, other, via="browser")
    with pytest.raises(ProtocolError) as refused, service.db.session() as s:
        challenges.accept_once(
            s, verified, via="browser", judge=lambda: ProtocolError("device_suspended")
        )
    assert refused.value.code == "device_suspended"
    results = {r.id: r.result for r in _rows(service, other.challenge, verified.challenge)}
    assert results == {
        other.challenge.id_text: "ok",
        verified.challenge.id_text: "device_suspended",
    }


# ---- open_answer ----------------------------------------------------------------------------


def test_open_answer_refuses_another_purpose(service):
    keys, _ = trusted_device(service)
    envelope = answer(service, keys, purpose="report")
    _refused("wrong_purpose", challenges.open_answer, service, envelope, "authenticate")
    assert challenges.open_answer(service, envelope, "report").challenge.purpose == "report"


def test_open_answer_applies_the_size_cap_given(service):
    keys, _ = trusted_device(service)
    envelope = answer(service, keys)
    assert challenges.open_answer(service, envelope, "authenticate", max_size=len(envelope))
    _refused(
        "too_large",
        challenges.open_answer,
        service,
        envelope,
        "authenticate",
        max_size=len(envelope) - 1,
    )


def test_open_answer_applies_the_services_skew_bound(service):
    keys, _ = trusted_device(service)
    service.settings.max_clock_skew = 20.0
    _refused(
        "clock_skew",
        challenges.open_answer,
        service,
        answer(service, keys, clock_offset=40),
        "authenticate",
    )
    opened = challenges.open_answer(service, answer(service, keys, clock_offset=10), "authenticate")
    assert 9 < opened.clock_skew < 11
    service.settings.max_clock_skew = 900.0  # beyond the protocol's default of 300
    opened = challenges.open_answer(
        service, answer(service, keys, clock_offset=-600), "authenticate"
    )
    assert -601 < opened.clock_skew < -599


def _signed(service: Services, *, issued_at: int, expires_at: int, signer=None):
    cid = bytes(range(16))
    challenge = Challenge(
        id=cid,
        purpose="authenticate",
        issued_at=issued_at,
        expires_at=expires_at,
        box_key=bytes(service.keys.challenge_box_key(cid).public_key),
        origins=service.settings.allowed_origins,
        callback=service.settings.public_url + challenges.CALLBACK_PATH,
        binding="test",
        kid=service.keys.kid,
    )
    return sign_challenge(challenge, signer or service.keys.signing_key), challenge


def _seal(keys, token, challenge, clock) -> bytes:
    return seal_response(ResponseBody(token, keys.public_json(), {}, "t", clock), challenge, keys)


def test_open_answer_uses_the_clock_now(service):
    keys, _ = trusted_device(service)
    now = int(time.time())
    token, challenge = _signed(service, issued_at=now - 100, expires_at=now - 1)
    _refused(
        "challenge_expired",
        challenges.open_answer,
        service,
        _seal(keys, token, challenge, now),
        "authenticate",
    )
    token, challenge = _signed(service, issued_at=now - 60, expires_at=now + 30)
    assert challenges.open_answer(service, _seal(keys, token, challenge, now), "authenticate")


def test_open_answer_needs_this_servers_signature(service):
    keys, _ = trusted_device(service)
    now = int(time.time())
    token, challenge = _signed(
        service, issued_at=now, expires_at=now + 30, signer=SigningKey.generate()
    )
    _refused(
        "bad_challenge_signature",
        challenges.open_answer,
        service,
        _seal(keys, token, challenge, now),
        "authenticate",
    )


def test_the_challenge_id_is_the_tables_only_unique_key(service):
    """``consume``'s ON CONFLICT names ``id``; no other unique key may make an answer collide."""
    inspector = inspect(service.db.engine)
    assert inspector.get_pk_constraint("challenges")["constrained_columns"] == ["id"]
    assert inspector.get_unique_constraints("challenges") == []
    assert [i["name"] for i in inspector.get_indexes("challenges") if i["unique"]] == []
