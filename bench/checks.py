"""Benchmark: server-side cost of evaluating the built-in catalog on one fact document.

Prints milliseconds per document (one core, in-process) for this machine's
real facts, with and without the checks that read the package map, so the
ingest bench (issue 5, part B) knows what evaluation costs per report.

Usage: python bench/checks.py [--n 300]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.collectors import collect_facts  # noqa: E402
from posture_checks.evaluator import evaluate_all  # noqa: E402
from posture_checks.loader import CatalogLoader  # noqa: E402


def per_document(checks, doc, n: int) -> float:
    now = dt.datetime.now(dt.UTC)
    evaluate_all(checks, doc, now=now)
    start = time.perf_counter()
    for _ in range(n):
        evaluate_all(checks, doc, now=now)
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test runs this); figures mean nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.n = 2
    doc = collect_facts()
    checks = CatalogLoader().current().checks
    without = [c for c in checks if "packages" not in c.roots]
    full = per_document(checks, doc, args.n)
    light = per_document(without, doc, args.n)
    print(f"catalog: {len(checks)} checks; document: {doc['packages']['count']} packages")
    print(
        f"all checks:                 {full:5.2f} ms per document ({1000 / full:5.0f}/s per core)"
    )
    print(
        f"without the package checks: {light:5.2f} ms per document ({1000 / light:5.0f}/s per core)"
    )


if __name__ == "__main__":
    main()
