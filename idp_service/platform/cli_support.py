"""What the service's command groups share: settings, the database, refusals as CLI errors.

Each feature's commands (``devicetrust users``, ``policy``, ``webhook``,
``api-token`` ...) open the database through :func:`database` and run their
work in one transaction with :func:`in_session`, which turns a service refusal
into a one-line error that says what was refused (``message (code)``) instead
of a traceback. Output goes through :func:`trust_protocol.cli_output.emit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from idp_service.platform.config import Settings
from idp_service.platform.errors import ServiceError

if TYPE_CHECKING:  # the database layer is imported when a command runs, to keep --help fast
    from sqlalchemy.orm import Session

    from idp_service.platform.db import Database

T = TypeVar("T")


def settings() -> Settings:
    """The settings from the environment; a bad DEVICETRUST_* value says which, no traceback."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def database() -> Database:
    """The configured database, with this process's audit key loaded for audited writes."""
    from idp_service.platform import audit_chain
    from idp_service.platform.db import Database

    current = settings()
    audit_chain.configure(audit_chain.load_key(current.data_dir), data_dir=current.data_dir)
    return Database(current.database_url)


def in_session(action: Callable[[Session], T], *, plain: tuple[type[Exception], ...] = ()) -> T:
    """Run ``action(session)`` in one transaction of a fresh :func:`database`.

    A :class:`~idp_service.platform.errors.ServiceError` becomes a CLI error
    ``message (code)``; an exception of a ``plain`` type becomes its own text.
    Either way the transaction is rolled back.
    """
    db = database()
    try:
        with db.session() as session:
            return action(session)
    except ServiceError as exc:
        raise click.ClickException(f"{exc.message} ({exc.code})") from None
    except plain as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.dispose()


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, with a service refusal shown as a CLI error ``message (code)``."""
    try:
        return fn(*args, **kwargs)
    except ServiceError as exc:
        raise click.ClickException(f"{exc.message} ({exc.code})") from None
