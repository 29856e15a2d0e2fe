"""The check catalog: built-in checks plus a security team's directories, hot-reloaded.

:class:`CatalogLoader` is what the service holds. ``loader.current()`` is
called per evaluation: it looks at the check files' names, sizes and mtimes
(at most once per ``min_interval`` seconds) and re-reads the directories only
when something changed, so an unchanged catalog costs one ``stat`` pass.

Later directories override earlier ones check by check (the built-in catalog
comes first, so a team can replace a built-in check by reusing its id). Two
files with one id inside the same directory are an error. If a reload finds
errors, the last good catalog stays in force and ``loader.errors`` says what
is wrong: a typo must not silently drop every check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from posture_checks.model import Check, CheckIssue, CheckValidationError, load_check_file

BUILTIN_DIR = Path(__file__).parent / "catalog"
PATTERNS = ("*.yaml", "*.yml")


@dataclass(frozen=True)
class Catalog:
    """An immutable set of checks, one per id."""

    checks: tuple[Check, ...] = ()
    generation: int = 0
    loaded_at: float = field(default_factory=time.time)

    def by_id(self, check_id: str) -> Check | None:
        """The check with this id, if any."""
        return next((c for c in self.checks if c.id == check_id), None)

    def ids(self) -> list[str]:
        """Every check id, in catalog order."""
        return [c.id for c in self.checks]


def check_files(directory: Path) -> list[Path]:
    """The check files under ``directory`` (recursively), sorted."""
    if not directory.is_dir():
        return []
    found = {p for pattern in PATTERNS for p in directory.rglob(pattern) if p.is_file()}
    return sorted(found)


def load_directory(directory: Path | str) -> tuple[list[Check], list[CheckIssue]]:
    """Every valid check in one directory, and the issues of the invalid ones."""
    directory = Path(directory)
    checks: list[Check] = []
    issues: list[CheckIssue] = []
    seen: dict[str, Check] = {}
    if not directory.is_dir():
        return [], [CheckIssue(str(directory), 1, "not a directory")]
    for path in check_files(directory):
        try:
            check = load_check_file(path)
        except CheckValidationError as exc:
            issues.extend(exc.issues)
            continue
        if check.id in seen:
            first = seen[check.id]
            issues.append(
                CheckIssue(
                    check.source,
                    check.line,
                    f"duplicate id {check.id!r} (also in {first.source}:{first.line})",
                )
            )
            continue
        seen[check.id] = check
        checks.append(check)
    return checks, issues


def load_catalog(directories: Sequence[Path | str]) -> tuple[list[Check], list[CheckIssue]]:
    """Checks from several directories, later ones overriding earlier ids."""
    merged: dict[str, Check] = {}
    issues: list[CheckIssue] = []
    for directory in directories:
        checks, found = load_directory(directory)
        issues.extend(found)
        for check in checks:
            merged.pop(check.id, None)
            merged[check.id] = check
    return list(merged.values()), issues


# What the catalog's files look like on disk: (path, mtime in ns, size) for each file.
_Signature = tuple[tuple[str, int, int], ...]


def _signature(directories: Sequence[Path]) -> _Signature:
    entries: list[tuple[str, int, int]] = []
    for directory in directories:
        for path in check_files(directory):
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(entries)


class CatalogLoader:
    """Holds the current catalog and reloads it when its files change."""

    def __init__(
        self,
        directories: Sequence[Path | str] = (),
        *,
        include_builtin: bool = True,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        dirs = [Path(d) for d in directories]
        self.directories = [BUILTIN_DIR, *dirs] if include_builtin else dirs
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._catalog = Catalog()
        self._signature: _Signature | None = None
        self._checked_at = float("-inf")
        self.errors: list[CheckIssue] = []
        self.reloads = 0

    def current(self) -> Catalog:
        """The catalog in force, re-read first if any check file changed."""
        now = self._clock()
        if now - self._checked_at < self.min_interval and self._signature is not None:
            return self._catalog
        with self._lock:
            self._checked_at = now
            signature = _signature(self.directories)
            if signature != self._signature:
                self._reload(signature)
            return self._catalog

    def _reload(self, signature: _Signature) -> None:
        checks, issues = load_catalog(self.directories)
        self._signature = signature
        self.reloads += 1
        self.errors = issues
        if issues and self._catalog.generation > 0:
            return  # keep the last good catalog until the files are fixed
        self._catalog = Catalog(tuple(checks), self._catalog.generation + 1)
