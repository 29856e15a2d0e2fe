"""Rate-limit counters shared by every worker and replica (revision ``0012``).

One row per limit, client and window: ``idp_service/platform/ratelimit_store.py``
increments it with one atomic upsert and deletes expired rows now and then.
``expires_at`` is seconds since the epoch (the limits library's clock).
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base


class RateLimitCounter(Base):
    """Hits counted for ``key`` in the window that ends at ``expires_at``."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
