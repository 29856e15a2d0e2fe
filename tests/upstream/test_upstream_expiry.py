"""The expiry clean-up forgets upstream requests and re-authentication tokens only when done."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from idp_service import expiry
from idp_service.platform.db import Database
from idp_service.platform.models import utcnow
from idp_service.upstream.tables import ReauthToken, UpstreamLogin

HOUR = dt.timedelta(hours=1)


def test_clean_up_keeps_spent_tokens_until_their_family_ends(migrated_url):
    db = Database(migrated_url)
    try:
        now = utcnow()
        old, live = now - expiry.GRACE - HOUR, now - expiry.GRACE + HOUR
        with db.session() as s:
            for name, expires in (("gone", old), ("kept", live)):
                s.add(
                    UpstreamLogin(state_hash=f"s-{name}", idp="corp", txn_id="t", purpose="enroll",
                                  nonce="n", code_verifier="v", expires_at=expires)
                )  # fmt: skip
                s.add(
                    ReauthToken(id=f"r-{name}", family="f", device_id="d", user_id="u",
                                token_hash=f"h-{name}", issued_at=expires - HOUR,
                                expires_at=expires, issued_in=f"c-{name}", sealed=b"x",
                                used_at=expires - HOUR)
                )  # fmt: skip
        assert expiry.clean_up(db, now=now) == {"upstream_logins": 1, "reauth_tokens": 1}
        with db.session() as s:
            assert s.scalars(select(UpstreamLogin.state_hash)).all() == ["s-kept"]
            assert s.scalars(select(ReauthToken.id)).all() == ["r-kept"]
    finally:
        db.dispose()
