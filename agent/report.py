"""Report ceremony, agent half: send this device's posture facts, signed and boxed.

The service half is ``idp_service/devices/report.py``. Each report answers a fresh
``report`` challenge bound to this device, so a report can be neither replayed
nor forged for another device. The agent sends facts only; the service
evaluates them (it never takes the agent's word for a verdict).

:class:`ReportScheduler` runs reports on an APScheduler schedule: every
``interval`` seconds as the service asks (5 minutes by default), with jitter so
a fleet does not report in lockstep, and exponential backoff while the service
is away. A ``report_interval`` in the agent's configuration (``ceiling``) makes
it report at least that often: the shorter of the two intervals wins, so a
device's configuration can never make its posture staler than the service asks.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from agent import __version__, http_client, platform_ids
from agent.state import Enrollment
from trust_protocol.challenge import parse_challenge
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.response import ResponseBody, seal_response

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 300.0
MIN_INTERVAL = 30.0
MAX_BACKOFF = 3600.0
JITTER = 0.1  # +-10 % of the interval


class ReportError(Exception):
    """A report was not accepted; ``code`` is the service's error code or ``unreachable``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def report_once(
    enrollment: Enrollment, keys: DeviceKeys, facts: dict[str, Any], *, timeout: float = 15.0
) -> dict[str, Any]:
    """Fetch a report challenge, answer it with ``facts``; return the service's reply."""
    base = enrollment.server_url
    try:
        issued = http_client.request(
            "POST",
            base + "/agent/v1/report/challenge",
            json.dumps({"device_id": keys.device_id}).encode(),
            timeout=timeout,
        )
        token = issued.get("challenge")
        challenge = parse_challenge(token, enrollment.verify_key)
        if challenge.purpose != "report" or challenge.binding != f"device:{keys.device_id}":
            raise ReportError("bad_challenge", "the service sent a challenge for something else")
        body = ResponseBody(
            challenge_token=token,
            device=keys.public_json(),
            platform=platform_ids.platform_json(),
            agent_version=__version__,
            agent_clock=time.time(),
            data={"facts": facts},
        )
        return http_client.request(
            "POST", base + "/agent/v1/report", seal_response(body, challenge, keys), timeout=timeout
        )
    except http_client.ServerError as exc:
        raise ReportError(exc.code, exc.message) from None


class ReportScheduler:
    """Collect and report on a schedule, with jitter and backoff; thread-safe ``report_now``."""

    def __init__(
        self,
        enrollment: Enrollment,
        keys: DeviceKeys,
        collect: Callable[[dict[str, str]], dict[str, Any]],
        *,
        interval: float = DEFAULT_INTERVAL,
        ceiling: float | None = None,
    ) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.enrollment = enrollment
        self.keys = keys
        self.collect = collect
        self.ceiling = ceiling
        self.interval = interval if ceiling is None else min(interval, ceiling)
        self.failures = 0
        self.last_result: dict[str, Any] | None = None
        # osquery queries the service asked for (name -> SQL), sent back with every reply.
        self.osquery_queries: dict[str, str] = {}
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(daemon=True)

    def set_ceiling(self, ceiling: float | None) -> None:
        """A new configured interval (None: follow the service); applies from the next report."""
        with self._lock:
            self.ceiling = ceiling
            if ceiling is not None:
                self.interval = min(self.interval, ceiling)

    def start(self, first_delay: float = 1.0) -> None:
        """Start the schedule; the first report goes out after ``first_delay`` seconds."""
        self._scheduler.start()
        self._schedule(first_delay)

    def shutdown(self) -> None:
        """Stop the schedule (a report in flight finishes)."""
        self._scheduler.shutdown(wait=False)

    def _schedule(self, delay: float) -> None:
        from apscheduler.triggers.date import DateTrigger

        run_at = time.time() + delay
        self._scheduler.add_job(
            self._run,
            trigger=DateTrigger(run_date=_as_datetime(run_at)),
            id="report",
            replace_existing=True,
        )

    def next_delay(self) -> float:
        """Seconds until the next report: the interval with jitter, or the backoff."""
        if self.failures:
            backoff = min(MAX_BACKOFF, MIN_INTERVAL * 2 ** (self.failures - 1))
            return backoff * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter
        return self.interval * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311

    def report_now(self) -> dict[str, Any]:
        """Collect and report at once (the login page's "recheck now"); raise on failure."""
        with self._lock:
            facts = self.collect(self.osquery_queries)
            reply = report_once(self.enrollment, self.keys, facts)
            self.failures = 0
            self.last_result = reply
            queries = reply.get("osquery_queries")
            if isinstance(queries, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in queries.items()
            ):
                self.osquery_queries = dict(queries)
            interval = reply.get("next_report_in")
            if isinstance(interval, int | float) and interval >= MIN_INTERVAL:
                self.interval = float(interval)
            if self.ceiling is not None:
                self.interval = min(self.interval, self.ceiling)
            return reply

    def _run(self) -> None:
        try:
            self.report_now()
            log.info("posture report accepted; next in about %.0f s", self.interval)
        except ReportError as exc:
            self.failures += 1
            log.warning("posture report failed (%s); retrying with backoff", exc.code)
        except Exception:  # noqa: BLE001 - a collector bug must not stop the schedule
            self.failures += 1
            log.exception("posture report failed")
        self._schedule(self.next_delay())


def _as_datetime(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)
