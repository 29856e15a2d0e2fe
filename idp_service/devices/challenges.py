"""Issuing challenges, and accepting each one exactly once (the service half of every ceremony).

Issuing is stateless: a challenge is a signed statement, so nothing is stored
until it is answered. Answering *records* it: one ``INSERT`` keyed by the
challenge id, so a second answer collides with the first. That keeps the
single-use guarantee atomic across threads, processes and replicas sharing the
database, and lets anyone ask for a challenge without writing to the database.
A challenge this server never signed cannot get that far: its signature fails.

Every ceremony judges an opened answer in one order, :func:`accept_once`: single
use first, then the registry, then detection. Nothing that writes runs before the
challenge is recorded, so a replayed answer is refused before it can change
anything, and any refusal but detection's rolls the whole transaction back.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from idp_service.platform.db import dialect_insert
from idp_service.platform.models import Challenge as ChallengeRow
from idp_service.services import Services
from trust_protocol.challenge import Challenge, sign_challenge
from trust_protocol.errors import ProtocolError
from trust_protocol.response import (
    MAX_ENVELOPE_SIZE,
    RegisteredDevice,
    VerifiedResponse,
    check_registration,
    open_response,
)

CALLBACK_PATH = "/agent/v1/callback"


def timestamp(seconds: float) -> dt.datetime:
    """A protocol timestamp as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def issue(
    service: Services,
    purpose: str,
    binding: str,
    *,
    callback_path: str = CALLBACK_PATH,
    data: dict[str, Any] | None = None,
) -> tuple[str, Challenge]:
    """Create and sign a challenge; return its token and content. Writes nothing."""
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
    return sign_challenge(challenge, service.keys.signing_key), challenge


def consume(session: Session, challenge: Challenge, *, via: str, device_id: str) -> None:
    """Record the challenge as answered, or raise ``challenge_replayed``.

    Runs inside the caller's transaction: if the caller later fails and rolls
    back, the challenge is not burned. Expiry was already checked against the
    signed ``expires_at`` when the response was opened.
    """
    insert = dialect_insert(session.get_bind().dialect.name)
    result = session.execute(
        insert(ChallengeRow)
        .values(
            id=challenge.id_text,
            purpose=challenge.purpose,
            binding=challenge.binding,
            issued_at=timestamp(challenge.issued_at),
            expires_at=timestamp(challenge.expires_at),
            consumed_at=dt.datetime.now(dt.UTC),
            consumed_via=via,
            device_id=device_id,
            result="ok",
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(ChallengeRow.id)
    ).first()
    if result is None:
        raise ProtocolError("challenge_replayed")


def accept_once(
    session: Session,
    verified: VerifiedResponse,
    *,
    via: str,
    registry: Callable[[], RegisteredDevice | None] | None = None,
    judge: Callable[[], ProtocolError | None] | None = None,
) -> None:
    """Judge an opened answer in the order every ceremony shares (docs/protocol.md §7.2).

    1. **Single use**: record the challenge as answered (:func:`consume`), or raise
       ``challenge_replayed``. Nothing has been written before this point, so a
       replayed answer changes nothing, whoever sent it and whatever it claims.
    2. **Registry**: ``registry()`` reads (and may lock and touch) the device's
       record; :func:`~trust_protocol.response.check_registration` judges it, the
       one state table of sign-in and report.
    3. **Detection**: ``judge()`` may flag the device and, by policy, change its
       state. When it returns a refusal, that decision is committed (flag, state
       change, and the challenge recorded with the refusal as its result, so the
       same answer cannot be judged twice) and the refusal is raised.

    Runs in the caller's transaction. Any other refusal propagates and the caller
    rolls back: the challenge is not burned and nothing else is written.
    """
    consume(session, verified.challenge, via=via, device_id=verified.device_id)
    if registry is not None:
        check_registration(verified, registry())
    if judge is None:
        return
    refusal = judge()
    if refusal is None:
        return
    session.execute(
        update(ChallengeRow)
        .where(ChallengeRow.id == verified.challenge.id_text)
        .values(result=refusal.code)
        .execution_options(synchronize_session=False)
    )
    session.commit()  # the detection's decision stands; the answer does not
    raise refusal


def open_answer(
    service: Services, envelope: bytes, purpose: str, *, max_size: int = MAX_ENVELOPE_SIZE
) -> VerifiedResponse:
    """Open and verify an answer to one of this server's ``purpose`` challenges, now.

    Every ceremony's service half starts here: the server's keys, its clock and
    its clock-skew bound, applied the same way everywhere.
    """
    return open_response(
        envelope,
        verify_key=service.keys.verify_key,
        box_key_for=service.keys.challenge_box_secret,
        now=time.time(),
        purposes=(purpose,),
        max_skew=service.settings.max_clock_skew,
        max_size=max_size,
    )
