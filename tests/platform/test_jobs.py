"""The job runner: each run of an exclusive job happens once across processes sharing a database.

Two runners (each with its own engine, as two replicas have) on one real database,
SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import select, update

from idp_service.app import create_app
from idp_service.platform import audit
from idp_service.platform.config import Settings
from idp_service.platform.db import Database
from idp_service.platform.job_tables import JobLease
from idp_service.platform.jobs import Job, JobRunner, Leases, slack
from idp_service.platform.models import AuditEvent, utcnow


@pytest.fixture
def two_dbs(migrated_url):
    first, second = Database(migrated_url), Database(migrated_url)
    yield first, second
    first.dispose()
    second.dispose()


def _row(db: Database, name: str) -> JobLease | None:
    with db.session() as s:
        return s.get(JobLease, name)


def test_a_lease_is_taken_when_due_and_free_and_lapses_when_its_holder_dies(two_dbs):
    a, b = Leases(two_dbs[0], "a"), Leases(two_dbs[1], "b")
    t0 = utcnow()
    assert a.acquire("job", every=60, lease=600, now=t0)  # the first run anywhere
    assert not b.acquire("job", every=60, lease=600, now=t0)  # held, and not due
    assert not a.acquire("job", every=60, lease=600, now=t0)  # not twice by its holder either
    assert a.release("job", now=t0 + dt.timedelta(seconds=5))
    row = _row(two_dbs[0], "job")
    assert row.holder is None and row.last_outcome == "ok"
    assert row.next_run_at == t0 + dt.timedelta(seconds=60 - slack(60))
    # Free but not due: B's scheduler fired between A's runs.
    assert not b.acquire("job", every=60, lease=600, now=t0 + dt.timedelta(seconds=30))
    t1 = t0 + dt.timedelta(seconds=60)
    assert b.acquire("job", every=60, lease=600, now=t1)  # due: whoever asks first
    # B dies holding it: due again, but locked until the lease lapses.
    assert not a.acquire("job", every=60, lease=600, now=t1 + dt.timedelta(seconds=120))
    assert a.acquire("job", every=60, lease=600, now=t1 + dt.timedelta(seconds=600))
    assert not b.release("job")  # B's late release does not free A's run
    assert _row(two_dbs[0], "job").holder == "a"
    assert a.release("job", ok=False)
    assert _row(two_dbs[0], "job").last_outcome == "error"


def _race(runners: list[JobRunner], name: str, per_runner: int = 4) -> list[bool]:
    """Every runner asks to run ``name`` from ``per_runner`` threads at once."""
    barrier = threading.Barrier(len(runners) * per_runner)
    results: list[bool] = []
    lock = threading.Lock()

    def go(runner: JobRunner) -> None:
        barrier.wait()
        ran = runner.run(name)
        with lock:
            results.append(ran)

    threads = [threading.Thread(target=go, args=(r,)) for r in runners for _ in range(per_runner)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_two_runners_racing_run_each_due_run_once(two_dbs):
    calls: list[str] = []

    def work() -> None:
        calls.append(threading.current_thread().name)
        time.sleep(0.05)  # overlap with the other askers

    runners = [JobRunner(db, [Job("count", work, every=3600)]) for db in two_dbs]
    assert _race(runners, "count").count(True) == 1
    assert len(calls) == 1
    # Not due again for an hour: nobody runs it.
    assert _race(runners, "count").count(True) == 0 and len(calls) == 1
    # An hour later (moved back in the table): once more, by exactly one of them.
    with two_dbs[0].session() as s:
        s.execute(update(JobLease).values(next_run_at=utcnow() - dt.timedelta(seconds=1)))
    assert _race(runners, "count").count(True) == 1
    assert len(calls) == 2


def test_scheduled_runners_never_overlap_and_run_once_per_interval(two_dbs):
    """Both runners' schedulers fire every 0.3 s; the runs they make between them do not
    overlap and come at most once per interval (not twice, as two unleased timers would)."""
    every, hold = 0.3, 0.05
    runs: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def make(label: str) -> Job:
        def work() -> None:
            start = time.monotonic()
            time.sleep(hold)
            with lock:
                runs.append((label, start, time.monotonic()))

        return Job("tick", work, every=every)

    runners = [JobRunner(db, [make(f"r{i}")]) for i, db in enumerate(two_dbs)]
    began = time.monotonic()
    for r in runners:
        r.start()
    time.sleep(3.0)
    for r in runners:
        r.stop()
    elapsed = time.monotonic() - began
    assert runs, "the scheduled job never ran"
    ordered = sorted(runs, key=lambda run: run[1])
    for (_, _, end), (_, start, _) in zip(ordered, ordered[1:], strict=False):
        assert start >= end, "two runs overlapped"
    # At most one run per (interval less its slack), plus the one at the edge.
    assert len(runs) <= elapsed / (every - slack(every)) + 1
    assert _row(two_dbs[0], "tick").holder is None  # stopped cleanly: nobody holds it


def test_a_running_job_keeps_its_short_lease_and_a_dead_holder_lets_go_after_one(two_dbs):
    """A run longer than its lease renews it (nobody else starts the job meanwhile); a
    holder that died mid-run (took the lease, never renewed or released) holds the job
    up for one lease, then the next asker runs it."""
    lease, every = 0.6, 0.2
    started = threading.Event()
    calls: list[str] = []

    def slow() -> None:
        calls.append("slow")
        started.set()
        time.sleep(3 * lease)

    a = JobRunner(two_dbs[0], [Job("long", slow, every=every, lease=lease)])
    b = JobRunner(two_dbs[1], [Job("long", lambda: calls.append("b"), every=every, lease=lease)])
    running = threading.Thread(target=a.run, args=["long"])
    running.start()
    assert started.wait(10)
    deadline = time.monotonic() + 2 * lease
    while time.monotonic() < deadline:  # due, and past the first lease: still held
        assert not b.run("long")
        time.sleep(0.05)
    running.join()
    assert calls == ["slow"]
    assert _row(two_dbs[0], "long").holder is None
    time.sleep(every)
    assert b.run("long") and calls == ["slow", "b"]

    # A holder that dies: the lease taken, then nothing (no renewal, no release).
    dead = Leases(two_dbs[0], holder="dead:1:x")
    time.sleep(every)
    assert dead.acquire("long", every=every, lease=lease)
    time.sleep(every)
    assert not b.run("long")  # due, but locked
    time.sleep(lease)
    assert b.run("long") and calls == ["slow", "b", "b"]


def test_a_failing_job_is_logged_counted_as_run_and_gives_its_lease_back(two_dbs, caplog):
    def boom() -> None:
        raise RuntimeError("no")

    runner = JobRunner(two_dbs[0], [Job("boom", boom, every=3600)])
    assert runner.run("boom") is True
    assert "periodic job boom failed" in caplog.text
    row = _row(two_dbs[0], "boom")
    assert row.holder is None and row.last_outcome == "error"
    other = JobRunner(two_dbs[1], [Job("boom", boom, every=3600)])
    assert other.run("boom") is False  # retried at the next interval, not at once elsewhere


def test_a_job_that_is_not_exclusive_runs_in_every_process(two_dbs):
    calls: list[int] = []
    runners = [
        JobRunner(db, [Job("each", lambda i=i: calls.append(i), every=3600, exclusive=False)])
        for i, db in enumerate(two_dbs)
    ]
    assert [r.run("each") for r in runners] == [True, True]
    assert sorted(calls) == [0, 1]
    with two_dbs[0].session() as s:  # no lease rows for it
        assert s.scalars(select(JobLease.name)).all() == []


def test_stop_lets_the_running_job_finish_and_release_its_lease(two_dbs):
    started, finished, stopping = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        stopping.wait(10)
        time.sleep(0.2)
        finished.set()

    runner = JobRunner(two_dbs[0], [Job("slow", slow, every=0.2, on_stop=stopping.set)])
    runner.start()
    assert runner.running
    assert started.wait(30), "the job never started"
    runner.stop()  # on_stop ends the pass early; stop waits for it
    assert finished.is_set() and not runner.running
    row = _row(two_dbs[0], "slow")
    assert row.holder is None and row.last_outcome == "ok"
    runner.stop()  # a second stop is harmless


def test_job_names_are_unique(two_dbs):
    with pytest.raises(ValueError, match="unique"):
        JobRunner(two_dbs[0], [Job("x", print, 1), Job("x", print, 2)])


def test_the_service_started_in_the_background_runs_its_jobs_and_stops(migrated_url, tmp_path):
    """``create_app(background=True)``: the runner seals audit rows, then stops cleanly."""
    settings = Settings.from_env(
        {"DEVICETRUST_DATABASE_URL": migrated_url, "DEVICETRUST_DATA_DIR": str(tmp_path / "d")}
    )
    app = create_app(settings, background=True)
    runner = app.extensions["devicetrust.jobs"]
    db = app.extensions["devicetrust"].db
    try:
        assert runner.running
        assert set(runner.jobs) == {
            "audit-seal", "audit-checkpoint", "stale-sweep", "expiry-cleanup", "webhook-dispatch"
        }  # fmt: skip
        with db.session() as s:
            audit.record(s, "test.event", "ok", actor="test")
        deadline = time.monotonic() + 30
        while True:
            with db.session() as s:
                sealed = s.scalar(
                    select(AuditEvent.chain_seq).where(AuditEvent.action == "test.event")
                )
            if sealed is not None:
                break
            assert time.monotonic() < deadline, "the audit-seal job never sealed the row"
            time.sleep(0.1)
    finally:
        runner.stop()
        db.dispose()
    assert not runner.running
    after = Database(migrated_url)
    try:
        seal = _row(after, "audit-seal")
        assert seal is not None and seal.holder is None
    finally:
        after.dispose()
