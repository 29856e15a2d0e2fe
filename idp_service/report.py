"""Report ceremony, service half: accept a device's posture facts, then judge them here.

The agent half is ``agent/report.py``. A report answers a ``report`` challenge
bound to the reporting device (``binding = "device:" + id``), so it cannot be
replayed or sent on behalf of another device. The service stores the facts
(latest plus a bounded history) and evaluates the posture checks itself at
ingest; the agent never sends a verdict.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import select, update

from idp_service import audit, challenges
from idp_service.context import ServiceContext
from idp_service.errors import ApiError
from idp_service.storage.db import upsert
from idp_service.storage.models import Device, utcnow
from idp_service.storage.posture_tables import FACTS_HISTORY, DeviceFacts, DeviceFactsHistory
from trust_protocol.errors import ProtocolError
from trust_protocol.response import check_binding, open_response

MAX_REPORT = 1024 * 1024
REFUSED_STATES = {"revoked": "device_revoked", "denied": "device_denied"}


def binding_for(device_id: str) -> str:
    """The challenge binding of a device's reports."""
    return "device:" + device_id


def issue_challenge(service: ServiceContext, device_id: object) -> tuple[str, int]:
    """A ``report`` challenge for ``device_id`` (stateless; nothing is written)."""
    if not isinstance(device_id, str) or not 0 < len(device_id) <= 64:
        raise ApiError("malformed", 'send {"device_id": "<this device\'s id>"}')
    token, challenge = challenges.issue(
        service, "report", binding_for(device_id), callback_path="/agent/v1/report"
    )
    return token, challenge.expires_at


def _collected_at(facts: dict[str, Any]) -> dt.datetime | None:
    value = facts.get("collected_at")
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def ingest(
    service: ServiceContext, envelope: bytes, *, remote_addr: str | None = None
) -> dict[str, Any]:
    """Verify a report and store its facts; return what the agent should do next."""
    try:
        verified = open_response(
            envelope,
            verify_key=service.keys.verify_key,
            box_key_for=service.keys.challenge_box_secret,
            now=time.time(),
            purposes=("report",),
            max_skew=service.settings.max_clock_skew,
            max_size=MAX_REPORT,
        )
        check_binding(verified, binding_for(verified.device_id))
        facts = verified.data.get("facts")
        if not isinstance(facts, dict):
            raise ProtocolError("malformed", "a report carries data.facts, an object")
        with service.db.session() as session:
            device = session.execute(
                select(Device.sign_key, Device.state, Device.user_id).where(
                    Device.id == verified.device_id
                )
            ).first()
            if device is None:
                raise ProtocolError("device_unknown")
            import hmac

            if not hmac.compare_digest(device.sign_key, verified.sign_key):
                raise ProtocolError("device_key_mismatch")
            if device.state in REFUSED_STATES:
                raise ProtocolError(REFUSED_STATES[device.state])
            challenges.consume(
                session, verified.challenge, via="report", device_id=verified.device_id
            )
            now = utcnow()
            seq = (
                session.execute(
                    select(DeviceFacts.report_seq).where(
                        DeviceFacts.device_id == verified.device_id
                    )
                ).scalar()
                or 0
            ) + 1
            collected = _collected_at(facts)
            row = {
                "device_id": verified.device_id,
                "report_seq": seq,
                "collected_at": collected,
                "received_at": now,
                "facts": facts,
            }
            upsert(
                session,
                DeviceFacts,
                {**row, "schema_version": str(facts.get("schema_version", ""))[:16]},
                ["device_id"],
            )
            upsert(
                session,
                DeviceFactsHistory,
                {**row, "slot": seq % FACTS_HISTORY},
                ["device_id", "slot"],
            )
            session.execute(
                update(Device)
                .where(Device.id == verified.device_id)
                .values(
                    last_seen=now,
                    last_clock_skew=verified.clock_skew,
                    agent_version=verified.agent_version,
                )
                .execution_options(synchronize_session=False)
            )
            evaluation = _evaluate(service, session, verified.device_id, device.user_id, facts)
        return {
            "status": "accepted",
            "next_report_in": service.settings.report_interval,
            "osquery_queries": service.settings.osquery_queries,
            **evaluation,
        }
    except (ProtocolError, ApiError) as exc:
        audit.record_separately(
            service.db, "device.report", "rejected", code=exc.code, remote_addr=remote_addr
        )
        raise


def _evaluate(
    service: ServiceContext, session: Any, device_id: str, user_id: str, facts: dict[str, Any]
) -> dict[str, Any]:
    """Evaluate the posture checks on fresh facts (filled in by the posture surface)."""
    hook = service.extras.get("posture_ingest")
    if hook is None:
        return {}
    return hook(session, device_id, user_id, facts)
