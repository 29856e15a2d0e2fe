"""Group commit: concurrent writers in one process share one transaction and one flush.

Every verified sign-in ends in a small, durable write (``signin/store.py``).
Alone, each such write pays a full commit: a round trip and a WAL flush on
PostgreSQL, WAL frames written on SQLite. When several of the service's threads
finish their protocol checks at about the same time, their writes can share one
transaction instead, as databases themselves do with their own group commit:
the first thread to arrive becomes the *leader*, takes every write queued so far,
runs them together and commits once; the others wait for their result. Nobody
waits for a batch to fill: a thread that finds no leader runs at once, so a
single writer sees no extra latency, and batches form only while a commit is
already in flight.

Each write keeps its own meaning inside the batch: it is one guarded statement
(or a guarded group of statements) that either applies in full or not at all,
and nobody learns its outcome before the shared commit is durable. If the batch
fails as a whole (a deadlock with another process, a lost connection), each of
its writes is retried on its own, so one bad write never decides another's fate.

This module knows nothing of SQL: the caller supplies ``run_one`` and
``run_many``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

_PENDING = object()


class _Job(Generic[P, R]):
    __slots__ = ("params", "result", "error")

    def __init__(self, params: P) -> None:
        self.params = params
        self.result: object = _PENDING
        self.error: BaseException | None = None

    @property
    def pending(self) -> bool:
        return self.result is _PENDING and self.error is None


class GroupCommit(Generic[P, R]):
    """Run writes alone when the writer is alone, and in shared transactions when not.

    ``run_one(params)`` performs one write in its own transaction and returns its
    result. ``run_many(list_of_params)`` performs several in one transaction and
    returns their results in order, committing before it returns; if it raises,
    nothing of the batch may have been committed.
    """

    def __init__(
        self,
        run_one: Callable[[P], R],
        run_many: Callable[[Sequence[P]], Sequence[R]],
        *,
        max_batch: int = 64,
    ) -> None:
        self._run_one = run_one
        self._run_many = run_many
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Job[P, R]] = []
        self._leading = False
        self.batches = 0  # how many shared transactions ran (for tests and the bench)
        self.batched = 0  # how many writes went through them

    def submit(self, params: P) -> R:
        """Perform one write, possibly together with others'; return its result."""
        job: _Job[P, R] = _Job(params)
        with self._cond:
            self._queue.append(job)
        while True:
            with self._cond:
                while self._leading and job.pending:
                    self._cond.wait()
                if not job.pending:
                    break
                # Lead: take what is queued (this job among it, unless over max_batch;
                # then the loop leads again).
                self._leading = True
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _run(self, batch: list[_Job[P, R]]) -> None:
        if len(batch) > 1:
            try:
                results = self._run_many([job.params for job in batch])
            except Exception as exc:  # noqa: BLE001 - the batch failed as a whole; retry each alone
                # Only the kind: a driver's message may quote the values of the writes.
                log.info(
                    "a shared commit of %d writes failed (%s); each retried alone",
                    len(batch),
                    type(exc).__name__,
                )
            else:
                self.batches += 1
                self.batched += len(batch)
                for job, result in zip(batch, results, strict=True):
                    job.result = result
                return
        for job in batch:
            try:
                job.result = self._run_one(job.params)
            except BaseException as exc:  # noqa: BLE001 - handed to the job's own thread
                job.error = exc
