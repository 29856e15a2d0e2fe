"""Bearer authentication of SCIM requests, with revocation checked at commit.

Reading the token table on every request costs a round trip and, more, the
CPU of a SQLAlchemy statement, on every SCIM request. So each process keeps a
copy of the live tokens' rows (:class:`TokenCache`) and checks a presented
token against that copy: its SHA-256 is compared with every cached hash in
constant time (:func:`idp_service.tokens.match`), as against the table. A token the
copy does not know (a token made or rotated since) makes the cache re-read the
table before the request is refused, so a new token works at once.

The copy can be stale the other way: a token revoked or rotated away since it
was read. That is why a request made with a cached token is only committed if
the token is still live *in the database, in the request's own transaction*:
the request's audit event is written by ``INSERT … SELECT … WHERE`` the
token's row is still live (:mod:`scim.audit`). If it is not, the request is
rolled back and answered 401, whatever it did. Revocation therefore takes
effect for the next request on every replica, exactly as when the table was
read first; the copy only saves the read.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from idp_service import tokens
from idp_service.platform.models import utcnow

# How long a copy of the token rows is used before it is read again. Not a
# revocation bound (see above): it only bounds how long rows are kept.
CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class Grant:
    """A request's authentication: which token, and the hash it was presented as."""

    token_id: int
    name: str
    digest: str

    # The property delegates to an undecorated method: mutmut does not mutate decorated
    # functions (docs/testing.md, "Mutation testing").
    @property
    def actor(self) -> str:
        """The audit actor for the token's requests (the name, never the token)."""
        return self._actor()

    def _actor(self) -> str:
        return f"scim-token:{self.name}"


class TokenCache:
    """A per-process copy of the live SCIM tokens' rows, shared by request threads."""

    def __init__(self, seconds: float = CACHE_SECONDS) -> None:
        self.seconds = seconds
        self._rows: tuple[float, list[Any]] | None = None
        self._last_used: dict[int, dt.datetime] = {}
        self._lock = threading.Lock()

    def verify(self, session: Session, presented: str) -> Grant | None:
        """The grant of ``presented`` if it is a live token (as of the copy), else None."""
        digest = tokens.hash_token(presented)
        now = utcnow()
        cached = self._rows
        found = None
        if cached is not None and time.monotonic() - cached[0] < self.seconds:
            found = tokens.match(cached[1], digest, now)
        if found is None:  # unknown to the copy: read the table before refusing
            rows = tokens.SCIM.live_rows(session)
            self._rows = (time.monotonic(), rows)
            found = tokens.match(rows, digest, now)
        if found is None:
            return None
        self._touch(session, found, now)
        return Grant(token_id=found.id, name=found.name, digest=digest)

    def forget(self) -> None:
        """Drop the copy (a token turned out revoked): the next request reads the table."""
        self._rows = None

    def _touch(self, session: Session, row: Any, now: dt.datetime) -> None:
        """Refresh ``last_used_at`` at most once per :data:`tokens.LAST_USED_RESOLUTION`."""
        with self._lock:
            last = self._last_used.get(row.id, row.last_used_at)
            if last is not None and now - last <= tokens.LAST_USED_RESOLUTION:
                return
            self._last_used[row.id] = now
        tokens.SCIM.touch(session, row.id, now)
