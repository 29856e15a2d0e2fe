"""Durations as people write them: ``90 s``, ``5 min``, ``24 h``, ``7 d``, ``1 d 6 h``.

Shared by both halves: the agent reads ``report_interval = "15 min"`` from its
configuration with :func:`parse_duration`; the service reads its settings with
it, and the console and the ``devicetrust`` commands print :func:`format_duration`.
The standard library only, so the lean agent can carry it. ``parse_duration`` accepts the compact
``1d6h``, ``15m`` or plain seconds as well, and
``parse_duration(format_duration(x)) == x`` for every whole number of seconds.
"""

from __future__ import annotations

import datetime as dt
import re

_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
_NAMES = {"d": 86400, "h": 3600, "m": 60, "min": 60, "s": 1}
_PART = re.compile(r"\s*(\d+)\s*(d|h|min|m|s)(?![a-z])", re.IGNORECASE)


def format_duration(value: dt.timedelta | float | None) -> str:
    """``timedelta(days=1)`` -> ``24 h``; seconds work too; ``None`` -> ``""``.

    Each unit that is not zero, largest first (``7 d``, ``1 d 6 h``, ``2 h 30 min``);
    one day reads ``24 h`` and under two minutes stays in seconds (``90 s``), as
    people say them. Fractions of a second are rounded.
    """
    if value is None:
        return ""
    exact = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    if 0 < abs(exact) < 1:
        return f"{exact:g} s"
    seconds = round(exact)
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if seconds == 0:
        return "0 s"
    if seconds == 86400:
        return "24 h"
    if seconds < 120 and seconds % 60:
        return f"{sign}{seconds} s"
    parts = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}")
    return sign + " ".join(parts)


def parse_duration(text: str) -> dt.timedelta:
    """``24 h``, ``1 d 6 h``, ``1d6h``, ``15m``, ``5 min`` or plain seconds -> a timedelta.

    Raises :class:`ValueError` for anything else (negative, empty, unknown unit).
    """
    value = text.strip()
    if value.isdigit():
        return dt.timedelta(seconds=int(value))
    seconds, pos, seen = 0, 0, False
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _NAMES[match.group(2).lower()]
        pos, seen = match.end(), True
    if not seen or value[pos:].strip():
        raise ValueError(f"not a duration: {text[:40]!r} (use e.g. 90s, 15m, 24h, 7d or 1d 6h)")
    return dt.timedelta(seconds=seconds)
