"""Incremental evaluation: evaluate a check again only when something it reads has changed.

At ingest a check's result is a function of exactly three things:

1. the check itself: its expression, variables, platforms, roots and
   ``fail_closed`` (and this engine's :data:`ENGINE_VERSION`);
2. the device's platform (``os.family``), which decides INAPPLICABLE;
3. the fact sections the check reads (:attr:`Check.roots`).

The facts' age plays no part: at ingest they were received this instant, and
STALE is judged again at sign-in on the clock of that moment. So each stored
result carries an *input key*, a digest of those three; a report whose key for
a check equals the stored one would give the same result, and the check is
not evaluated again. Editing a check (or the catalog's set of checks) changes
the keys, so every device is re-evaluated at its next report.

:class:`FactDigests` hashes each top-level section of a fact document at most
once and derives the *content digest*: the whole document less
:data:`VOLATILE`, the fields that change in every report by nature. Equal
content digests mean the report repeats the previous one. The device's
*combined key* (:func:`combined_key`) covers the catalog, the content and the
volatile fields any check reads: when it equals the one stored at the previous
report, no check's inputs changed and nothing is evaluated or even read.

Sections are serialised with ``marshal`` format 2 (typed, unambiguous, no
back-references, so equal values give equal bytes; three times faster than
JSON) and hashed with BLAKE2b-128. The serialisation follows the document's key
order as the device sent it: a device that reorders keys only causes work for
itself (its checks are evaluated again), never a missed change.
"""

from __future__ import annotations

import hashlib
import json
import marshal
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from posture_checks.model import Check

ENGINE_VERSION = "1"  # bump when evaluation semantics change: every result is recomputed
VOLATILE = frozenset({"collected_at", "uptime_seconds"})
_ABSENT = "-"
_MARSHAL_VERSION = 2  # version 3 and later add back-references that depend on refcounts


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _serialise(value: Any) -> bytes:
    try:
        return marshal.dumps(value, _MARSHAL_VERSION)
    except ValueError:  # not JSON-shaped (only from callers other than ingest)
        return json.dumps(value, sort_keys=True, default=repr).encode()


class FactDigests:
    """Per-section digests of one fact document, each computed at most once."""

    def __init__(self, facts: Mapping[str, Any]) -> None:
        self.facts = facts
        self._sections: dict[str, str] = {}
        self._content: str | None = None

    def section(self, name: str) -> str:
        """The digest of top-level section ``name`` (a fixed marker when it is absent)."""
        found = self._sections.get(name)
        if found is None:
            if name in self.facts:
                found = _digest(_serialise(self.facts[name]))
            else:
                found = _ABSENT
            self._sections[name] = found
        return found

    def content(self) -> str:
        """The digest of the whole document except :data:`VOLATILE` fields."""
        if self._content is None:
            content = {k: v for k, v in self.facts.items() if k not in VOLATILE}
            self._content = _digest(_serialise(content))
        return self._content

    def platform(self) -> str | None:
        """``os.family``, as the evaluator reads it."""
        section = self.facts.get("os")
        family = section.get("family") if isinstance(section, Mapping) else None
        return family if isinstance(family, str) else None


def fingerprint(check: Check) -> str:
    """A digest of everything in ``check`` that can change its result at ingest."""
    spec = {
        "engine": ENGINE_VERSION,
        "id": check.id,
        "expression": check.expression,
        "platforms": list(check.platforms),
        "roots": sorted(check.roots),
        "variables": check.variables,
        "fail_closed": check.fail_closed,
    }
    return _digest(json.dumps(spec, sort_keys=True, default=repr).encode())


def input_key(check_fingerprint: str, roots: Iterable[str], digests: FactDigests) -> str:
    """The input key of one check on one document (see the module docstring)."""
    parts = [check_fingerprint, json.dumps(digests.platform())]
    parts.extend(f"{root}={digests.section(root)}" for root in sorted(roots))
    return _digest("\n".join(parts).encode())


def catalog_fingerprint(fingerprints: Sequence[str]) -> str:
    """A digest of the checks in force (their fingerprints, in catalog order)."""
    return _digest("\n".join(fingerprints).encode())


def combined_key(catalog: str, checks: Iterable[Check], digests: FactDigests) -> str:
    """The device's combined key: the catalog, the content and the volatile roots read.

    Equal combined keys imply equal input keys for every check: each check's
    fingerprint is in ``catalog``, the platform and every non-volatile section
    are in the content digest, and volatile sections that some check reads are
    added here.
    """
    volatile = sorted({root for check in checks for root in check.roots if root in VOLATILE})
    parts = [catalog, digests.content()]
    parts.extend(f"{root}={digests.section(root)}" for root in volatile)
    return _digest("\n".join(parts).encode())
