"""A ``limits`` storage backend on the service's own database (SQLite or PostgreSQL).

Rate-limit counters must be shared by every gunicorn worker and every replica,
and a self-hosted install has no Redis: the database already is the one thing
they all share. This backend implements what the limits library's fixed-window
strategy needs (``incr``, ``get``, ``get_expiry``, ``clear``, ``reset``,
``check``), registered under the ``devicetrust-db://`` scheme; the service hands
it its engine through the storage options.

``incr`` is one statement, ``INSERT ... ON CONFLICT (key) DO UPDATE ...
RETURNING count`` (PostgreSQL, SQLite >= 3.35): a missing or expired counter
starts a new window at ``amount``, a live one grows by ``amount``, and the
database serialises concurrent increments of one key, so no two requests can
both see the last free slot. Expired rows are never read as live (every read
checks the window's end, and ``incr`` restarts an ended window in place), so the
expiry job (``idp_service/expiry.py``) deletes them, not the request path. On
PostgreSQL an increment commits without waiting for its WAL flush
(``synchronous_commit = off`` for that transaction only): after a crash a counter
may be a little low, never wrong in a way that matters, and requests don't
queue behind the disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from limits.storage import Storage
from sqlalchemy import Engine, bindparam, case, delete, select
from sqlalchemy.exc import SQLAlchemyError

from idp_service.platform.db import Upsert
from idp_service.platform.models import table_of
from idp_service.platform.ratelimit_tables import RateLimitCounter

log = logging.getLogger(__name__)

SCHEME = "devicetrust-db"

_table = table_of(RateLimitCounter)


def _window(ins: Any) -> dict[str, Any]:
    """On a conflict: a counter whose window ended starts again; a live one grows."""
    ended = _table.c.expires_at <= bindparam("now")
    return {
        "count": case((ended, ins.excluded.count), else_=_table.c.count + ins.excluded.count),
        "expires_at": case((ended, ins.excluded.expires_at), else_=_table.c.expires_at),
    }


# The increment, built once per dialect with bound parameters (its compiled form
# is then cached by SQLAlchemy, not rebuilt for every request).
_INCR = Upsert(
    _table,
    ["key"],
    set_=_window,
    values={
        "key": bindparam("key"),
        "count": bindparam("amount"),
        "expires_at": bindparam("expires_at"),
    },
    returning=[_table.c.count],
)


class DatabaseStorage(Storage):
    """Fixed-window counters in the ``rate_limit_counters`` table."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        if engine is None:
            raise ValueError(f"{SCHEME}:// needs the service's engine (storage option 'engine')")
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.engine = engine
        self.clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._incr = _INCR.statement(engine.dialect.name)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key``'s counter (a new window of ``expiry`` seconds if
        there is none or it ended) and return the count, in one atomic statement."""
        now = self.clock()
        params = {"key": key, "amount": amount, "expires_at": now + expiry, "now": now}
        with self.engine.begin() as conn:
            if self._postgres:
                # A counter lost in a crash costs nothing but a few free requests:
                # don't make every request wait for its own WAL flush.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            count = conn.execute(self._incr, params).scalar_one()
        return int(count)

    def get(self, key: str) -> int:
        """The count in ``key``'s current window (0 if it has none)."""
        with self.engine.connect() as conn:
            count = conn.execute(
                select(_table.c.count).where(
                    _table.c.key == key, _table.c.expires_at > self.clock()
                )
            ).scalar_one_or_none()
        return int(count or 0)

    def get_expiry(self, key: str) -> float:
        """When ``key``'s current window ends (now if it has none)."""
        now = self.clock()
        with self.engine.connect() as conn:
            expires_at = conn.execute(
                select(_table.c.expires_at).where(_table.c.key == key, _table.c.expires_at > now)
            ).scalar_one_or_none()
        return float(expires_at) if expires_at is not None else now

    def check(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        """Delete every counter; returns how many there were."""
        with self.engine.begin() as conn:
            return conn.execute(delete(_table)).rowcount

    def clear(self, key: str) -> None:
        """Forget ``key``'s counter."""
        with self.engine.begin() as conn:
            conn.execute(delete(_table).where(_table.c.key == key))

    def sweep(self, now: float | None = None) -> int:
        """Delete the counters whose window ended; returns how many."""
        when = self.clock() if now is None else now
        with self.engine.begin() as conn:
            return conn.execute(delete(_table).where(_table.c.expires_at <= when)).rowcount
