"""Benchmark: the agent's idle memory and the CPU cost of one full fact collection (issue 5).

Prints, in one run:
  * idle RSS of the real agent (``python -m agent --state-dir TMP run``: local
    channel up, not enrolled), sampled after it has settled;
  * idle RSS of a process holding everything a reporting agent loads: the agent
    CLI, every fact collector, psutil and a started APScheduler scheduler, after
    one collection (the real ``run`` does not start reports yet, so this is the
    upper bound once it does);
  * CPU time of one full collection on this machine: the process's own CPU plus
    its children's (lsblk, nft, dpkg-query, ...), median of several runs in a
    fresh process;
  * each figure's ratio to its target (RSS <= 40 MB, CPU <= 250 ms);
  * the self-contained agent (PyInstaller, ``make package``) beside the virtual
    environment: size on disk, cold start of ``--version`` and ``--help``
    (median wall time of fresh processes) and idle RSS of ``run``, each with
    its ratio to the venv's figure.

Usage: python bench/agent.py [--runs 7] [--bundle dist/devicetrust-agent]
(``--smoke`` without a built agent measures a stand-in, a shell script that
runs this checkout's agent, so that every code path still runs.)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RSS_TARGET_MB = 40.0
CPU_TARGET_MS = 250.0

_LOADED_AGENT = r"""
import sys, time
from agent import cli  # noqa: F401 - what `devicetrust-agent run` imports
from agent.collectors import collect_facts
from apscheduler.schedulers.background import BackgroundScheduler
scheduler = BackgroundScheduler(daemon=True)
scheduler.start()
collect_facts()
print("ready", flush=True)
time.sleep(60)
"""

_CPU_PROBE = r"""
import json, resource, sys, time
from agent.collectors import collect_facts

def children():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # microsecond resolution
    return usage.ru_utime + usage.ru_stime

runs = int(sys.argv[1])
collect_facts()  # warm-up: imports and first-time caches are not per-collection costs
samples = []
for _ in range(runs):
    own_before, kids_before = time.process_time(), children()
    collect_facts()
    own = time.process_time() - own_before
    kids = children() - kids_before
    samples.append({"own": own, "children": kids, "total": own + kids})
print(json.dumps(samples))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SETTLE = 3.0  # seconds an idle process gets before its RSS is read (--smoke: less)


def _settled_rss(proc: subprocess.Popen, seconds: float | None = None) -> float:
    time.sleep(SETTLE if seconds is None else seconds)
    p = psutil.Process(proc.pid)
    samples = []
    for _ in range(5):
        samples.append(p.memory_info().rss)
        time.sleep(0.2)
    return max(samples) / (1024 * 1024)


def real_agent_rss() -> float:
    """RSS (MB) of the real `devicetrust-agent run`, idle."""
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "DEVICETRUST_AGENT_PORTS": str(_free_port())}
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "--state-dir", state, "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            rss = _settled_rss(proc)
            if proc.poll() is not None:
                raise SystemExit(f"agent exited: {proc.stderr.read().decode()[-500:]}")
            return rss
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def loaded_agent_rss() -> float:
    """RSS (MB) of a process with collectors + APScheduler loaded, after one collection."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOADED_AGENT],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"probe failed: {proc.stderr.read()[-500:]}")
        return _settled_rss(proc, 1.0)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def collection_cpu(runs: int) -> list[dict[str, float]]:
    """Per-collection CPU seconds (own, children, total) measured in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _CPU_PROBE, str(runs)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout)


def _tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _agent_closure() -> list[importlib.metadata.Distribution]:
    """The installed distributions the agent extra needs (itself and every dependency)."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*spec["dependencies"], *spec["optional-dependencies"]["agent"]]
    seen: dict[str, importlib.metadata.Distribution] = {}
    while wanted:
        requirement = wanted.pop()
        if ";" in requirement and "extra ==" in requirement:
            continue  # optional extras of a dependency
        name = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        wanted.extend(dist.requires or [])
    return list(seen.values())


def venv_bytes() -> tuple[int, int]:
    """(bytes of the agent extra's installed packages, bytes of the Python they need)."""
    files = set()
    for dist in _agent_closure():
        for f in dist.files or []:
            path = Path(dist.locate_file(f))
            if path.is_file():
                files.add(path)
    packages = sum(p.stat().st_size for p in files)
    # The Python a venv needs at run time: the interpreter, libpython and the
    # standard library, without what no agent runs (its tests, IDLE, Tk, the
    # static library for embedding, pip's bootstrap wheels).
    stdlib = Path(os.__file__).parent
    unused = ("site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
              "lib2to3", f"config-{sys.version_info[0]}.{sys.version_info[1]}-")  # fmt: skip
    python = sum(
        _tree_bytes(p) for p in stdlib.iterdir() if not any(p.name.startswith(u) for u in unused)
    )
    python += Path(sys.executable).resolve().stat().st_size
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")
    libpython = libdir / (sysconfig.get_config_var("LDLIBRARY") or "")
    if libpython.is_file() and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        python += libpython.resolve().stat().st_size
    return packages, python


def cold_start(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall time and CPU time (ms) of ``argv`` in a fresh process, output discarded.

    CPU time (user + system of the child) is steadier than wall time on a shared machine.
    """
    import resource

    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, check=True, timeout=60)
        walls.append((time.perf_counter() - started) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        cpus.append(cpu * 1000)
    return _median(walls), _median(cpus)


def run_rss(argv: list[str], env: dict[str, str]) -> float:
    """RSS (MB) of ``argv ... run`` idle, with its children (a PyInstaller bootloader)."""
    with tempfile.TemporaryDirectory() as state:
        env = {**env, "DEVICETRUST_AGENT_PORTS": str(_free_port())}
        proc = subprocess.Popen(
            [*argv, "--state-dir", state, "run", "--no-approvals"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(SETTLE)
            root = psutil.Process(proc.pid)
            samples = []
            for _ in range(5):
                tree = [root, *root.children(recursive=True)]
                samples.append(sum(p.memory_info().rss for p in tree))
                time.sleep(0.2)
            if proc.poll() is not None:
                raise SystemExit(f"agent exited: {proc.stderr.read().decode()[-500:]}")
            return max(samples) / (1024 * 1024)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _stand_in(directory: Path) -> Path:
    """A "bundle" that runs this checkout's agent, for --smoke without a built one."""
    exe = directory / "devicetrust-agent"
    exe.write_text(
        f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m agent "$@"\n', encoding="utf-8"
    )
    exe.chmod(0o755)
    return exe


def bundle_figures(bundle: Path, runs: int, smoke: bool) -> float:
    """Print the built agent beside the venv: size, cold start, idle RSS, with ratios."""
    exe = bundle / "devicetrust-agent" if bundle.is_dir() else bundle
    with tempfile.TemporaryDirectory() as scratch:
        label = "built agent"
        if not exe.exists():
            if not smoke:
                raise SystemExit(f"no built agent at {exe}: run `make package` first")
            exe, label = _stand_in(Path(scratch)), "stand-in (no built agent)"
        size = _tree_bytes(exe.parent) / 1e6
        packages, python = venv_bytes()
        debs = sorted(ROOT.glob("dist/devicetrust-agent_*.deb"))
        venv_cmd = [sys.executable, "-m", "agent"]
        bundle_cmd = ["env", "-i", str(exe)]
        starts = {
            (who, arg): cold_start([*cmd, arg], runs)
            for who, cmd in (("venv", venv_cmd), ("bundle", bundle_cmd))
            for arg in ("--version", "--help")
        }
        venv_rss = run_rss(venv_cmd, {**os.environ, "PYTHONPATH": str(ROOT)})
        bundle_rss = run_rss(bundle_cmd, {})
    print(f"{label}: {exe}")
    print(f"size on disk, built agent:                     {size:6.1f} MB"
          + (f"  (.deb {debs[-1].stat().st_size / 1e6:.1f} MB)" if debs else ""))  # fmt: skip
    venv = packages + python
    ratio = size * 1e6 / venv
    print(f"size on disk, venv: agent packages {packages / 1e6:.1f} MB + Python "
          f"{python / 1e6:.1f} MB = {venv / 1e6:.1f} MB  (built/venv {ratio:.2f})")  # fmt: skip
    for arg in ("--version", "--help"):
        (v, vcpu), (b, bcpu) = starts[("venv", arg)], starts[("bundle", arg)]
        print(f"cold start `{arg}` (median of {runs}): built {b:6.1f} ms, venv {v:6.1f} ms"
              f"  (built/venv {b / v:.2f}); CPU built {bcpu:.0f} ms, venv {vcpu:.0f} ms"
              f" (built/venv {bcpu / max(vcpu, 0.1):.2f})")  # fmt: skip
    print(f"idle RSS, `run`: built {bundle_rss:6.1f} MB, venv {venv_rss:6.1f} MB  "
          f"(built/venv {bundle_rss / venv_rss:.2f}; built is {bundle_rss / RSS_TARGET_MB:.0%} "
          f"of the {RSS_TARGET_MB:.0f} MB target)")  # fmt: skip
    return bundle_rss


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test runs this); figures mean nothing",
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        default=ROOT / "dist" / "devicetrust-agent",
        help="the built agent (make package): its directory or executable",
    )
    args = parser.parse_args()
    global SETTLE
    if args.smoke:
        args.runs, SETTLE = 1, 0.2

    real = real_agent_rss()
    loaded = loaded_agent_rss()
    samples = collection_cpu(args.runs)
    own = _median([s["own"] for s in samples]) * 1000
    children = _median([s["children"] for s in samples]) * 1000
    total = _median([s["total"] for s in samples]) * 1000

    print(f"agent bench on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"idle RSS, real `devicetrust-agent run`:        {real:6.1f} MB  "
          f"({real / RSS_TARGET_MB:.0%} of the {RSS_TARGET_MB:.0f} MB target)")  # fmt: skip
    print(f"idle RSS, collectors + APScheduler loaded:     {loaded:6.1f} MB  "
          f"({loaded / RSS_TARGET_MB:.0%} of the {RSS_TARGET_MB:.0f} MB target)")  # fmt: skip
    print(f"CPU per full collection (median of {len(samples)}):    {total:6.1f} ms  "
          f"({total / CPU_TARGET_MS:.0%} of the {CPU_TARGET_MS:.0f} ms target)")  # fmt: skip
    print(f"  of which the agent process {own:.1f} ms, the commands it ran {children:.1f} ms")
    built_rss = bundle_figures(args.bundle, max(args.runs, 3) if not args.smoke else 1, args.smoke)
    ok = max(real, loaded, built_rss) <= RSS_TARGET_MB and total <= CPU_TARGET_MS
    print("targets met" if ok else "TARGET MISSED")
    sys.exit(0 if ok or args.smoke else 1)


if __name__ == "__main__":
    main()
