"""Issuing challenges and consuming them exactly once (the service half of every ceremony).

Single use is enforced by one conditional ``UPDATE`` on the challenge row, so it
holds across threads, processes and replicas sharing the database.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp_service.context import ServiceContext
from idp_service.storage.models import Challenge as ChallengeRow
from trust_protocol.challenge import Challenge, sign_challenge
from trust_protocol.encoding import b64e
from trust_protocol.errors import ProtocolError

CALLBACK_PATH = "/agent/v1/callback"


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def issue(
    service: ServiceContext,
    session: Session,
    purpose: str,
    binding: str,
    *,
    callback_path: str = CALLBACK_PATH,
    data: dict | None = None,
) -> tuple[str, Challenge]:
    """Create, store and sign a challenge; return its token and content."""
    settings = service.settings
    cid = secrets.token_bytes(16)
    now = int(time.time())
    challenge = Challenge(
        id=cid,
        purpose=purpose,
        issued_at=now,
        expires_at=now + settings.challenge_ttl,
        box_key=bytes(service.keys.challenge_box_key(cid).public_key),
        origins=settings.allowed_origins,
        callback=settings.public_url + callback_path,
        binding=binding,
        kid=service.keys.kid,
        data=data or {},
    )
    token = sign_challenge(challenge, service.keys.signing_key)
    session.add(
        ChallengeRow(
            id=b64e(cid),
            purpose=purpose,
            binding=binding,
            issued_at=_ts(challenge.issued_at),
            expires_at=_ts(challenge.expires_at),
        )
    )
    return token, challenge


def consume(session: Session, challenge: Challenge, *, via: str, device_id: str) -> None:
    """Mark the challenge answered, or raise ``challenge_replayed``/``_unknown``/``_expired``.

    Runs inside the caller's transaction: if the caller later fails and rolls
    back, the challenge is not burned.
    """
    now = dt.datetime.now(dt.UTC)
    cid = b64e(challenge.id)
    result = session.execute(
        update(ChallengeRow)
        .where(
            ChallengeRow.id == cid,
            ChallengeRow.consumed_at.is_(None),
            ChallengeRow.expires_at > now,
        )
        .values(consumed_at=now, consumed_via=via, device_id=device_id, result="ok")
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        return
    row = session.execute(
        select(ChallengeRow.consumed_at, ChallengeRow.expires_at).where(ChallengeRow.id == cid)
    ).first()
    if row is None:
        raise ProtocolError("challenge_unknown")
    if row.consumed_at is not None:
        raise ProtocolError("challenge_replayed")
    raise ProtocolError("challenge_expired")
