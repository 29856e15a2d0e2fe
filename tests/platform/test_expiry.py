"""The expiry clean-up deletes exactly the rows whose lifetime (plus grace) ended."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from idp_service import expiry
from idp_service.admin.tables import AdminBootstrapToken, AdminSession
from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.directory import users
from idp_service.platform.db import Database
from idp_service.platform.models import (
    Challenge,
    Device,
    EnrollmentCode,
    LoginTransaction,
    utcnow,
)
from idp_service.platform.ratelimit_tables import RateLimitCounter
from idp_service.saml.tables import IssuedResponse, SeenRequest

HOUR = dt.timedelta(hours=1)


def _fill(db: Database, now: dt.datetime) -> None:
    """For every rule: one row just past its expiry (plus grace) and one just before."""
    old, live = now - expiry.GRACE - HOUR, now - expiry.GRACE + HOUR  # for rows with grace
    with db.session() as s:
        user = users.create(s, "ada@example.com", actor="test")
        s.flush()
        s.add_all(
            [
                Device(id=f"d{i}", user_id=user.id, state="trusted", sign_key=b"k" * 32,
                       box_key=b"b" * 32)
                for i in (1, 2)
            ]
        )  # fmt: skip
        s.add_all(
            [
                RateLimitCounter(key="gone", count=1, expires_at=(now - HOUR).timestamp()),
                RateLimitCounter(key="kept", count=1, expires_at=(now + HOUR).timestamp()),
                SeenRequest(sp_entity_id="sp", request_id="gone", expires_at=now - HOUR),
                SeenRequest(sp_entity_id="sp", request_id="kept", expires_at=now + HOUR),
            ]
        )
        for name, expires in (("gone", old), ("kept", live), ("fresh", now + HOUR)):
            s.add(LoginTransaction(id=f"txn-{name}", status="pending", expires_at=expires))
            s.add(
                Challenge(id=f"ch-{name}", purpose="login", binding=f"txn-{name}",
                          issued_at=expires - HOUR, expires_at=expires, consumed_at=expires)
            )  # fmt: skip
            s.add(AdminSession(id=f"as-{name}", via="device", user_name="ada", expires_at=expires))
            s.add(AdminBootstrapToken(token_hash=f"bt-{name}", expires_at=expires))
            s.add(EnrollmentCode(code_hash=f"ec-{name}", user_id=user.id, expires_at=expires))
        # A used code is kept however old: it records which device used it.
        s.add(EnrollmentCode(code_hash="ec-used", user_id=user.id, expires_at=old,
                             used_at=old - HOUR, device_id="d1"))  # fmt: skip
        s.flush()
        s.add_all(
            [
                IssuedResponse(txn_id="txn-fresh", saml_response="x", valid_until=now - HOUR),
                IssuedResponse(txn_id="txn-kept", saml_response="x", valid_until=now + HOUR),
            ]
        )
        for name, expires in (("gone", now - HOUR), ("kept", now + HOUR)):
            s.add(ApprovalRequest(id=f"ar-{name}", device_id="d2", user_id=user.id,
                                  status="open", max_attempts=5, expires_at=expires))  # fmt: skip
            s.flush()
            s.add(ApprovalNotice(request_id=f"ar-{name}", device_id="d1", code_mac="m",
                                 sealed=b"s"))  # fmt: skip


def _left(db: Database, column) -> list:  # noqa: ANN001
    with db.session() as s:
        return sorted(s.scalars(select(column)).all())


def test_clean_up_deletes_only_expired_rows(migrated_url):
    db = Database(migrated_url)
    try:
        now = utcnow()
        _fill(db, now)
        deleted = expiry.clean_up(db, now=now)
        assert deleted == {
            "rate_limit_counters": 1,
            "saml_seen_requests": 1,
            "saml_issued_responses": 1,
            "approval_notices": 1,
            "login_transactions": 1,
            "challenges": 1,
            "enrollment_codes": 1,
            "admin_sessions": 1,
            "admin_bootstrap_tokens": 1,
        }
        assert _left(db, RateLimitCounter.key) == ["kept"]
        assert _left(db, SeenRequest.request_id) == ["kept"]
        assert _left(db, IssuedResponse.txn_id) == ["txn-kept"]
        assert _left(db, LoginTransaction.id) == ["txn-fresh", "txn-kept"]
        assert _left(db, Challenge.id) == ["ch-fresh", "ch-kept"]
        assert _left(db, AdminSession.id) == ["as-fresh", "as-kept"]
        assert _left(db, AdminBootstrapToken.token_hash) == ["bt-fresh", "bt-kept"]
        assert _left(db, EnrollmentCode.code_hash) == ["ec-fresh", "ec-kept", "ec-used"]
        with db.session() as s:  # the expired request stays (its history); its codes go
            assert s.scalar(select(func.count()).select_from(ApprovalRequest)) == 2
            assert s.scalars(select(ApprovalNotice.request_id)).all() == ["ar-kept"]
        assert expiry.clean_up(db, now=now) == {}  # nothing more to do
    finally:
        db.dispose()


def test_clean_up_works_through_a_backlog_in_batches(migrated_url, monkeypatch):
    monkeypatch.setattr(expiry, "BATCH", 3)
    db = Database(migrated_url)
    try:
        now = utcnow()
        with db.session() as s:
            s.add_all(
                SeenRequest(sp_entity_id="sp", request_id=f"r{i}", expires_at=now - HOUR)
                for i in range(10)
            )
        assert expiry.clean_up(db, now=now) == {"saml_seen_requests": 10}
        assert _left(db, SeenRequest.request_id) == []
    finally:
        db.dispose()


def test_clean_up_keeps_an_oidc_code_while_its_tokens_live(migrated_url):
    """A used code stays while tokens issued from it may live (a replay must find them to
    revoke them); expired access tokens and used client assertions go at their expiry."""
    import datetime as dt

    from idp_service.oidc.service import TOKEN_LIFETIME
    from idp_service.oidc.tables import OidcAccessToken, OidcAssertionJti, OidcCode

    db = Database(migrated_url)
    try:
        now = utcnow()

        def code(name: str, expired_ago: dt.timedelta) -> OidcCode:
            return OidcCode(
                code_hash=name,
                client_id="c",
                txn_id="t-" + name,
                redirect_uri="https://rp.example/cb",
                claims={},
                scope="openid",
                user_id="u",
                device_id="d",
                issued_at=now - expired_ago - dt.timedelta(seconds=60),
                expires_at=now - expired_ago,
                used_at=now - expired_ago - dt.timedelta(seconds=30),
            )

        def token(name: str, expires_at: dt.datetime) -> OidcAccessToken:
            return OidcAccessToken(
                token_hash=name,
                code_hash=None,
                client_id="c",
                user_id="u",
                claims={},
                issued_at=now - TOKEN_LIFETIME,
                expires_at=expires_at,
            )

        with db.session() as s:
            s.add_all(
                [
                    code("code-old", TOKEN_LIFETIME + dt.timedelta(seconds=1)),
                    code("code-tokens-live", TOKEN_LIFETIME - dt.timedelta(seconds=5)),
                    token("tok-expired", now - dt.timedelta(seconds=1)),
                    token("tok-live", now + dt.timedelta(seconds=30)),
                    OidcAssertionJti(
                        id="jti-spent", client_id="c", expires_at=now - dt.timedelta(seconds=1)
                    ),
                    OidcAssertionJti(
                        id="jti-live", client_id="c", expires_at=now + dt.timedelta(seconds=60)
                    ),
                ]
            )
        deleted = expiry.clean_up(db, now=now)
        assert {k: v for k, v in deleted.items() if k.startswith("oidc_")} == {
            "oidc_codes": 1,
            "oidc_access_tokens": 1,
            "oidc_assertion_jtis": 1,
        }
        assert _left(db, OidcCode.code_hash) == ["code-tokens-live"]
        assert _left(db, OidcAccessToken.token_hash) == ["tok-live"]
        assert _left(db, OidcAssertionJti.id) == ["jti-live"]
    finally:
        db.dispose()
