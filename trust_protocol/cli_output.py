"""How every devicetrust command prints its result: JSON with ``--json``, else a text for people.

Both halves' command lines (``devicetrust`` and ``devicetrust-agent``) print
through :func:`emit`, so ``--json`` means the same everywhere: the data,
indented by two spaces, with anything JSON has no type for (a date, a path)
written as its text.
"""

from __future__ import annotations

import json
from typing import Any

import click


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print ``data`` as JSON when ``as_json``, else ``text``."""
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)
