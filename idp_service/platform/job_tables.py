"""The job runner's leases (revision ``0017``): one row per periodic job.

A service process runs a job only after taking its row with one conditional
write (:mod:`idp_service.platform.jobs`): the row must be due
(``next_run_at`` passed) and free (no holder, or the holder's lease lapsed).
That is what makes each run happen once across replicas and gunicorn workers.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base


class JobLease(Base):
    """Who runs job ``name`` now (if anyone), and when it may next run."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))  # None: nobody is running it
    locked_until: Mapped[dt.datetime | None]  # a holder that died lets go at this time
    next_run_at: Mapped[dt.datetime]  # no run starts before this, on any replica
    last_started_at: Mapped[dt.datetime | None]
    last_finished_at: Mapped[dt.datetime | None]
    last_outcome: Mapped[str | None] = mapped_column(String(16))  # ok | error
