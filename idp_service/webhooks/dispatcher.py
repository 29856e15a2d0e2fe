"""Deliver queued webhook events: claim due deliveries, POST them signed, retry with backoff.

:meth:`Dispatcher.drain` runs every ``DEVICETRUST_WEBHOOK_POLL`` seconds in every
service process, as a job of the runner ``create_app(background=True)`` starts
(``idp_service/platform/jobs.py``; without a lease: the claims below already
share the work between processes). Each pass:

1. **Claims** up to ``batch`` due deliveries of active endpoints with one
   ``UPDATE ... WHERE id IN (SELECT ... [FOR UPDATE SKIP LOCKED]) RETURNING``
   that moves their ``next_attempt_at`` a lease into the future. On PostgreSQL
   ``SKIP LOCKED`` lets replicas and gunicorn workers claim side by side; on
   SQLite the single statement runs under the database's write lock. A process
   that dies mid-send leaves its claims to lapse and be retried.
2. **Sends** each one (a few at a time) as a JSON ``POST`` with the Standard
   Webhooks headers, a short timeout, no redirects followed.
3. **Records** the outcome, guarded by the attempt count it claimed: a ``2xx``
   answer is *delivered*; anything else (other statuses, timeouts, refused
   connections) is a failure, retried after the next delay of
   ``DEVICETRUST_WEBHOOK_RETRY_DELAYS`` (plus up to 20 % jitter), and *failed*
   once the delays run out. A ``410 Gone`` fails the delivery at once and
   disables the endpoint.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from idp_service.platform import metrics
from idp_service.platform.config import Settings
from idp_service.platform.db import Database
from idp_service.platform.models import table_of, utcnow
from idp_service.webhooks import targets
from idp_service.webhooks.tables import WebhookDelivery, WebhookEndpoint
from trust_protocol import webhook_signature

log = logging.getLogger(__name__)
USER_AGENT = "devicetrust-webhooks/1"
MAX_ERROR = 200


@dataclass(frozen=True)
class Claim:
    """A delivery this process holds until its lease lapses."""

    id: int
    attempts: int
    event_id: str
    payload: dict[str, Any]
    url: str
    secret: str
    endpoint_id: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: an HTTP status, or an error (no status)."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


def body_of(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent and signed for ``payload``."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _short(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            return "timeout"
        text = str(reason.strerror if isinstance(reason, OSError) and reason.strerror else reason)
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:MAX_ERROR] or type(exc).__name__


def send(
    claim: Claim, timeout: float, now: float | None = None, *, allow_private: bool = False
) -> Outcome:
    """POST one delivery, signed; never raises. Only to public addresses unless
    ``allow_private`` (``targets.py``)."""
    if not claim.url.lower().startswith(("http://", "https://")):
        return Outcome(None, "not an http or https URL")
    try:
        body = body_of(claim.payload)
        stamp = int(time.time() if now is None else now)
        headers = webhook_signature.headers(claim.secret, claim.event_id, stamp, body)
        headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT})
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            claim.url, data=body, headers=headers, method="POST"
        )
        try:
            with targets.opener(allow_private).open(request, timeout=timeout) as resp:  # noqa: S310
                return Outcome(resp.status, None)
        except urllib.error.HTTPError as exc:
            exc.close()
            return Outcome(exc.code, f"HTTP {exc.code}")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return Outcome(None, _short(exc))
    except Exception as exc:  # noqa: BLE001 - any failure of one send is that delivery's
        return Outcome(None, _short(exc))


def next_delay(
    attempt: int, delays: tuple[float, ...], rng: random.Random | None = None
) -> float | None:
    """Seconds to wait after failed attempt number ``attempt`` (1-based); None: give up."""
    if attempt > len(delays):
        return None
    return delays[attempt - 1] * (1 + 0.2 * (rng or random).random())


def claim(db: Database, *, batch: int, lease: float, now: dt.datetime | None = None) -> list[Claim]:
    """Claim up to ``batch`` due deliveries of active endpoints (see the module docstring)."""
    now = now or utcnow()
    table = table_of(WebhookDelivery)
    due = (
        select(table.c.id)
        .where(
            table.c.status == "pending",
            table.c.next_attempt_at <= now,
            table.c.endpoint_id.in_(
                select(WebhookEndpoint.id).where(WebhookEndpoint.active.is_(True))
            ),
        )
        .order_by(table.c.next_attempt_at)
        .limit(batch)
    )
    if db.is_postgres:
        due = due.with_for_update(skip_locked=True)
    with db.session() as session:
        rows = session.execute(
            update(table)
            .where(table.c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=now + dt.timedelta(seconds=lease))
            .returning(
                table.c.id,
                table.c.attempts,
                table.c.event_id,
                table.c.payload,
                table.c.endpoint_id,
            )
        ).all()
        if not rows:
            return []
        endpoints = {
            e.id: e
            for e in session.execute(
                select(WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.secret).where(
                    WebhookEndpoint.id.in_({r.endpoint_id for r in rows})
                )
            )
        }
    return [
        Claim(
            r.id,
            r.attempts,
            r.event_id,
            r.payload,
            endpoints[r.endpoint_id].url,
            endpoints[r.endpoint_id].secret,
            r.endpoint_id,
        )
        for r in rows
        if r.endpoint_id in endpoints
    ]


def record(
    db: Database,
    held: Claim,
    outcome: Outcome,
    delays: tuple[float, ...],
    now: dt.datetime | None = None,
) -> str:
    """Store an attempt's outcome; return the delivery's new status.

    ``410 Gone`` means the receiver wants no more events (Standard Webhooks): the
    delivery fails at once and the endpoint is disabled, audited as ``webhook.disable``.
    """
    now = now or utcnow()
    gone = outcome.status_code == 410
    attempt = held.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempt,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "last_attempt_at": now,
    }
    if outcome.delivered:
        values.update(status="delivered", delivered_at=now, next_attempt_at=None)
    elif gone:
        values.update(status="failed", next_attempt_at=None)
    else:
        delay = next_delay(attempt, delays)
        if delay is None:
            values.update(status="failed", next_attempt_at=None)
        else:
            values.update(status="pending", next_attempt_at=now + dt.timedelta(seconds=delay))
    with db.session() as session:
        result = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == held.id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.attempts == held.attempts,
            )
            .values(**values)
        )
        applied = int(cast("CursorResult[Any]", result).rowcount)
        if gone and applied == 1:
            _disable_gone(session, held.endpoint_id, now)
    if applied == 1:
        metrics.webhook_delivery("retry" if values["status"] == "pending" else values["status"])
    return str(values["status"])


def _disable_gone(session: Session, endpoint_id: int, now: dt.datetime) -> None:
    from idp_service.platform import audit

    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or not endpoint.active:
        return
    endpoint.active = False
    endpoint.updated_at = now
    audit.record(
        session,
        "webhook.disable",
        "ok",
        actor="webhook-dispatcher",
        details={"endpoint_id": endpoint.id, "url": endpoint.url, "reason": "answered 410 Gone"},
    )


class Dispatcher:
    """Delivers due webhook events: :meth:`drain` is the job the runner calls every
    ``settings.webhook_poll`` seconds (``idp_service/schedule.py``), in every process."""

    def __init__(
        self, db: Database, settings: Settings, *, batch: int = 20, senders: int = 4
    ) -> None:
        self.db = db
        self.delays = settings.webhook_retry_delays
        self.timeout = settings.webhook_timeout
        self.allow_private = settings.webhook_allow_private
        self.poll = settings.webhook_poll
        self.batch = batch
        self.lease = settings.webhook_timeout + 30.0
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="webhook-send")
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop after the current pass (a draining :meth:`drain` returns after its batch)."""
        self._stop.set()
        self._pool.shutdown(wait=False)

    def run_once(self) -> int:
        """One pass: claim, send, record; return how many deliveries were attempted."""
        claims = claim(self.db, batch=self.batch, lease=self.lease)
        if not claims:
            return 0
        outcomes = list(
            self._pool.map(
                lambda c: send(c, self.timeout, allow_private=self.allow_private), claims
            )
        )
        for held, outcome in zip(claims, outcomes, strict=True):
            record(self.db, held, outcome, self.delays)
        return len(claims)

    def drain(self) -> int:
        """Passes until one claims less than a full batch (more may be due after a full
        one); return how many deliveries were attempted."""
        total = 0
        while not self._stop.is_set():
            done = self.run_once()
            total += done
            if done < self.batch:
                break
        return total
