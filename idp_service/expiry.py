"""Expiry clean-up: delete rows whose lifetime ended, as one periodic job of the service.

Many rows carry an expiry that the code checks on use (answered challenges,
sign-in transactions, enrollment codes, admin console sessions and bootstrap
tokens, the sealed codes of expired approval requests, rate-limit counters,
SAML request IDs and stored Responses, OpenID Connect codes, access tokens and
used client assertions). This job is the one path that deletes
them: the request path never does. :func:`clean_up` deletes them, oldest
first, in batches (short transactions, so a large backlog after an upgrade does
not hold a lock for long). It runs every ``DEVICETRUST_EXPIRY_CLEANUP_INTERVAL``,
once across replicas (``idp_service/schedule.py``).

Only rows that can no longer change an answer are deleted:

* rows that only guard against reuse or replay until their expiry (rate-limit
  windows, SAML request IDs, stored Responses, an expired request's sealed
  approval codes) go as soon as they expire: every use checks the expiry first;
* rows whose expiry people may still ask about (a sign-in link, an enrollment
  code, a console session, a bootstrap token) are kept :data:`GRACE` longer, so
  within that time the answer stays "expired" rather than "unknown". Used
  enrollment codes are kept (they record which device used them).

Answered challenges are kept as long as the sign-in transactions they verified.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, select

from idp_service.admin.tables import AdminBootstrapToken
from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.oidc.service import TOKEN_LIFETIME as OIDC_TOKEN_LIFETIME
from idp_service.oidc.tables import OidcAccessToken, OidcAssertionJti, OidcCode
from idp_service.platform.db import Database
from idp_service.platform.models import (
    Challenge,
    EnrollmentCode,
    LoginTransaction,
    table_of,
    utcnow,
)
from idp_service.platform.ratelimit_tables import RateLimitCounter
from idp_service.platform.session_tables import AdminSession
from idp_service.saml.tables import IssuedResponse, SeenRequest
from idp_service.upstream.tables import ReauthToken, UpstreamLogin

log = logging.getLogger(__name__)

GRACE = dt.timedelta(days=7)  # how long an expired row people may ask about is kept
BATCH = 5000  # rows per DELETE


@dataclass(frozen=True)
class Rule:
    """Rows of ``table`` matching ``expired(now)`` are deleted."""

    name: str
    table: Table
    expired: Any  # Callable[[dt.datetime], ColumnElement[bool]]


_t = table_of


RULES: tuple[Rule, ...] = (
    Rule(
        "rate_limit_counters",
        _t(RateLimitCounter),
        lambda now: RateLimitCounter.expires_at <= now.timestamp(),  # the limits clock: epoch
    ),
    Rule("saml_seen_requests", _t(SeenRequest), lambda now: SeenRequest.expires_at < now),
    Rule(
        "saml_issued_responses", _t(IssuedResponse), lambda now: IssuedResponse.valid_until <= now
    ),
    Rule(
        "approval_notices",
        _t(ApprovalNotice),
        lambda now: ApprovalNotice.request_id.in_(
            select(ApprovalRequest.id).where(ApprovalRequest.expires_at <= now)
        ),
    ),
    Rule(
        "login_transactions",
        _t(LoginTransaction),
        lambda now: LoginTransaction.expires_at < now - GRACE,
    ),
    Rule("challenges", _t(Challenge), lambda now: Challenge.expires_at < now - GRACE),
    Rule(
        "enrollment_codes",
        _t(EnrollmentCode),
        lambda now: (EnrollmentCode.used_at.is_(None)) & (EnrollmentCode.expires_at < now - GRACE),
    ),
    Rule("admin_sessions", _t(AdminSession), lambda now: AdminSession.expires_at < now - GRACE),
    Rule(
        "admin_bootstrap_tokens",
        _t(AdminBootstrapToken),
        lambda now: AdminBootstrapToken.expires_at < now - GRACE,
    ),
    # Upstream sign-in requests live no longer than their login transactions.
    Rule("upstream_logins", _t(UpstreamLogin), lambda now: UpstreamLogin.expires_at < now - GRACE),
    # Spent re-authentication tokens must stay until their family ends (a later use of one
    # is how a copy is caught); after the family's end every token of it is refused anyway.
    Rule("reauth_tokens", _t(ReauthToken), lambda now: ReauthToken.expires_at < now - GRACE),
    # An OpenID Connect code is kept while the tokens issued from it live, so that a
    # replayed code still finds them and revokes them; the tokens and the used client
    # assertions go when they expire (every use checks the expiry first).
    Rule(
        "oidc_codes",
        _t(OidcCode),
        lambda now: OidcCode.expires_at < now - OIDC_TOKEN_LIFETIME,
    ),
    Rule("oidc_access_tokens", _t(OidcAccessToken), lambda now: OidcAccessToken.expires_at <= now),
    Rule(
        "oidc_assertion_jtis", _t(OidcAssertionJti), lambda now: OidcAssertionJti.expires_at < now
    ),
)


def _delete_batch(db: Database, table: Table, where: ColumnElement[bool]) -> int:
    (key,) = table.primary_key.columns
    batch = select(key).where(where).limit(BATCH).scalar_subquery()
    with db.engine.begin() as conn:
        return int(conn.execute(delete(table).where(key.in_(batch))).rowcount)


def clean_up(db: Database, now: dt.datetime | None = None) -> dict[str, int]:
    """Delete every expired row the rules name; return how many per table (only non-zero)."""
    now = now or utcnow()
    deleted: dict[str, int] = {}
    for rule in RULES:
        where = rule.expired(now)
        while True:
            count = _delete_batch(db, rule.table, where)
            if count:
                deleted[rule.name] = deleted.get(rule.name, 0) + count
            if count < BATCH:
                break
    if deleted:
        log.info(
            "expiry clean-up deleted %s",
            ", ".join(f"{n} {name}" for name, n in deleted.items()),
        )
    return deleted
