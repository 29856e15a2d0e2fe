"""The statements of the OpenID Connect provider: clients, codes and access tokens.

Only the provider's services call these. Redeeming a code is one conditional
``UPDATE ... WHERE used_at IS NULL AND expires_at > now`` (:func:`redeem_code`):
whichever replica's statement commits first wins, every other sees zero rows,
so a code is single use across replicas without a lock of our own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from idp_service.oidc.tables import OidcAccessToken, OidcAssertionJti, OidcClient, OidcCode
from idp_service.platform.db import dialect_insert


def get_client(session: Session, client_id: str) -> OidcClient | None:
    """The client row, or None."""
    return session.get(OidcClient, client_id)


def list_clients(session: Session) -> list[OidcClient]:
    """Every client, by client id."""
    return list(session.scalars(select(OidcClient).order_by(OidcClient.client_id)))


def add_client(session: Session, row: OidcClient) -> None:
    """Insert a client (the caller checked that the id is free)."""
    session.add(row)
    session.flush()


def remove_client(session: Session, row: OidcClient) -> None:
    """Delete a client and the access tokens issued to it."""
    session.execute(delete(OidcAccessToken).where(OidcAccessToken.client_id == row.client_id))
    session.delete(row)


def add_code(session: Session, row: OidcCode) -> None:
    """Store an authorization code (by hash)."""
    session.add(row)


def redeem_code(
    session: Session, code_hash: str, client_id: str, now: dt.datetime
) -> OidcCode | None:
    """Mark an unused, unexpired code of ``client_id`` used; the row, or None if refused.

    One conditional statement (see the module doc); on PostgreSQL a concurrent
    redeemer waits on the row lock, then finds ``used_at`` set.
    """
    claimed = _count(
        session.execute(
            update(OidcCode)
            .where(
                OidcCode.code_hash == code_hash,
                OidcCode.client_id == client_id,
                OidcCode.used_at.is_(None),
                OidcCode.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    if claimed != 1:
        return None
    return session.get(OidcCode, code_hash, populate_existing=True)


def find_code(session: Session, code_hash: str) -> OidcCode | None:
    """A code row by hash (the slow path of a refused redemption)."""
    return session.get(OidcCode, code_hash, populate_existing=True)


def revoke_tokens_of_code(session: Session, code_hash: str, now: dt.datetime) -> int:
    """Revoke every access token issued from a code; how many were live."""
    return _count(
        session.execute(
            update(OidcAccessToken)
            .where(OidcAccessToken.code_hash == code_hash, OidcAccessToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
    )


def revoke_tokens_of_user(session: Session, client_id: str, user_id: str, now: dt.datetime) -> int:
    """Revoke a user's access tokens at one client (RP-initiated logout)."""
    return _count(
        session.execute(
            update(OidcAccessToken)
            .where(
                OidcAccessToken.client_id == client_id,
                OidcAccessToken.user_id == user_id,
                OidcAccessToken.revoked_at.is_(None),
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
    )


def add_token(session: Session, row: OidcAccessToken) -> None:
    """Store an access token (by hash)."""
    session.add(row)


def live_token(session: Session, token_hash: str, now: dt.datetime) -> dict[str, Any] | None:
    """The claims of an unrevoked, unexpired access token of an enabled client, or None."""
    row = session.execute(
        select(OidcAccessToken.claims)
        .join(OidcClient, OidcClient.client_id == OidcAccessToken.client_id)
        .where(
            OidcAccessToken.token_hash == token_hash,
            OidcAccessToken.revoked_at.is_(None),
            OidcAccessToken.expires_at > now,
            OidcClient.enabled.is_(True),
        )
    ).first()
    return dict(row[0]) if row is not None else None


def spend_assertion(session: Session, row_id: str, client_id: str, expires_at: dt.datetime) -> bool:
    """Record a client assertion as used; False when it was used before (a copy).

    ``INSERT ... ON CONFLICT DO NOTHING`` on the primary key: of two uses, on any
    replica, exactly one inserts the row.
    """
    insert = dialect_insert(session.get_bind().dialect.name)
    stmt = (
        insert(OidcAssertionJti)
        .values(id=row_id, client_id=client_id, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return _count(session.execute(stmt)) == 1


def _count(result: object) -> int:
    """The rows a DML statement touched."""
    return int(cast("CursorResult[Any]", result).rowcount)
