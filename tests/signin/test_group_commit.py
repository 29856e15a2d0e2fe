"""Group commit: answers from several threads share transactions and keep their meaning.

Unit tests drive :class:`GroupCommit` with plain functions; the database tests
run the real verify path from many threads on SQLite and PostgreSQL and check
that every answer is recorded once, replays inside one batch are refused, and
nothing is lost when a batch fails as a whole.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from idp_service.devices import challenges
from idp_service.directory import users
from idp_service.platform.group_commit import GroupCommit
from idp_service.platform.models import AuditEvent, Challenge, Device, LoginTransaction, utcnow
from idp_service.services import Services
from idp_service.signin import store as login_sql
from idp_service.signin import transactions
from idp_service.signin.authenticate import verify
from trust_protocol import DeviceKeys, ProtocolError, ResponseBody, seal_response


def _slow(results: list[list[int]]):
    def run_many(batch):
        time.sleep(0.02)  # a commit in flight: others queue meanwhile
        results.append(list(batch))
        return [p * 10 for p in batch]

    return run_many


def test_a_lone_writer_runs_alone():
    calls: list[str] = []
    gc = GroupCommit(lambda p: calls.append("one") or p + 1, lambda b: calls.append("many"))
    assert gc.submit(1) == 2
    assert calls == ["one"]
    assert gc.batches == 0


def test_concurrent_writers_share_batches_and_get_their_own_results():
    batches: list[list[int]] = []
    gc = GroupCommit(lambda p: time.sleep(0.02) or p * 10, _slow(batches), max_batch=64)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(gc.submit, range(64)))
    assert results == [p * 10 for p in range(64)]
    assert gc.batches >= 1 and gc.batched >= 2  # some writes did share a commit
    assert sorted(p for b in batches for p in b) == sorted(set(p for b in batches for p in b))


def test_batches_never_exceed_the_cap_and_the_leader_finishes_its_own_job():
    batches: list[list[int]] = []
    gc = GroupCommit(lambda p: time.sleep(0.01) or p * 10, _slow(batches), max_batch=3)
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(gc.submit, range(60)))
    assert results == [p * 10 for p in range(60)]
    assert batches and max(len(b) for b in batches) <= 3


def test_a_failed_batch_is_retried_write_by_write():
    seen_alone: list[int] = []

    def run_one(p: int) -> int:
        time.sleep(0.01)
        seen_alone.append(p)
        if p == 7:
            raise ValueError("seven is refused")
        return p

    def run_many(batch):
        time.sleep(0.02)
        raise RuntimeError("the shared transaction broke")

    gc = GroupCommit(run_one, run_many)
    outcomes: dict[int, object] = {}

    def go(p: int) -> None:
        try:
            outcomes[p] = gc.submit(p)
        except ValueError as exc:
            outcomes[p] = exc

    threads = [threading.Thread(target=go, args=(p,)) for p in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen_alone) == list(range(12))  # every write ran alone, once
    assert isinstance(outcomes[7], ValueError)  # its error reached its own thread only
    assert all(outcomes[p] == p for p in range(12) if p != 7)


# ---- the real verify path, from many threads -------------------------------------------------


@pytest.fixture
def service(service_ctx) -> Services:
    return service_ctx.extensions["devicetrust"]


def _trusted_devices(service: Services, n: int) -> list[DeviceKeys]:
    keys = [DeviceKeys.generate(str(uuid.uuid4())) for _ in range(n)]
    with service.db.session() as s:
        for k in keys:
            user = users.create(s, f"gc-{uuid.uuid4().hex[:8]}@example.com")
            now = utcnow()
            s.add(
                Device(
                    id=k.device_id, user_id=user.id, state="trusted", sign_key=k.sign_public,
                    box_key=k.box_public, first_seen=now, last_seen=now,
                )
            )  # fmt: skip
    return keys


def _answers(service: Services, keys: list[DeviceKeys], per_device: int):
    out = []
    with service.db.session() as s:
        for k in keys:
            for _ in range(per_device):
                txn = transactions.create(s, ttl_seconds=600)
                token, challenge = challenges.issue(
                    service, "authenticate", transactions.binding_for(txn)
                )
                body = ResponseBody(token, k.public_json(), {"os": "linux"}, "t", time.time())
                out.append((txn, seal_response(body, challenge, k)))
    return out


def test_many_threads_every_answer_recorded_once(service):
    keys = _trusted_devices(service, 4)
    answers = _answers(service, keys, 15)
    # Each answer twice (browser and callback copies), all at once from 12 threads.
    work = [env for _, env in answers] * 2

    def go(env: bytes) -> str:
        try:
            verify(service, env, via="callback")
            return "ok"
        except ProtocolError as exc:
            return exc.code

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(go, work))
    assert outcomes.count("ok") == len(answers)
    assert outcomes.count("challenge_replayed") == len(answers)
    committer = login_sql._COMMITTERS[service.db.engine]
    assert committer.batches >= 1  # the threads did share commits
    with service.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Challenge)) == len(answers)
        verified = s.scalar(
            select(func.count())
            .select_from(LoginTransaction)
            .where(LoginTransaction.status == "verified")
        )
        assert verified == len(answers)
        audited = s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "login.device_verified", AuditEvent.outcome == "ok")
        )
        assert audited == len(answers)


def test_a_revoked_device_in_a_batch_changes_nothing_for_the_others(service):
    keys = _trusted_devices(service, 3)
    answers = _answers(service, keys, 10)
    with service.db.session() as s:
        s.get(Device, keys[0].device_id).state = "revoked"

    def go(env: bytes) -> str:
        try:
            verify(service, env, via="callback")
            return "ok"
        except ProtocolError as exc:
            return exc.code

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(go, [env for _, env in answers]))
    assert outcomes[:10] == ["device_revoked"] * 10
    assert outcomes[10:] == ["ok"] * 20
