"""One runner for the service's periodic work, on APScheduler, each run once across replicas.

A :class:`JobRunner` holds the process's jobs (:class:`Job`: a name, a function,
an interval) on one APScheduler ``BackgroundScheduler``. ``create_app(background=True)``
starts it, as ``devicetrust serve`` asks; it stops at exit, letting a running
job finish.

Every service process (replica, gunicorn worker) runs the same scheduler, so a
job that must run once per interval *across* them takes a lease first
(:class:`Leases`, the ``job_leases`` table): one conditional
``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE`` that succeeds only when
the job is due (``next_run_at`` passed) and free (no holder, or the holder's
``locked_until`` lapsed because it died). Taking it sets the next due time one
interval ahead (less a little slack, so the process whose turn it is does not
miss it by the scheduler's jitter); a process that does not get the lease skips
that run. The same statement works on PostgreSQL (where the row's lock orders
concurrent takers) and SQLite (whose write lock does).

A lease is short (:data:`DEFAULT_LEASE`) and its holder renews it while the job
runs (every third of it, :class:`_Renewal`), so a run may take as long as it
needs, yet a holder that dies mid-run (``kill -9``, a lost machine) holds the job
up for one lease at most: then another process takes it at its next due time.

A job whose work is already split between processes row by row may run
everywhere (``exclusive=False``): the webhook dispatcher claims each delivery
with ``FOR UPDATE SKIP LOCKED``, so replicas deliver side by side and one slow
receiver in one process does not hold up the others' deliveries.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Table, and_, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from idp_service.platform import metrics
from idp_service.platform.db import Database
from idp_service.platform.job_tables import JobLease
from idp_service.platform.models import utcnow

log = logging.getLogger(__name__)

DEFAULT_LEASE = 30.0  # seconds a dead holder keeps a job from running (renewed while alive)
MAX_SLACK = 1.0  # seconds: the most a due time is set early (see the module docstring)

_table = cast(Table, JobLease.__table__)


def holder_id() -> str:
    """This process's name in ``job_leases.holder``: host, pid and a random suffix."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


def slack(every: float) -> float:
    """How much earlier than one interval after a run the next may start."""
    return min(every / 10, MAX_SLACK)


class Leases:
    """Take and give back job leases in ``job_leases`` for one process (``holder``)."""

    def __init__(self, db: Database, holder: str | None = None) -> None:
        self.db = db
        self.holder = holder or holder_id()
        self._insert = postgresql.insert if db.is_postgres else sqlite.insert

    def acquire(
        self,
        name: str,
        *,
        every: float,
        lease: float = DEFAULT_LEASE,
        now: dt.datetime | None = None,
    ) -> bool:
        """Take ``name``'s lease if the job is due and free; True when this process got it.

        One statement: insert the row (the job's first run anywhere), or update it
        only where it is due and free. Whoever's statement changed the row holds it.
        """
        now = now or utcnow()
        values = {
            "name": name,
            "holder": self.holder,
            "locked_until": now + dt.timedelta(seconds=lease),
            "next_run_at": now + dt.timedelta(seconds=every - slack(every)),
            "last_started_at": now,
        }
        insert = self._insert(_table).values(**values)
        stmt = insert.on_conflict_do_update(
            index_elements=[_table.c.name],
            set_={k: getattr(insert.excluded, k) for k in values if k != "name"},
            where=and_(
                _table.c.next_run_at <= now,
                or_(_table.c.holder.is_(None), _table.c.locked_until <= now),
            ),
        ).returning(_table.c.holder)
        with self.db.engine.begin() as conn:
            got = conn.execute(stmt).scalar_one_or_none()
        return got == self.holder

    def renew(self, name: str, *, lease: float, now: dt.datetime | None = None) -> bool:
        """Extend ``name``'s lease to ``lease`` seconds from now; False if it was not ours."""
        now = now or utcnow()
        with self.db.engine.begin() as conn:
            changed = conn.execute(
                update(_table)
                .where(_table.c.name == name, _table.c.holder == self.holder)
                .values(locked_until=now + dt.timedelta(seconds=lease))
            ).rowcount
        return changed == 1

    def release(self, name: str, *, ok: bool = True, now: dt.datetime | None = None) -> bool:
        """Give ``name``'s lease back after a run; False if it was no longer ours (lapsed)."""
        with self.db.engine.begin() as conn:
            changed = conn.execute(
                update(_table)
                .where(_table.c.name == name, _table.c.holder == self.holder)
                .values(
                    holder=None,
                    locked_until=None,
                    last_finished_at=now or utcnow(),
                    last_outcome="ok" if ok else "error",
                )
            ).rowcount
        return changed == 1


class _Renewal:
    """Renews one held lease every third of its length until stopped (a daemon thread)."""

    def __init__(self, leases: Leases, name: str, lease: float) -> None:
        self.leases, self.name, self.lease = leases, name, lease
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{name}", daemon=True)

    def _loop(self) -> None:
        while not self._done.wait(self.lease / 3):
            try:
                if not self.leases.renew(self.name, lease=self.lease):
                    log.warning("periodic job %s lost its lease while running", self.name)
                    return
            except Exception:  # noqa: BLE001 - the database unreachable: try again
                log.warning("periodic job %s could not renew its lease", self.name, exc_info=True)

    def __enter__(self) -> _Renewal:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


@dataclass(frozen=True)
class Job:
    """A periodic piece of work: ``func`` every ``every`` seconds.

    ``exclusive`` jobs run once per interval across every process (a lease);
    ``lease`` is how long a crashed holder's lease lasts (a live one renews it).
    ``on_stop`` is called when the runner stops (to end a long pass early).
    """

    name: str
    func: Callable[[], object]
    every: float
    exclusive: bool = True
    lease: float = DEFAULT_LEASE
    on_stop: Callable[[], None] | None = None


class JobRunner:
    """Runs :class:`Job` s on an APScheduler background scheduler, with leases."""

    def __init__(self, db: Database, jobs: list[Job], *, holder: str | None = None) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        self.db = db
        self.jobs = {job.name: job for job in jobs}
        self.leases = Leases(db, holder)
        # One local lock per job: a run that outlasts its interval is not started twice here.
        self._running = {name: threading.Lock() for name in self.jobs}
        self._scheduler: BackgroundScheduler | None = None

    @property
    def holder(self) -> str:
        """This runner's name in ``job_leases``."""
        return self.leases.holder

    def run(self, name: str) -> bool:
        """Run job ``name`` now if this process gets its turn; True when it ran.

        A failing job is logged and counts as run: the next attempt is one interval
        later, on whichever process gets the lease.
        """
        job = self.jobs[name]
        local = self._running[name]
        if not local.acquire(blocking=False):
            return False  # still running here from the previous interval
        try:
            if job.exclusive and not self.leases.acquire(name, every=job.every, lease=job.lease):
                return False
            ok = True
            try:
                if job.exclusive:
                    with _Renewal(self.leases, name, job.lease):
                        job.func()
                else:
                    job.func()
            except Exception:  # noqa: BLE001 - retried at the next interval
                ok = False
                log.warning("periodic job %s failed", name, exc_info=True)
            if job.exclusive:
                self.leases.release(name, ok=ok)
            if ok:
                metrics.job_succeeded(name)
            return True
        except Exception:  # noqa: BLE001 - the lease table unreachable: next interval
            log.warning("periodic job %s could not take its lease", name, exc_info=True)
            return False
        finally:
            local.release()

    def start(self) -> None:
        """Schedule every job (first run one interval from now) and start the scheduler."""
        if self._scheduler is not None:
            return
        # APScheduler logs every run at INFO; the service logs what its jobs do itself.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=2 * len(self.jobs) + 1)},
            job_defaults={"coalesce": True, "max_instances": 2, "misfire_grace_time": None},
            timezone=dt.UTC,
        )
        for job in self.jobs.values():
            scheduler.add_job(
                self.run,
                IntervalTrigger(seconds=job.every, timezone=dt.UTC),
                args=[job.name],
                id=job.name,
                name=job.name,
            )
        scheduler.start()
        self._scheduler = scheduler

    def stop(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let running jobs finish (their leases are released)."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        for job in self.jobs.values():
            if job.on_stop is not None:
                job.on_stop()
        scheduler.shutdown(wait=wait)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._scheduler is not None
