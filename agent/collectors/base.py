"""The one interface every fact collector sits behind, and the runner for them.

A *collector* is a named function ``Host -> value``; its value becomes the fact
section of that name. Collectors never spawn processes or read files directly:
they go through the :class:`Host` they are given, whose :class:`CommandRunner`
and file access can be real (:meth:`Host.local`) or replayed from a recording
(:meth:`Host.from_recording`). That is how the Linux collectors run for real on
this machine and also against recorded disks it does not have, and how the
macOS and Windows collectors are tested at all.

:func:`run_collectors` runs collectors in parallel threads with a deadline and
turns each failure into exactly one ``{"collector", "error"}`` entry; a failed
collector's section is ``None`` (unknown), never a guess.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

#: Longest a single command may run before it is killed.
DEFAULT_COMMAND_TIMEOUT = 3.0
#: Most bytes of a command's stdout/stderr that a collector ever sees.
MAX_OUTPUT_BYTES = 8 * 1024 * 1024
#: Longest error text kept in an error entry (stderr can be long).
MAX_ERROR_CHARS = 300

# Tools live in sbin and libexec directories that a service's PATH may lack.
_EXTRA_PATH = (
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/libexec",
    "/usr/libexec/ApplicationFirewall",
)


class CollectorError(Exception):
    """A collector could not produce its facts; the message says why (no secrets)."""


class CommandNotFound(CollectorError):
    """The program is not installed on this device."""


class CommandTimeout(CollectorError):
    """The program ran longer than its timeout and was killed."""


@dataclass(frozen=True)
class CommandResult:
    """What a finished command printed and returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.returncode == 0

    def check(self) -> str:
        """Return stdout, or raise :class:`CollectorError` if the command failed."""
        if self.returncode != 0:
            detail = (self.stderr or self.stdout).strip().splitlines()
            tail = detail[-1] if detail else ""
            raise CollectorError(
                f"{self.argv[0]} exited with status {self.returncode}: {tail}"[:MAX_ERROR_CHARS]
            )
        return self.stdout


class CommandRunner(Protocol):
    """Runs one program. Every command a collector runs goes through one of these."""

    def run(
        self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT
    ) -> CommandResult:
        """Run ``argv`` (no shell), returning its result or raising a CollectorError."""
        ...


def _command_key(argv: Sequence[str]) -> str:
    return json.dumps(list(argv))


class SubprocessRunner:
    """Runs real programs: no shell, C locale, stdin closed, a hard timeout.

    Results are cached per argv for the runner's lifetime, so two collectors
    that need the same output (one collection uses one runner) spawn one process.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        base = dict(os.environ if env is None else env)
        path = base.get("PATH", "")
        extra = [p for p in _EXTRA_PATH if p not in path.split(os.pathsep)]
        base["PATH"] = os.pathsep.join([p for p in [path, *extra] if p])
        base["LC_ALL"] = "C"
        base["LANG"] = "C"
        self._env = base
        self._cache: dict[str, CommandResult] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.spawned = 0

    def which(self, program: str) -> str | None:
        """Where ``program`` is installed, or None."""
        return shutil.which(program, path=self._env["PATH"])

    def run(
        self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT
    ) -> CommandResult:
        """Run ``argv`` once per runner; later calls with the same argv reuse the result."""
        key = _command_key(argv)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            result = self._spawn(tuple(argv), timeout)
            self._cache[key] = result
            return result

    def _spawn(self, argv: tuple[str, ...], timeout: float) -> CommandResult:
        exe = argv[0] if os.path.isabs(argv[0]) else self.which(argv[0])
        if exe is None or not os.path.exists(exe):
            raise CommandNotFound(f"{argv[0]} is not installed")
        self.spawned += 1
        try:
            proc = subprocess.run(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env=self._env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(f"{argv[0]} timed out after {timeout:g}s") from exc
        except OSError as exc:
            raise CollectorError(f"{argv[0]} could not start: {exc.strerror}") from exc
        return CommandResult(
            argv,
            proc.returncode,
            proc.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
            proc.stderr[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
        )


class RecordedRunner:
    """Replays recorded command outputs; a command not in the recording is "not installed".

    Used by tests for devices this machine is not (macOS, Windows, LUKS and ZFS
    disks), and by support to reproduce a user's report from recorded outputs.
    """

    def __init__(
        self,
        recordings: Mapping[str, CommandResult],
        prefixes: Sequence[tuple[tuple[str, ...], CommandResult]] = (),
    ) -> None:
        self._recordings = dict(recordings)
        self._prefixes = list(prefixes)
        self.calls: list[tuple[str, ...]] = []

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]], base: Path) -> RecordedRunner:
        """Build from ``[{"argv": [...], "returncode": 0, "stdout_file": "x.txt"}, ...]``.

        ``stdout``/``stderr`` may be given inline or as ``stdout_file``/``stderr_file``
        relative to ``base``. ``"timeout": true`` replays a command that hung.
        ``"argv_prefix"`` instead of ``"argv"`` matches any command starting so
        (for a long generated argument such as an encoded script).
        """
        recordings: dict[str, CommandResult] = {}
        prefixes: list[tuple[tuple[str, ...], CommandResult]] = []
        for entry in entries:
            argv = tuple(entry.get("argv") or entry["argv_prefix"])
            if entry.get("timeout"):
                recordings[_command_key(argv)] = CommandResult(argv, -9, "", "__timeout__")
                continue
            out = entry.get("stdout", "")
            if "stdout_file" in entry:
                out = (base / entry["stdout_file"]).read_text(encoding="utf-8")
            err = entry.get("stderr", "")
            if "stderr_file" in entry:
                err = (base / entry["stderr_file"]).read_text(encoding="utf-8")
            result = CommandResult(argv, int(entry.get("returncode", 0)), out, err)
            if "argv_prefix" in entry:
                prefixes.append((argv, result))
            else:
                recordings[_command_key(argv)] = result
        return cls(recordings, prefixes)

    def which(self, program: str) -> str | None:
        """A program "is installed" when some recorded command runs it."""
        for key in self._recordings:
            if json.loads(key)[0] == program:
                return program
        for prefix, _ in self._prefixes:
            if prefix[0] == program:
                return program
        return None

    def run(
        self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT
    ) -> CommandResult:
        """Return the recorded result for exactly this argv."""
        self.calls.append(tuple(argv))
        result = self._recordings.get(_command_key(argv))
        if result is None:
            result = next(
                (r for p, r in self._prefixes if tuple(argv[: len(p)]) == p and len(argv) > len(p)),
                None,
            )
        if result is None:
            raise CommandNotFound(f"{argv[0]} is not installed")
        if result.stderr == "__timeout__":
            raise CommandTimeout(f"{argv[0]} timed out after {timeout:g}s")
        return result


class FileAccess:
    """Reads the device's files, optionally under a different root (a recorded tree).

    Reads are bounded and never follow a symlink at the last path component when
    ``nofollow`` is set: users own some of the files we read as root (``~/.ssh``,
    ``~/.config``), and a symlink there must not make us read someone else's file.
    """

    def __init__(self, root: Path | str = "/") -> None:
        self.root = Path(root)

    def _path(self, path: str) -> Path:
        if str(self.root) == "/":
            return Path(path)
        # A recorded tree: "C:\\Users\\a" lives at root/C/Users/a.
        relative = path.replace("\\", "/").replace(":", "", 1 if path[1:2] == ":" else 0)
        return self.root / relative.lstrip("/")

    def exists(self, path: str) -> bool:
        """True if ``path`` exists (symlinks are followed)."""
        return self._path(path).exists()

    def lexists(self, path: str) -> bool:
        """True if ``path`` exists, even as a dangling symlink (an enabled unit link)."""
        return os.path.lexists(self._path(path))

    def is_dir(self, path: str) -> bool:
        """True if ``path`` is a directory."""
        return self._path(path).is_dir()

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names of a directory; empty if it is missing or unreadable."""
        try:
            return sorted(os.listdir(self._path(path)))
        except OSError:
            return []

    def readlink(self, path: str) -> str | None:
        """Where a symlink points, or None."""
        try:
            return os.readlink(self._path(path))
        except OSError:
            return None

    def read_bytes(
        self,
        path: str,
        limit: int = 1024 * 1024,
        *,
        nofollow: bool = False,
        owner: int | None = None,
    ) -> bytes | None:
        """Up to ``limit`` bytes of a regular file, or None if absent/unreadable.

        With ``nofollow`` a symlink is refused; with ``owner`` a file owned by
        anyone else (root included) is refused.
        """
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) * nofollow | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self._path(path), flags)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            if owner is not None and st.st_uid != owner and self.root == Path("/"):
                return None
            with os.fdopen(fd, "rb", closefd=False) as fh:
                return fh.read(limit)
        except OSError:
            return None
        finally:
            os.close(fd)

    def read_text(
        self, path: str, limit: int = 1024 * 1024, *, nofollow: bool = False
    ) -> str | None:
        """Like :meth:`read_bytes`, decoded as UTF-8 with replacement."""
        data = self.read_bytes(path, limit, nofollow=nofollow)
        return None if data is None else data.decode("utf-8", "replace")

    def stat(self, path: str, *, follow: bool = True) -> os.stat_result | None:
        """``os.stat`` of ``path``, or None."""
        try:
            return os.stat(self._path(path), follow_symlinks=follow)
        except OSError:
            return None


class _Lazy:
    """A value computed once on first use, safely across collector threads."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self._compute = compute
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def get(self) -> Any:
        with self._lock:
            if not self._done:
                try:
                    self._value = self._compute()
                except Exception as exc:  # remembered so every user sees the same failure
                    self._error = exc
                self._done = True
        if self._error is not None:
            raise self._error
        return self._value


def _real_process_names() -> list[str]:
    import psutil

    names = []
    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name")
        if name:
            names.append(name)
    return names


def _real_boot_time() -> float:
    import psutil

    return psutil.boot_time()


@dataclass
class Host:
    """Everything a collector may touch on the device: commands, files, processes, clock."""

    platform: str  # "linux", "macos" or "windows"
    runner: CommandRunner
    files: FileAccess
    euid: int = 0
    process_names_source: Callable[[], list[str]] = _real_process_names
    boot_time_source: Callable[[], float] = _real_boot_time
    clock: Callable[[], float] = time.time
    hostname: str = ""
    kernel: str = ""
    machine: str = ""
    env: dict[str, str] = field(default_factory=dict)
    #: Reports from per-user helpers (agent/user_helper.py): uid -> screen lock, or None.
    user_reports: Callable[[int], dict[str, Any] | None] | None = None
    _shared: dict[str, _Lazy] = field(default_factory=dict, repr=False)
    _shared_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_root(self) -> bool:
        """True when the agent runs as root/SYSTEM (it can read more)."""
        return self.euid == 0

    def shared(self, name: str, compute: Callable[[], Any]) -> Any:
        """A value several collectors need (console users, process list), computed once."""
        with self._shared_lock:
            lazy = self._shared.setdefault(name, _Lazy(compute))
        return lazy.get()

    def process_names(self) -> list[str]:
        """Names of running processes, listed once per collection."""
        return self.shared("process_names", self.process_names_source)

    def which(self, program: str) -> bool:
        """True if ``program`` is installed (as far as the runner knows)."""
        finder = getattr(self.runner, "which", None)
        return bool(finder(program)) if finder else True

    @classmethod
    def local(cls, platform: str | None = None) -> Host:
        """This device, for real."""
        import platform as _platform

        uname = _platform.uname()
        return cls(
            platform=platform or current_platform(),
            runner=SubprocessRunner(),
            files=FileAccess("/"),
            euid=os.geteuid() if hasattr(os, "geteuid") else (0 if _is_windows_admin() else 1),
            hostname=uname.node,
            kernel=uname.release,
            machine=uname.machine,
            env=dict(os.environ),
        )

    @classmethod
    def from_recording(cls, directory: Path | str) -> Host:
        """A device replayed from ``directory/host.json`` (+ ``root/`` file tree).

        ``host.json`` holds ``platform``, ``euid``, ``hostname``, ``kernel``,
        ``machine``, ``boot_time``, ``now``, ``processes`` and ``commands``
        (see :meth:`RecordedRunner.from_entries`).
        """
        directory = Path(directory)
        spec = json.loads((directory / "host.json").read_text(encoding="utf-8"))
        processes = list(spec.get("processes", []))
        boot_time = float(spec.get("boot_time", 0.0))
        now = float(spec.get("now", time.time()))
        return cls(
            platform=spec["platform"],
            runner=RecordedRunner.from_entries(spec.get("commands", []), directory),
            files=FileAccess(directory / "root"),
            euid=int(spec.get("euid", 0)),
            process_names_source=lambda: processes,
            boot_time_source=lambda: boot_time,
            clock=lambda: now,
            hostname=spec.get("hostname", ""),
            kernel=spec.get("kernel", ""),
            machine=spec.get("machine", ""),
            env=dict(spec.get("env", {})),
        )


def _is_windows_admin() -> bool:
    try:
        import ctypes

        return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
    except Exception:
        return False


def current_platform() -> str:
    """This device's platform name as the facts spell it: linux, macos or windows."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return sys.platform


@dataclass(frozen=True)
class Collector:
    """One fact section and the function that collects it."""

    name: str
    collect: Callable[[Host], Any]


def _describe(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    if not isinstance(exc, CollectorError):
        text = f"{exc.__class__.__name__}: {text}"
    return text[:MAX_ERROR_CHARS]


def run_collectors(
    collectors: Sequence[Collector],
    host: Host,
    *,
    deadline: float = 10.0,
    workers: int = 8,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Run ``collectors`` in parallel; return ``(sections, errors)``.

    A collector that raises or is still running at ``deadline`` seconds gets
    section ``None`` and one error entry. Commands carry their own short
    timeouts, so a late collector's thread ends soon after on its own.
    """
    sections: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    if not collectors:
        return sections, errors
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(collectors))))
    try:
        futures = [(c, pool.submit(c.collect, host)) for c in collectors]
        end = time.monotonic() + deadline
        for collector, future in futures:
            try:
                sections[collector.name] = future.result(timeout=max(0.0, end - time.monotonic()))
            except FutureTimeout:
                sections[collector.name] = None
                errors.append(
                    {"collector": collector.name, "error": f"did not finish within {deadline:g}s"}
                )
            except Exception as exc:
                sections[collector.name] = None
                errors.append({"collector": collector.name, "error": _describe(exc)})
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return sections, errors
