"""The SAML surface's writes: the SSO endpoint's two statements, and the Responses kept
for a repeated ``/continue``.

``/saml/sso`` reads the SP (one statement), checks the request in Python, then
records the request ID as used and starts the login transaction in one write:
the replay record and the new transaction commit together or not at all, and a
replayed ID (the ``(SP, request ID)`` unique key, ``ON CONFLICT DO NOTHING``)
writes nothing. Statements go to the driver connection (``platform/driver.py``).

The completer (``saml/completer.py``) keeps each Response it issued
(``saml_issued_responses``) in the same write as its claim on the transaction:
:func:`claim` and :func:`keep_issued` for a refusal (a success is claimed by
``signin/store.complete_verified``), :func:`issued` and :func:`drop_issued` to
deliver it again or forget it. Expired request IDs and Responses are deleted by
the expiry job (``idp_service/expiry.py``), not on the request path: every read
checks the expiry first, so a row past it only waits for the job.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, update
from sqlalchemy.orm import Session

from idp_service.platform.driver import detached_loader, driver, sqlite_time
from idp_service.platform.models import LoginTransaction
from idp_service.saml.tables import IssuedResponse, ServiceProvider

# metadata_xml is kept for re-import only; the sign-in path never reads it.
_SP_NAMES, _load_sp = detached_loader(ServiceProvider, skip=("metadata_xml",))
_FIND_SP = f"SELECT {', '.join(_SP_NAMES)} FROM saml_service_providers WHERE entity_id = "  # noqa: S608 - names from the model

_PG_ACCEPT = """
    WITH seen AS (
        INSERT INTO saml_seen_requests (sp_entity_id, request_id, expires_at)
        VALUES (%(sp)s, %(request_id)s, %(seen_until)s)
        ON CONFLICT (sp_entity_id, request_id) DO NOTHING
        RETURNING id
    )
    INSERT INTO login_transactions (id, status, context, created_at, expires_at)
    SELECT %(txn_id)s, 'pending', CAST(%(context)s AS json), %(now)s, %(expires_at)s FROM seen
"""
_SQLITE_SEEN = """
    INSERT INTO saml_seen_requests (sp_entity_id, request_id, expires_at)
    VALUES (:sp, :request_id, :seen_until)
    ON CONFLICT (sp_entity_id, request_id) DO NOTHING
"""
_SQLITE_TXN = """
    INSERT INTO login_transactions (id, status, context, created_at, expires_at)
    VALUES (:txn_id, 'pending', :context, :now, :expires_at)
"""


def find_sp(engine: Engine, entity_id: str) -> ServiceProvider | None:
    """The SP with exactly this entityID (a detached snapshot), or None."""
    with driver(engine) as (conn, is_pg):
        row = conn.execute(_FIND_SP + ("%s" if is_pg else "?"), (entity_id,)).fetchone()
    return _load_sp(row) if row is not None else None


def accept(
    engine: Engine,
    *,
    sp_entity_id: str,
    request_id: str,
    seen_until: dt.datetime,
    txn_id: str,
    context: dict[str, Any],
    expires_at: dt.datetime,
) -> bool:
    """Record the request ID as used and start the login transaction, in one write.

    False (and nothing written) when the SP already used this request ID.
    """
    params: dict[str, Any] = {
        "sp": sp_entity_id,
        "request_id": request_id,
        "seen_until": seen_until,
        "txn_id": txn_id,
        "context": json.dumps(context),
        "now": dt.datetime.now(dt.UTC),
        "expires_at": expires_at,
    }
    with driver(engine) as (conn, is_pg):
        if is_pg:
            return bool(conn.execute(_PG_ACCEPT, params).rowcount == 1)
        for name in ("seen_until", "now", "expires_at"):
            params[name] = sqlite_time(params[name])
        try:
            if conn.execute(_SQLITE_SEEN, params).rowcount != 1:
                conn.rollback()
                return False
            conn.execute(_SQLITE_TXN, params)
            conn.commit()
            return True
        except BaseException:
            conn.rollback()
            raise


def claim(session: Session, txn_id: str, now: dt.datetime) -> bool:
    """Mark the transaction completed unless it was already; True if this call did."""
    result = session.execute(
        update(LoginTransaction)
        .where(LoginTransaction.id == txn_id, LoginTransaction.completed_at.is_(None))
        .values(completed_at=now)
        .execution_options(synchronize_session=False)
    )
    return cast("CursorResult[Any]", result).rowcount == 1


def keep_issued(
    session: Session, txn_id: str, encoded: str, *, code: str | None, valid_until: dt.datetime
) -> None:
    """Keep the Response issued for a transaction (``code``: a refusal's), until ``valid_until``."""
    session.add(
        IssuedResponse(txn_id=txn_id, saml_response=encoded, code=code, valid_until=valid_until)
    )


def issued(session: Session, txn_id: str) -> IssuedResponse | None:
    """The Response kept for a transaction, if any."""
    return session.get(IssuedResponse, txn_id)


def drop_issued(session: Session, txn_id: str) -> None:
    """Forget the Response kept for a transaction."""
    session.execute(delete(IssuedResponse).where(IssuedResponse.txn_id == txn_id))
