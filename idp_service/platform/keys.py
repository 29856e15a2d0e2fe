"""Loads (or creates, once) the server's protocol key material from the database.

All replicas read the same rows, so any replica can open any response. The
material is created with an insert that tolerates a concurrent creator.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from idp_service.platform.db import Database
from idp_service.platform.models import ServerSecret
from trust_protocol.server_keys import ServerKeys

SIGNING_SEED = "protocol.signing_seed"
BOX_SECRET = "protocol.box_secret"  # noqa: S105 - a row name, not a secret
SESSION_KEY = "flask.session_key"


def load_secret(db: Database, name: str, size: int = 32) -> bytes:
    """Return the secret called ``name``, creating it if no replica has yet."""
    with db.session() as s:
        row = s.get(ServerSecret, name)
        if row is not None:
            return row.material
    try:
        with db.session() as s:
            s.add(ServerSecret(name=name, material=secrets.token_bytes(size)))
    except IntegrityError:
        pass  # another replica created it first; read theirs
    with db.session() as s:
        return s.execute(
            select(ServerSecret.material).where(ServerSecret.name == name)
        ).scalar_one()


def load_server_keys(db: Database) -> ServerKeys:
    """The protocol keys shared by every replica."""
    return ServerKeys.from_seeds(load_secret(db, SIGNING_SEED), load_secret(db, BOX_SECRET))
