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
* ``--mdwe``: the kernel's memory-deny-write-execute (``PR_SET_MDWE``, Linux
  6.3+), the rule ``MemoryDenyWriteExecute=`` enforces with seccomp.

Both are inherited across ``execve``, and this script then execs CMD, so CMD
runs restricted with nothing of this Python left. Used by
tests/test_packaging_linux.py, because the CI machine runs no systemd.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import socket
import subprocess

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
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    if args.mdwe:
        deny_write_execute()
    if args.families:
        restrict_families({int(getattr(socket, name)) for name in args.families.split(",")})
    if args.syscalls:
        restrict_syscalls(args.syscalls)  # last: it denies what the steps above need
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
