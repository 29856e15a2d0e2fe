"""Mutation testing of the security-critical modules with mutmut, one module at a time.

Usage (from the repository root; ``make mutation MUTATION_ARGS=...`` runs the same)::

    python tests/mutation/run.py                       # every target in targets.toml
    python tests/mutation/run.py --module scim/auth.py # one target (repeatable)
    python tests/mutation/run.py --changed [BASE]      # targets touched since BASE (main)
    python tests/mutation/run.py --list                # the targets and their tests

For each target the driver wipes ``mutants/``, then starts a job (this script with
``--job``, in its own process group) that configures mutmut for that one file and its
tests and calls mutmut's run in-process. mutmut copies the packages into ``mutants/``,
turns every function of the target into a trampoline, and runs the target's tests with
``MUTANT_UNDER_TEST`` naming one mutant at a time. Tests that start the service or the
agent (tests/procs.py) put ``mutants/`` first on the child's PYTHONPATH and the child
inherits ``MUTANT_UNDER_TEST``, so the mutant runs inside those processes too. mutmut
learns which tests reach a function only from calls in its own process, so for targets
marked ``subprocesses = true`` every function is credited with all of the target's tests.

Survivors (and mutants no test reached) are printed with their line and diff; those listed
in equivalent.toml, with the reason they cannot be told apart from the original, are
accepted. Any other survivor makes the exit status 1. A summary per target goes to
``mutants/summary.json`` and the output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TARGETS = HERE / "targets.toml"
ALLOWLIST = HERE / "equivalent.toml"
MUTANTS = ROOT / "mutants"
SUMMARY = ROOT / "test-artifacts" / "mutation-summary.json"

# mutmut's verdicts that mean "the tests noticed" and those that mean "they did not".
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
UNDETECTED = {"survived", "no tests"}


@dataclass
class Target:
    module: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)
    subprocesses: bool = False

    @property
    def dotted(self) -> str:
        return self.module.removesuffix(".py").replace("/", ".").removesuffix(".__init__")

    def mutant_globs(self) -> list[str]:
        """mutmut mutant-name patterns for ``functions`` (empty: the whole file)."""
        globs = []
        for name in self.functions:
            globs.append(f"{self.dotted}.x_{name}__mutmut_*")
            globs.append(f"{self.dotted}.xǁ*ǁ{name}__mutmut_*")
        return globs


def load_targets() -> list[Target]:
    data = tomllib.loads(TARGETS.read_text())
    return [Target(**t) for t in data["target"]]


def load_allowlist() -> list[dict]:
    """Accepted equivalent mutants: ``mutant`` and ``mutated`` (globs) with a ``reason``."""
    if not ALLOWLIST.exists():
        return []
    entries = tomllib.loads(ALLOWLIST.read_text()).get("equivalent", [])
    for e in entries:
        if not e.get("reason", "").strip() or not e.get("mutant") or not e.get("mutated"):
            raise SystemExit(f"{ALLOWLIST.name}: every entry needs mutant, mutated and reason: {e}")
    return entries


def accepted_by(mutant: dict, allow: list[dict]) -> dict | None:
    """The allow-list entry whose name and changed-line globs both match ``mutant``."""
    for e in allow:
        mutated = mutant.get("mutated", "")
        if fnmatch(mutant["mutant"], e["mutant"]) and fnmatch(mutated, e["mutated"]):
            return e
    return None


def changed_targets(targets: list[Target], base: str) -> list[Target]:
    """Targets whose module or tests differ between ``base`` and the work tree."""
    out = subprocess.run(
        ["git", "diff", "--name-only", f"{base}...HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    out += subprocess.run(
        ["git", "diff", "--name-only", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    changed = set(out)
    return [t for t in targets if t.module in changed or changed & set(t.tests)]


# -- the job: one target, mutmut in this process ------------------------------------------


def job(target: Target, max_children: int) -> int:
    """Run mutmut over ``target`` (cwd is the repository root) and write mutants/report.json.

    mutmut reads its settings once from pyproject.toml; running it in-process lets each
    target set its own file and tests. This leans on internals of the pinned mutmut 3.8.1
    (``_run``, ``copy_also_copy_files``, ``get_mutant_runner``, the stats state): check them
    when upgrading.
    """
    import mutmut.__main__ as mm
    from mutmut.configuration import config
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.state import state
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.format_utils import mangled_name_from_mutant_name

    cfg = config()
    cfg.only_mutate = [target.module]
    cfg.pytest_add_cli_args_test_selection = list(target.tests)

    def copy_tests_keeping_symlinks() -> None:
        # mutmut's own copy follows symlinks; the posture fixtures hold dangling ones on purpose.
        # Tests also read docs/ (documented codes, examples) and bench/.
        for tree in ("tests", "docs", "bench", "packaging"):
            shutil.copytree(ROOT / tree, MUTANTS / tree, symlinks=True, dirs_exist_ok=True)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, MUTANTS / name)

    mm.copy_also_copy_files = copy_tests_keeping_symlinks

    if target.subprocesses:
        # Credit every function of the target with every test that ran during stats
        # collection: the calls made inside the service or agent are invisible to mutmut.
        make_runner = mm.get_mutant_runner

        def runner_crediting_children(*args, **kwargs):
            runner = make_runner(*args, **kwargs)
            collect = runner.collect_stats

            def collect_stats(tests):
                code = collect(tests)
                data = SourceFileMutationData(path=Path(target.module))
                data.load()
                ran = {strip_mutants(t) for t in state().duration_by_test}
                by_function = state().tests_by_mangled_function_name
                for key in data.exit_code_by_key:
                    by_function[mangled_name_from_mutant_name(key)] |= ran
                return code

            runner.collect_stats = collect_stats
            return runner

        mm.get_mutant_runner = runner_crediting_children

    started = time.monotonic()
    try:
        mm._run(target.mutant_globs(), max_children)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    elapsed = time.monotonic() - started

    data = SourceFileMutationData(path=Path(target.module))
    data.load()
    source = (ROOT / target.module).read_text().splitlines()
    mutants = []
    globs = target.mutant_globs()
    for name, code in sorted(data.exit_code_by_key.items(), key=lambda kv: natural(kv[0])):
        if globs and not any(fnmatch(name, g) for g in globs):
            continue
        status = status_by_exit_code[code]
        entry = {"mutant": name, "status": status}
        if status not in DETECTED:
            diff = get_diff_for_mutant(name, path=target.module)
            entry["diff"] = diff
            entry["line"], entry["mutated"] = locate(diff, name, source)
        mutants.append(entry)
    report = {"module": target.module, "seconds": round(elapsed, 1), "mutants": mutants}
    (MUTANTS / "report.json").write_text(json.dumps(report, indent=2))
    return 0


def strip_mutants(nodeid: str) -> str:
    return nodeid.removeprefix("mutants/")


def natural(name: str) -> tuple[str, int]:
    stem, _, n = name.rpartition("__mutmut_")
    return stem, int(n) if n.isdigit() else 0


def fnmatch(name: str, pattern: str) -> bool:
    from fnmatch import fnmatchcase

    return fnmatchcase(name, pattern)


def locate(diff: str, mutant: str, source: list[str]) -> tuple[int | None, str]:
    """The source line a mutant changes (1-based) and the mutated text of that line."""
    lines = diff.splitlines()[2:]  # past the ---/+++ header
    removed = [ln[1:] for ln in lines if ln.startswith("-")]
    added = [ln[1:] for ln in lines if ln.startswith("+")]
    # A mutant that only deletes lines (an argument dropped) is named by what it removed.
    mutated = added[0].strip() if added else ("(removed) " + removed[0].strip() if removed else "")
    func = mangled_function(mutant)
    start = next(
        (i for i, ln in enumerate(source) if ln.lstrip().startswith(f"def {func}(")),
        next((i for i, ln in enumerate(source) if f"def {func}(" in ln), 0),
    )
    if removed:
        want = removed[0].strip()
        for i in range(start, len(source)):
            if source[i].strip() == want:
                return i + 1, mutated
    return start + 1, mutated


def mangled_function(mutant: str) -> str:
    """``pkg.mod.x_name__mutmut_3`` or ``pkg.mod.xǁClassǁname__mutmut_3`` -> ``name``."""
    last = mutant.rpartition(".")[2].rpartition("__mutmut_")[0]
    if last.startswith("xǁ"):
        return last.split("ǁ")[-1]
    return last.removeprefix("x_")


# -- the driver -------------------------------------------------------------------------


# The Hypothesis profile of mutation runs (tests/conftest.py): few examples per property and
# no example database, so a mutant costs seconds and its verdict does not depend on the order.
HYPOTHESIS_PROFILE = "mutation"


def job_env() -> dict[str, str]:
    """The job's environment: ours, with the mutation runs' Hypothesis profile."""
    return {**os.environ, "HYPOTHESIS_PROFILE": HYPOTHESIS_PROFILE}


def run_target(target: Target, max_children: int) -> dict | None:
    """Run one job in its own process group; return its report (None if it failed)."""
    shutil.rmtree(MUTANTS, ignore_errors=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--job", target.module]
    cmd += ["--max-children", str(max_children)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=job_env(), start_new_session=True)
    try:
        code = proc.wait()
    finally:
        # Services and agents left behind by a mutant that was stopped mid-test.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    report_path = MUTANTS / "report.json"
    if code != 0 or not report_path.exists():
        print(f"!! {target.module}: mutmut did not finish (exit {code})", flush=True)
        return None
    report = json.loads(report_path.read_text())
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def judge(report: dict, allow: list[dict]) -> tuple[dict, list[dict], list[str]]:
    """Counts by verdict, the unaccepted survivors, and notes about the allow-list."""
    counts: dict[str, int] = {}
    bad: list[dict] = []
    used: set[int] = set()
    for m in report["mutants"]:
        status = m["status"]
        if status in UNDETECTED:
            entry = accepted_by(m, allow)
            if entry is not None:
                status = "equivalent"
                used.add(id(entry))
        counts[status] = counts.get(status, 0) + 1
        if status in UNDETECTED:
            bad.append(m)
    prefix = report["module"].removesuffix(".py").replace("/", ".") + "."
    notes = [
        f"allow-list entry {e['mutant']} / {e['mutated']!r} matched no survivor; remove it?"
        for e in allow
        if id(e) not in used and e["mutant"].startswith(prefix)
    ]
    return counts, bad, notes


def show(report: dict, allow: list[dict]) -> dict:
    """Print a target's survivors and score; return its summary entry."""
    module = report["module"]
    counts, bad, notes = judge(report, allow)
    for m in bad:
        print(f"\n-- {m['status']}: {module}:{m.get('line')}  {m['mutant']}")
        print(m["diff"])
    for note in notes:
        print(f"note: {note}")
    score = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"== {module}: {score}; {report['wall_seconds']} s\n", flush=True)
    seconds = report["wall_seconds"]
    return {"module": module, "counts": counts, "seconds": seconds, "failed": bool(bad)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", default=[], help="target file (repeatable)")
    parser.add_argument(
        "--changed",
        nargs="?",
        const="main",
        metavar="BASE",
        help="only targets whose module or tests changed since BASE (default: main)",
    )
    parser.add_argument(
        "--list", action="store_true", help="print the selected targets and their tests, and exit"
    )
    parser.add_argument(
        "--max-children", type=int, default=1, help="mutants tested at once (default 1)"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="judge the last finished run (mutants/report.json) again, without running",
    )
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    # `timeout` or Ctrl-C: stop the current job's process group too (see run_target).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    targets = load_targets()
    by_module = {t.module: t for t in targets}

    if args.job:
        return job(by_module[args.job], args.max_children)

    if args.report:
        report = json.loads((MUTANTS / "report.json").read_text())
        report.setdefault("wall_seconds", report["seconds"])
        return 1 if show(report, load_allowlist())["failed"] else 0

    if args.module:
        unknown = [m for m in args.module if m not in by_module]
        if unknown:
            print(f"not in {TARGETS.name}: {', '.join(unknown)}", file=sys.stderr)
            return 2
        selected = [by_module[m] for m in args.module]
    elif args.changed:
        selected = changed_targets(targets, args.changed)
        if not selected:
            print(f"no mutation target changed since {args.changed}")
            return 0
    else:
        selected = targets

    if args.list:
        for t in selected:
            extra = f" [{', '.join(t.functions)}]" if t.functions else ""
            child = " (through child processes)" if t.subprocesses else ""
            print(f"{t.module}{extra}{child}\n    " + "\n    ".join(t.tests))
        return 0

    allow = load_allowlist()
    failed = False
    summary = []
    for target in selected:
        print(f"== {target.module}: {', '.join(target.tests)}", flush=True)
        report = run_target(target, args.max_children)
        if report is None:
            failed = True
            summary.append({"module": target.module, "error": "mutmut did not finish"})
            continue
        result = show(report, allow)
        summary.append(result)
        failed |= result["failed"]

    SUMMARY.parent.mkdir(exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=2))
    print("summary:")
    for s in summary:
        print(f"  {s['module']}: {s.get('counts', s.get('error'))} {s.get('seconds', '')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
