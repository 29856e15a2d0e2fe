"""The per-process services container: one typed object that every feature reads.

The app factory (``idp_service/app.py``) builds one :class:`Services` per process
and hands it to each feature's ``init_app``; handlers reach it with
:func:`idp_service.web.context.ctx`, services take it as an argument. Nothing
here is loaded per request: keys, the posture catalog and the caches are built
once. This module imports no web framework.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from idp_service.platform.config import Settings
from idp_service.platform.db import Database
from idp_service.platform.models import Device, LoginTransaction, User, utcnow
from idp_service.platform.ratelimit_store import DatabaseStorage
from posture_checks.incremental import FactDigests
from posture_checks.model import Check
from trust_protocol.server_keys import ServerKeys


# What the container holds for the features, described by what its readers call. The app
# factory (app.py) builds the features' own classes, which satisfy these; a feature that
# needs more than the interface narrows to its own class (signin/service.py for the
# sign-in's posture verdict, saml/service.py ``keys``). So the container, below the
# features, imports none of them.
class PostureChecks(Protocol):
    """The posture checks in force and fact ingestion (``posture/service.py`` Posture)."""

    def checks(self) -> list[Check]:
        """The checks in force now (reloaded when their files change)."""
        ...

    def ingest(
        self,
        session: Session,
        device_id: str,
        user_id: str,
        facts: dict[str, Any],
        *,
        digests: FactDigests | None = None,
        previous: str | None = None,
    ) -> str | None:
        """Evaluate a device's fresh facts and store the results; the inputs' digest."""
        ...


class SigningKeys(Protocol):
    """The SAML signing keys, read from the database on use (``saml/keys.py`` KeyRing)."""

    def invalidate(self) -> None:
        """Reload the keys on next use."""
        ...


class OwnerHints(Protocol):
    """Device id -> owner, remembered per process (``signin/reads.py`` DeviceOwners)."""

    def remembered(self, device_id: str) -> str | None:
        """The owner last read for this device, if any."""
        ...

    def read(self, device_id: str) -> str | None:
        """The owner as the database has it now (None for an unknown device)."""
        ...


class Completer(Protocol):
    """Finishes a sign-in for the surface that started it (SAML, the console, ...).

    Called by ``/login/<txn>/continue`` with the transaction (verified, or denied
    with a reason) and its user and device as they are now; returns what the web
    layer sends to the browser. A completer runs once per ``/continue`` and must
    answer a repeat (``txn.completed_at`` set) without issuing anything new.
    """

    def __call__(
        self, txn: LoginTransaction, user: User | None, device: Device | None
    ) -> object: ...


class Completers:
    """The sign-in's completers by transaction kind (``txn.context["kind"]``).

    Each surface registers its own in its ``init_app``; a new surface (OpenID
    Connect) registers one more kind and starts transactions of that kind.
    """

    def __init__(self) -> None:
        self._by_kind: dict[str, Completer] = {}

    def register(self, kind: str, completer: Completer) -> None:
        """Add the completer of ``kind``; a kind has exactly one."""
        if kind in self._by_kind and self._by_kind[kind] is not completer:
            raise ValueError(f"a completer for {kind!r} is registered already")
        self._by_kind[kind] = completer

    def get(self, kind: str) -> Completer | None:
        """The completer of ``kind``, or None when no surface registered it."""
        return self._by_kind.get(kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_kind)


@dataclass
class Services:
    """What every handler and service needs, typed; built once per process."""

    settings: Settings
    db: Database
    keys: ServerKeys  # the protocol's challenge and notice keys
    # The SAML signing keys (saml/keys.py), read on first use.
    saml_keys: SigningKeys
    # Device id -> owner, the sign-in hot path's hint (signin/reads.py).
    device_owners: OwnerHints
    # The wall clock that service modules decide by (sign-in, approval, enrollment, SAML).
    clock: Callable[[], dt.datetime] = utcnow
    completers: Completers = field(default_factory=Completers)
    # The posture checks in force (reloaded when their files change); None: posture is off.
    posture: PostureChecks | None = None
    # The HMAC key of approval codes (devices/approve.py load_key), read at start.
    approval_code_key: bytes | None = None
    # The persistent-NameID secret (saml/service.py).
    saml_persistent_secret: bytes | None = None
    # The admin API's probe marks (api/core.py), made on first use.
    api_probe_marks: DatabaseStorage | None = None
    # The OpenID Connect signing keys (oidc/keys.py KeyRing) and the Entra tenants' keys
    # (oidc/eam.py HintKeys), made by oidc/web.py's init_app; oidc/service.py narrows them to
    # its own classes, so the container names no feature type.
    oidc_keys: object | None = None
    oidc_hint_keys: object | None = None
