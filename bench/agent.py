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
  * each figure's ratio to its target (RSS <= 40 MB, CPU <= 250 ms).

Usage: python bench/agent.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
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
    ok = max(real, loaded) <= RSS_TARGET_MB and total <= CPU_TARGET_MS
    print("targets met" if ok else "TARGET MISSED")
    sys.exit(0 if ok or args.smoke else 1)


if __name__ == "__main__":
    main()
