"""Functions available to check expressions, besides CEL's own.

* ``version_at_least(actual, minimum)`` and ``version_compare(a, b)`` compare
  dotted versions numerically ("14.10" > "14.9"), ignoring a Debian epoch
  ("1:2.3") and anything after the leading numeric part ("121.0b3",
  "115.6.0esr-1"). A value with no leading number is an error (result ERROR).
* the cel-go style ``strings`` (``lowerAscii``, ``split``, ``trim``...) and
  ``sets`` (``sets.contains``, ``sets.intersects``...) extension libraries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_VERSION = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def parse_version(value: Any) -> tuple[int, ...]:
    """The numeric components of a version string; ValueError if there are none."""
    if not isinstance(value, str):
        raise ValueError(f"not a version string: {type(value).__name__}")
    text = re.sub(r"^\d+:", "", value.strip())
    match = _VERSION.match(text)
    if not match:
        raise ValueError(f"not a version: {value[:40]!r}")
    parts = tuple(int(p) for p in match.group(1).split(".")[:8])
    while len(parts) > 1 and parts[-1] == 0:
        parts = parts[:-1]
    return parts


def version_compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 as version ``a`` is older than, equal to or newer than ``b``."""
    left, right = parse_version(a), parse_version(b)
    return (left > right) - (left < right)


def version_at_least(actual: Any, minimum: Any) -> bool:
    """True if version ``actual`` is ``minimum`` or newer."""
    return version_compare(actual, minimum) >= 0


def functions() -> dict[str, Callable[..., Any]]:
    """Every extra function, by the name expressions call it."""
    from cel import stdlib

    extra: dict[str, Callable[..., Any]] = {}
    for library in ("strings", "sets"):
        extra.update(stdlib.EXTENSIONS[library])
    extra["version_at_least"] = version_at_least
    extra["version_compare"] = version_compare
    return extra
