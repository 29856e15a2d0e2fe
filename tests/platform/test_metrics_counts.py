"""The one-line metric calls count what really happened: webhook attempts by outcome
(a stale claim that records nothing counts nothing), a job's last success (a failing
run leaves it), and the database pool's connections."""

from __future__ import annotations

import datetime as dt
import time

from prometheus_client import REGISTRY

from idp_service.platform import metrics
from idp_service.platform.db import Database
from idp_service.platform.jobs import Job, JobRunner
from idp_service.platform.models import utcnow
from idp_service.webhooks import dispatcher
from tests.webhooks.test_webhooks import _queue


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_webhook_attempts_are_counted_by_outcome(migrated_url):
    db = Database(migrated_url)
    before = {
        o: _value("devicetrust_webhook_deliveries_total", outcome=o)
        for o in ("retry", "failed", "delivered")
    }
    try:
        _queue(db, 2)
        now = utcnow()
        first, second = dispatcher.claim(db, batch=5, lease=30, now=now)
        fail = dispatcher.Outcome(503, "HTTP 503")
        dispatcher.record(db, first, fail, (1.0,), now=now)
        dispatcher.record(db, first, dispatcher.Outcome(200, None), (1.0,), now=now)  # stale
        dispatcher.record(db, second, dispatcher.Outcome(204, None), (1.0,), now=now)
        (again,) = dispatcher.claim(db, batch=5, lease=30, now=now + dt.timedelta(hours=1))
        dispatcher.record(db, again, fail, (1.0,))
    finally:
        db.dispose()
    after = {o: _value("devicetrust_webhook_deliveries_total", outcome=o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {"retry": 1, "failed": 1, "delivered": 1}


def test_a_jobs_last_success_moves_only_when_it_succeeds(migrated_url):
    db = Database(migrated_url)
    calls = []

    def ok() -> None:
        calls.append("ok")

    def boom() -> None:
        raise RuntimeError("no")

    try:
        runner = JobRunner(
            db, [Job("metric-ok", ok, every=3600), Job("metric-boom", boom, every=3600)]
        )
        started = time.time()
        assert runner.run("metric-ok") and runner.run("metric-boom")
    finally:
        db.dispose()
    assert _value("devicetrust_job_last_success_timestamp_seconds", job="metric-ok") >= started
    assert _value("devicetrust_job_last_success_timestamp_seconds", job="metric-boom") == 0.0


def test_the_pool_gauge_follows_checkouts(sqlite_url):
    db = Database(sqlite_url)
    db.engine.dispose()  # no connection made before the gauge watches
    metrics.watch_pool(db.engine)
    in_use = _value("devicetrust_db_pool_connections", state="in_use")
    opened = _value("devicetrust_db_pool_connections", state="open")
    with db.engine.connect():
        assert _value("devicetrust_db_pool_connections", state="in_use") == in_use + 1
        assert _value("devicetrust_db_pool_connections", state="open") == opened + 1
    assert _value("devicetrust_db_pool_connections", state="in_use") == in_use
    db.engine.dispose()
    assert _value("devicetrust_db_pool_connections", state="open") == opened
