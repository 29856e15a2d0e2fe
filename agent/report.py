"""Report ceremony, agent half: send this device's posture facts, signed and boxed.

The service halves are ``idp_service/devices/report_v2.py`` and ``report.py``.
When the service advertises report v2 (``GET /agent/v1/server`` carries its
signed report box key), a report is **one request**: signed by the device key,
boxed to the service, with a counter that strictly increases and, beyond the
document's digest, only the sections that changed since the last document the
service acknowledged (:class:`ReportState` keeps the counter, that digest and
that document, 0600 in the state directory). A service that answers
``report_resync`` gets the whole document at once; one that answers
``report_counter_stale`` (the agent's state was restored from a backup) gets a
counter reset, a challenge-based exchange (``docs/protocol.md`` §16). Otherwise
(v1) each report answers a fresh ``report`` challenge bound to this device. Either
way the agent sends facts only; the service evaluates them.

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
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__, http_client, platform_ids
from agent.state import Enrollment
from trust_protocol import encoding, report_v2
from trust_protocol.challenge import parse_challenge
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d, b64e
from trust_protocol.errors import ProtocolError
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


STATE_FILE = "report_state.json"
ACKED_FILE = "report_acked.json"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, 0600, flushed to disk."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ReportState:
    """Report v2 state: the counter, the acknowledged digest and document, the box key.

    Kept in ``report_state.json`` (small, rewritten before every report, so that a
    counter is never used twice) and ``report_acked.json`` (the acknowledged
    document, rewritten when it changes). Without a ``state_dir`` it lives in
    memory only.
    """

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self.counter = 0
        self.digest: str | None = None  # what the service said it holds
        self.acked: dict[str, Any] | None = None  # that document, when it is ours
        self.box_key: bytes | None = None
        if state_dir is None:
            return
        try:
            data = json.loads((state_dir / STATE_FILE).read_text())
            self.counter = int(data.get("counter", 0))
            self.digest = data.get("digest")
            key = data.get("box_key")
            self.box_key = b64d(key, length=32) if isinstance(key, str) else None
        except (OSError, ValueError, TypeError, ProtocolError):
            pass
        try:
            acked = json.loads((state_dir / ACKED_FILE).read_text())
            document = acked.get("document")
            if isinstance(document, dict) and report_v2.document_digest(document) == self.digest:
                self.acked = document
        except (OSError, ValueError, TypeError, AttributeError):
            pass

    def save(self) -> None:
        """Write the counter, digest and box key (before each report is sent)."""
        if self.state_dir is None:
            return
        data = {
            "counter": self.counter,
            "digest": self.digest,
            "box_key": b64e(self.box_key) if self.box_key else None,
        }
        _write_private(self.state_dir / STATE_FILE, json.dumps(data).encode())

    def acknowledge(self, digest: str | None, document: dict[str, Any] | None) -> None:
        """The service holds ``digest`` (``document`` when it is the one just sent)."""
        changed = document is not None and digest != self.digest
        self.digest = digest
        self.acked = document
        if self.state_dir is not None and changed:
            _write_private(self.state_dir / ACKED_FILE, encoding.dumps({"document": document}))
        self.save()

    def next_counter(self) -> int:
        """Advance and persist the counter; the value to send."""
        self.counter += 1
        self.save()
        return self.counter


def discover_v2(enrollment: Enrollment, *, timeout: float = 15.0) -> bytes | None:
    """The service's report box key when it speaks report v2 (checked under the pinned key)."""
    try:
        info = http_client.request(
            "GET", enrollment.server_url + "/agent/v1/server", timeout=timeout
        )
        advert = info.get("report")
        if advert is None:
            return None
        return report_v2.open_report_key(advert, enrollment.verify_key)
    except (http_client.ServerError, ProtocolError) as exc:
        log.info("report v2 not available (%s); using v1", getattr(exc, "code", exc))
        return None


def _send_v2(
    enrollment: Enrollment,
    keys: DeviceKeys,
    rstate: ReportState,
    document: dict[str, Any],
    volatile: dict[str, Any],
    *,
    full: bool,
    timeout: float,
) -> report_v2.Ack:
    """Send one v2 report (the smallest that fits) and check its acknowledgement."""
    assert rstate.box_key is not None  # noqa: S101 - callers discover it first
    body = report_v2.make_report(
        device_id=keys.device_id,
        counter=rstate.next_counter(),
        clock=time.time(),
        agent_version=__version__,
        platform=platform_ids.platform_json(),
        document=document,
        volatile=volatile,
        acked=rstate.acked,
        acked_digest=rstate.digest,
        full=full,
    )
    path = "/agent/v2/report/full" if body.kind == "full" else "/agent/v2/report"
    sealed = report_v2.seal_report(body, keys.signing_key, rstate.box_key)
    answer = http_client.request("POST", enrollment.server_url + path, sealed, timeout=timeout)
    try:
        ack = report_v2.open_ack(answer, enrollment.verify_key)
    except ProtocolError as exc:
        raise ReportError(exc.code, "the service's acknowledgement does not verify") from None
    if ack.device_id != keys.device_id or ack.counter != body.counter:
        raise ReportError("bad_ack", "the acknowledgement is for another report")
    rstate.acknowledge(ack.digest, document if ack.digest == body.digest else None)
    return ack


def reset_counter(
    enrollment: Enrollment, keys: DeviceKeys, rstate: ReportState, *, timeout: float = 15.0
) -> report_v2.Ack:
    """Re-establish the counter: answer a ``report`` challenge, learn what the service holds."""
    base = enrollment.server_url
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
        data={"counter_reset": True},
    )
    answer = http_client.request(
        "POST",
        base + "/agent/v2/report/reset",
        seal_response(body, challenge, keys),
        timeout=timeout,
    )
    try:
        ack = report_v2.open_ack(answer, enrollment.verify_key)
    except ProtocolError as exc:
        raise ReportError(exc.code, "the service's acknowledgement does not verify") from None
    if ack.device_id != keys.device_id or ack.challenge != b64e(challenge.id):
        raise ReportError("bad_ack", "the acknowledgement is for another exchange")
    rstate.counter = max(rstate.counter, ack.counter)
    keep = rstate.acked if rstate.digest == ack.digest else None
    rstate.acknowledge(ack.digest, keep)
    log.warning("report counter re-established at %d (state restored?)", rstate.counter)
    return ack


def report_v2_once(
    enrollment: Enrollment,
    keys: DeviceKeys,
    facts: dict[str, Any],
    rstate: ReportState,
    *,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """One v2 report, with resynchronisation and counter reset; return the ack's fields."""
    document, volatile = report_v2.split_volatile(facts)
    full = False
    for _attempt in range(3):
        try:
            ack = _send_v2(enrollment, keys, rstate, document, volatile, full=full, timeout=timeout)
            return {
                "status": "accepted",
                "next_report_in": ack.next_report_in,
                "osquery_queries": ack.osquery_queries,
                "digest": ack.digest,
                "counter": ack.counter,
            }
        except http_client.ServerError as exc:
            if exc.code == "report_resync":
                full = True  # the service lost track of our document: send it whole, now
                continue
            if exc.code == "report_counter_stale":
                reset_counter(enrollment, keys, rstate, timeout=timeout)
                continue
            raise
    raise ReportError("report_resync", "the service did not take the document")


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
        state_dir: Path | None = None,
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
        # Report v2 state, and whether the service speaks it (checked at the first report).
        self.state_dir = state_dir
        self.report_state: ReportState | None = None
        self._v2_checked = False

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
            reply = self._report(facts)
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

    def _report(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Report in v2 when the service advertises it, in v1 otherwise."""
        try:
            # v2 keeps its counter in the state directory; without one, v1 (as before).
            if not self._v2_checked and self.state_dir is not None:
                box_key = discover_v2(self.enrollment)
                self._v2_checked = True
                if box_key is not None:
                    self.report_state = ReportState(self.state_dir)
                    self.report_state.box_key = box_key
            if self.report_state is not None:
                try:
                    return report_v2_once(self.enrollment, self.keys, facts, self.report_state)
                except http_client.ServerError as exc:
                    if exc.status != 404:
                        raise
                    self.report_state = None  # the service no longer speaks v2: fall back
            return report_once(self.enrollment, self.keys, facts)
        except http_client.ServerError as exc:
            if exc.code == "unreachable":
                self._v2_checked = False  # ask again once it is back (it may have changed)
            raise ReportError(exc.code, exc.message) from None

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
