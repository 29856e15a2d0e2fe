"""Approve ceremony, agent half: show the codes that let a new device of this user in.

The service half is ``idp_service/devices/approve.py``. A trusted device fetches its
pending notices with a poll signed by its device key
(``trust_protocol/poll.py``); each notice is sealed to this device's box key
and signed by the service key pinned at enrollment (``trust_protocol/notice.py``),
so only this device can read the code and nobody else can forge one.

``devicetrust-agent approve`` prints them; inside ``devicetrust-agent run``,
:class:`ApprovalPoller` polls on an APScheduler schedule (every ~30 s with
jitter) and shows a desktop notification for each new request
(``agent/notify.py``). The code itself is never logged.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import VerifyKey

from agent import http_client
from agent.state import Enrollment
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d
from trust_protocol.errors import ProtocolError
from trust_protocol.notice import MAX_SEALED, Notice, open_notice
from trust_protocol.poll import sign_poll

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
JITTER = 0.2
MAX_NOTICES = 64
UNTRUSTED_INTERVAL = 600.0  # seconds between polls while this device is not trusted


@dataclass(frozen=True)
class Request:
    """One pending request as this device shows it."""

    id: str
    code: str
    expires_at: int
    hostname: str | None
    platform: str | None
    serial: str | None
    first_seen: int

    @classmethod
    def from_notice(cls, notice: Notice) -> Request:
        d = notice.device
        return cls(
            notice.id,
            notice.code,
            notice.expires_at,
            d["hostname"],
            d["platform"],
            d["serial"],
            d["first_seen"],
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``devicetrust-agent approve --json`` prints."""
        return {
            "request_id": self.id,
            "code": self.code,
            "expires_at": self.expires_at,
            "device": {
                "hostname": self.hostname,
                "platform": self.platform,
                "serial": self.serial,
                "first_seen": self.first_seen,
            },
        }


def open_all(
    sealed: list[object],
    box_key: PrivateKey,
    server_key: VerifyKey,
    device_id: str,
    *,
    now: float,
) -> list[Request]:
    """Open each sealed notice; refuse (and log the reason code of) any that fails."""
    out: list[Request] = []
    for item in sealed[:MAX_NOTICES]:
        try:
            raw = b64d(item, field="notice")
            if len(raw) > MAX_SEALED:
                raise ProtocolError("too_large", "notice is too large")
            notice = open_notice(raw, box_key, server_key, device_id, now=now)
        except ProtocolError as exc:
            log.warning("refused an approval notice (%s)", exc.code)
            continue
        out.append(Request.from_notice(notice))
    return out


def fetch(enrollment: Enrollment, keys: DeviceKeys, *, timeout: float = 10.0) -> list[Request]:
    """This device's pending approval requests; raises :class:`http_client.ServerError`."""
    body = json.dumps(sign_poll(keys.device_id, keys.signing_key, int(time.time()))).encode()
    reply = http_client.request(
        "POST", enrollment.server_url + "/agent/v1/notices", body, timeout=timeout
    )
    sealed = reply.get("notices") if isinstance(reply, dict) else None
    if not isinstance(sealed, list):
        raise http_client.ServerError("bad_response", "the service sent no notice list")
    return open_all(sealed, keys.box_key, enrollment.verify_key, keys.device_id, now=time.time())


def describe(req: Request) -> str:
    """One request in words, for the terminal (includes the code: shown, never logged)."""
    what = req.hostname or "a new device"
    extra = ", ".join(x for x in (req.platform, f"serial {req.serial}" if req.serial else "") if x)
    left = max(0, int(req.expires_at - time.time()))
    return (
        f"{what}{f' ({extra})' if extra else ''} asks to join as your device.\n"
        f"  code: {req.code}   (expires in {left // 60} min {left % 60} s)\n"
        "  Type the code on that device's sign-in page only if you are setting it up."
    )


class ApprovalPoller:
    """Poll for approval notices on a schedule; notify once per request and code."""

    def __init__(
        self,
        enrollment: Enrollment,
        keys: DeviceKeys,
        notifier: Any,
        *,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.enrollment = enrollment
        self.keys = keys
        self.notifier = notifier
        self.interval = interval
        self.seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(daemon=True)

    def start(self, first_delay: float = 1.0) -> None:
        """Start polling; the first poll after ``first_delay`` seconds."""
        self._scheduler.start()
        self._schedule(first_delay)

    def shutdown(self) -> None:
        """Stop polling."""
        self._scheduler.shutdown(wait=False)

    def _schedule(self, delay: float) -> None:
        import datetime as dt

        from apscheduler.triggers.date import DateTrigger

        run_at = dt.datetime.fromtimestamp(time.time() + delay, dt.UTC)
        self._scheduler.add_job(
            self._run, trigger=DateTrigger(run_date=run_at), id="approvals", replace_existing=True
        )

    def poll_once(self) -> list[Request]:
        """Fetch once; notify for requests (or codes) not notified yet; return the new ones."""
        with self._lock:
            found = fetch(self.enrollment, self.keys)
            fresh = [r for r in found if (r.id, r.code) not in self.seen]
            for req in fresh:
                self.seen.add((req.id, req.code))
                log.info("approval request %s for %s", req.id, req.hostname or "a new device")
                self.notifier.notify(
                    "A new device wants to join",
                    f"{req.hostname or 'A new device'}: enter code {req.code} on its sign-in page.",
                )
            return fresh

    def _run(self) -> None:
        delay = self.interval
        try:
            self.poll_once()
        except http_client.ServerError as exc:
            log.info("approval poll: %s", exc.code)
            if exc.code == "device_not_trusted":  # nothing for this device until it is trusted
                delay = max(delay, UNTRUSTED_INTERVAL)
        except Exception:  # noqa: BLE001 - a notifier bug must not stop the schedule
            log.exception("approval poll failed")
        self._schedule(delay * random.uniform(1 - JITTER, 1 + JITTER))  # noqa: S311
