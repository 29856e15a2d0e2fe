"""Run a command under two of the system unit's restrictions, without systemd.

    python tests/unit_sandbox.py --families AF_UNIX,AF_INET,AF_INET6,AF_NETLINK --mdwe \\
        --syscalls @system-service --syscalls '~@privileged @resources' -- CMD...

* ``--syscalls`` (repeatable, in the unit's order): ``SystemCallFilter=``'s
  allow-list with its ``~`` removals, groups expanded by ``systemd-analyze
  syscall-filter``; every other system call fails with EPERM
  (``SystemCallErrorNumber=EPERM``). The calls systemd always allows (execve,
  exit, the clock and sleep calls, ...) are allowed here too;
* ``--families``: a seccomp filter (libseccomp, through ctypes) that makes
  ``socket()`` fail with EAFNOSUPPORT for every other address family, as
  ``RestrictAddressFamilies=`` does (systemd filters ``socket()`` only, not
  ``socketpair()``; so does this);
* ``--protect-system`` with ``--writable PATH`` and ``--keep PATH``: the unit's
  file-system view in a private mount namespace (``ProtectSystem=strict``,
  ``ProtectHome=read-only``, ``ReadWritePaths=``, ``PrivateTmp=``,
  ``PrivateDevices=``), see :func:`confine_files`;
* ``--mdwe``: the kernel's memory-deny-write-execute (``PR_SET_MDWE``, Linux
  6.3+), the rule ``MemoryDenyWriteExecute=`` enforces with seccomp.

Both are inherited across ``execve``, and this script then execs CMD, so CMD
runs restricted with nothing of this Python left. Used by
tests/packaging/test_packaging_linux.py, because the CI machine runs no systemd.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import re
import socket
import subprocess
import tempfile

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP_EQ, SCMP_CMP_GE = 4, 5
EAFNOSUPPORT, EPERM = 97, 1
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
AF_MAX = 64  # above every family Linux defines (46 in 6.x)


class _Cmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _seccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_Cmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    return lib


def restrict_families(allowed: set[int]) -> None:
    """Load a seccomp filter refusing ``socket()`` for every family not in ``allowed``."""
    lib = _seccomp()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SystemExit("seccomp_init failed")
    deny = SCMP_ACT_ERRNO | EAFNOSUPPORT
    nr = lib.seccomp_syscall_resolve_name(b"socket")
    rules = [(SCMP_CMP_EQ, f) for f in range(AF_MAX) if f not in allowed]
    rules.append((SCMP_CMP_GE, AF_MAX))
    for op, value in rules:
        cmp = (_Cmp * 1)(_Cmp(0, op, value, 0))
        if lib.seccomp_rule_add_array(ctx, deny, nr, 1, cmp) != 0:
            raise SystemExit(f"seccomp_rule_add failed for family {value}")
    if lib.seccomp_load(ctx) != 0:
        raise SystemExit("seccomp_load failed (no_new_privs or CAP_SYS_ADMIN needed)")


# systemd.exec(5): allowed whatever the filter says.
ALWAYS_ALLOWED = (
    "execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn",
    "clock_getres", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "gettimeofday", "nanosleep", "time",
)  # fmt: skip


def syscall_groups() -> dict[str, list[str]]:
    """Every ``@group`` systemd knows, with its members (names and nested groups)."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    """System call names of ``items`` (names and ``@groups``), groups expanded."""
    names: set[str] = set()
    for item in items:
        if item.startswith("@"):
            names |= expand(groups[item], groups)
        else:
            names.add(item)
    return names


def restrict_syscalls(settings: list[str]) -> None:
    """Load a filter allowing only what ``SystemCallFilter=`` lines ``settings`` allow."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for setting in settings:
        if setting.startswith("~"):
            allowed -= expand(setting[1:].split(), groups)
        else:
            allowed |= expand(setting.split(), groups)
    allowed |= set(ALWAYS_ALLOWED)
    lib = _seccomp()
    ctx = lib.seccomp_init(SCMP_ACT_ERRNO | EPERM)
    for name in sorted(allowed):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0:  # a name this architecture does not have is skipped, as systemd does
            if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None) != 0:
                raise SystemExit(f"seccomp_rule_add failed for {name}")
    if lib.seccomp_load(ctx) != 0:
        raise SystemExit("seccomp_load failed")


# --- the unit's file-system view (a private mount namespace) ----------------------------

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC = 32, 4096, 8192, 16384
MS_NOATIME, MS_NODIRATIME, MS_PRIVATE, MS_RELATIME = 1024, 2048, 1 << 18, 1 << 21
CLONE_NEWNS = 0x00020000
API_FILESYSTEMS = ("/proc", "/sys", "/dev")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")  # what PrivateDevices= keeps


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    encode = lambda v: v.encode() if v is not None else None  # noqa: E731
    if libc.mount(encode(source), encode(target), encode(fstype), flags, None) != 0:
        errno = ctypes.get_errno()
        raise SystemExit(f"mount {source} on {target} failed: {os.strerror(errno)}")


def _mountpoints() -> list[str]:
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            raw = line.split()[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw))
    return points


def _under(path: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _remount_read_only(point: str) -> None:
    flags = os.statvfs(point).f_flag
    if flags & os.ST_RDONLY:
        return
    keep = MS_BIND | MS_REMOUNT | MS_RDONLY
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                   (os.ST_RELATIME, MS_RELATIME)):  # fmt: skip
        if flags & st:
            keep |= ms
    _mount(None, point, None, keep)


def confine_files(writable: list[str], keep: list[str]) -> None:
    """ProtectSystem=strict, ProtectHome=read-only, ReadWritePaths=``writable``,
    PrivateTmp=yes and PrivateDevices=yes, in a new mount namespace.

    ``keep``: paths under /tmp that must stay visible (read-only, or writable when
    also in ``writable``) although the private /tmp hides the rest; the tests keep
    their programs and state there, where a package keeps them in /usr and /var.
    """
    # Staging area on /dev/shm, which stays writable; removed again below.
    shm = os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY)
    staging = tempfile.mkdtemp(prefix="unit-sandbox-", dir="/dev/shm")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise SystemExit(f"unshare failed: {os.strerror(ctypes.get_errno())}")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("unit-sandbox", staging, "tmpfs", MS_NOSUID | MS_NODEV)
    staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    # PrivateDevices=: a /dev with the pseudo-devices only.
    dev = os.path.join(staging, "dev")
    os.mkdir(dev)
    _mount("unit-sandbox-dev", dev, "tmpfs", MS_NOSUID)
    for name in DEVICES:
        open(os.path.join(dev, name), "w").close()  # noqa: SIM115 - a mount point
        _mount(f"/dev/{name}", os.path.join(dev, name), None, MS_BIND)
    for name in ("pts", "shm"):
        os.mkdir(os.path.join(dev, name))
    _mount("unit-sandbox-shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, os.path.join(dev, link))
    # PrivateTmp=: a fresh /tmp, holding only what the caller keeps.
    tmp = os.path.join(staging, "tmp")
    os.mkdir(tmp)
    _mount("unit-sandbox-tmp", tmp, "tmpfs", MS_NOSUID | MS_NODEV)
    os.chmod(tmp, 0o1777)
    for path in keep:
        inside = os.path.join(tmp, os.path.relpath(path, "/tmp"))
        if os.path.isdir(path):
            os.makedirs(inside, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            open(inside, "w").close()  # noqa: SIM115 - a mount point
        _mount(path, inside, None, MS_BIND | MS_REC)
        _remount_read_only(inside)
    for path in sorted(p for p in writable if _under(p, ["/tmp"])):  # on top, writable
        inside = os.path.join(tmp, os.path.relpath(path, "/tmp"))
        os.makedirs(inside, exist_ok=True)
        _mount(path, inside, None, MS_BIND | MS_REC)
    # ReadWritePaths= outside /tmp stay writable: mounts of their own before the rest
    # goes read-only.
    outside = [p for p in writable if not _under(p, ["/tmp"])]
    for path in outside:
        _mount(path, path, None, MS_BIND | MS_REC)
    # ProtectSystem=strict (and so ProtectHome=read-only): everything else read-only.
    for point in sorted(set(_mountpoints())):
        if _under(point, API_FILESYSTEMS) or _under(point, [staging]) or point in outside:
            continue
        _remount_read_only(point)
    _mount(tmp, "/tmp", None, MS_MOVE)
    _mount("unit-sandbox-vartmp", "/var/tmp", "tmpfs", MS_NOSUID | MS_NODEV)
    _mount(dev, "/dev", None, MS_MOVE)
    # The staging directory is hidden under the new /dev now: unmount it through its
    # descriptor, and remove it through the real /dev/shm's.
    if libc.umount2(f"/proc/self/fd/{staging_fd}".encode(), 2) == 0:  # MNT_DETACH
        os.close(staging_fd)
        os.rmdir(os.path.basename(staging), dir_fd=shm)
    os.close(shm)


def deny_write_execute() -> None:
    """Turn on the kernel's memory-deny-write-execute for this process and its execs."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise SystemExit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()} (Linux 6.3+ needed)")


def main() -> None:
    """Parse the options, restrict this process, exec the command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help="comma-separated names, e.g. AF_UNIX,AF_INET")
    parser.add_argument("--mdwe", action="store_true")
    parser.add_argument("--syscalls", action="append", default=[], help="a SystemCallFilter=")
    parser.add_argument("--protect-system", action="store_true", help="see confine_files")
    parser.add_argument("--writable", action="append", default=[], help="a ReadWritePaths=")
    parser.add_argument("--keep", action="append", default=[], help="keep PATH under /tmp")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    if args.protect_system:
        confine_files(args.writable, args.keep)
    if args.mdwe:
        deny_write_execute()
    if args.families:
        restrict_families({int(getattr(socket, name)) for name in args.families.split(",")})
    if args.syscalls:
        restrict_syscalls(args.syscalls)  # last: it denies what the steps above need
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
