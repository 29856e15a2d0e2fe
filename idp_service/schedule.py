"""The service's periodic work: which jobs the runner runs, and how often.

A composition root like ``app.py``: it names each feature's periodic function
and its interval (settings), and :func:`runner` puts them on one
:class:`~idp_service.platform.jobs.JobRunner`. ``create_app(background=True)``
starts it in every service process; the leases make each run of an
exclusive job happen once across them.

=====================  ==========================================  =========
job                    what                                        exclusive
=====================  ==========================================  =========
``audit-seal``         chain new audit rows (every second)         yes
``audit-checkpoint``   sign a checkpoint when the chain grew       yes
                       (``DEVICETRUST_AUDIT_CHECKPOINT_INTERVAL``)
``stale-sweep``        flag or deny devices not seen for           yes
                       ``DEVICETRUST_STALE_AFTER``
                       (``DEVICETRUST_STALE_SWEEP_INTERVAL``)
``expiry-cleanup``     delete expired rows (``expiry.py``,         yes
                       ``DEVICETRUST_EXPIRY_CLEANUP_INTERVAL``)
``webhook-dispatch``   deliver due webhook events                  no: each
                       (``DEVICETRUST_WEBHOOK_POLL``)              delivery
                                                                   is claimed
=====================  ==========================================  =========
"""

from __future__ import annotations

import logging

from idp_service import expiry
from idp_service.devices.detection import sweep_stale
from idp_service.platform import audit_chain
from idp_service.platform.config import Settings
from idp_service.platform.db import Database
from idp_service.platform.jobs import Job, JobRunner
from idp_service.webhooks.dispatcher import Dispatcher

log = logging.getLogger(__name__)

SEAL_EVERY = 1.0  # seconds between audit seals


def _sweep(db: Database, settings: Settings) -> None:
    done = sweep_stale(db, settings)
    if done:
        log.info("staleness sweep: %d device(s) marked stale", len(done))


def jobs(db: Database, settings: Settings) -> list[Job]:
    """The service's periodic jobs on ``db``, at the intervals ``settings`` give."""
    dispatcher = Dispatcher(db, settings)
    return [
        # A short lease: a replica that died mid-seal holds up sealing for 30 s at most
        # (seal() takes its own lock, so a second sealer after that is safe).
        Job("audit-seal", lambda: audit_chain.seal(db), SEAL_EVERY, lease=30.0),
        Job(
            "audit-checkpoint",
            lambda: audit_chain.interval_checkpoint(db),
            settings.audit_checkpoint_interval,
        ),
        Job("stale-sweep", lambda: _sweep(db, settings), settings.stale_sweep_interval),
        Job("expiry-cleanup", lambda: expiry.clean_up(db), settings.expiry_cleanup_interval),
        Job(
            "webhook-dispatch",
            dispatcher.drain,
            settings.webhook_poll,
            exclusive=False,
            on_stop=dispatcher.stop,
        ),
    ]


def runner(db: Database, settings: Settings) -> JobRunner:
    """A runner of :func:`jobs` (not started)."""
    return JobRunner(db, jobs(db, settings))
