"""Hand-made security mutants (issue 18's twelve and one more), each against its killing tests.

Usage (from the repository root)::

    python tests/mutation/hand_mutants.py --list            # the mutants and their tests
    python tests/mutation/hand_mutants.py                   # every mutant (minutes)
    python tests/mutation/hand_mutants.py --only ping_host  # one (repeatable)
    python tests/mutation/hand_mutants.py --control         # the tests on the original too

mutmut (``make mutation``) finds mutants by rules; these are the twelve that a person made
by hand, one line each, in the checks an attacker meets first, and that once passed the
whole suite. Each entry names the file, the exact text it replaces (it must occur exactly
once, or the entry is out of date and the run says so) and the tests that must fail against
it: the one at the level where the check lives and, where an attacker could reach it, the
end-to-end one. For every mutant the driver copies the working tree (tracked and
untracked, not ignored, files) into a temporary directory, applies the change there, and
runs pytest on the mutant's tests in that copy, so the worktree itself is never mutated.
The real service and agent the tests start (tests/procs.py) run from the copy too.

A mutant counts as killed when pytest reports failures (exit status 1); the failing tests
are listed so that each one can be checked against ``must_fail``. Exit status 1 when a
mutant survives, when a test listed in ``must_fail`` passes against it, or when
``--control`` finds a failure on the original.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RB = "tests/agent/test_local_channel_rebinding.py"
GUARD = "tests/signin/test_signin_guard.py"
SAML = "tests/saml/test_saml_request_checks.py"
SCIM = "tests/scim/test_scim_token_checks.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # what the driver runs
    must_fail: tuple[str, ...]  # node-id prefixes that must fail against the mutant
    what: str


MUTANTS = (
    Mutant(
        "ping_host",
        "agent/local_channel.py",
        '"""``/v1/ping``: is an agent here, and is it enrolled."""\n'
        "        if not self._host_ok():",
        '"""``/v1/ping``: is an agent here, and is it enrolled."""\n        if False:',
        (f"{RB}::test_ping_refuses_a_rebound_host",),
        (
            f"{RB}::test_ping_refuses_a_rebound_host[in_process",
            f"{RB}::test_ping_refuses_a_rebound_host[real_agent",
        ),
        "the /v1/ping Host check removed (DNS rebinding against ping)",
    ),
    Mutant(
        "preflight_host",
        "agent/local_channel.py",
        '"""CORS / Private Network Access preflight."""\n        if not self._host_ok():',
        '"""CORS / Private Network Access preflight."""\n        if False:',
        (f"{RB}::test_preflight_refuses_a_rebound_host",),
        (
            f"{RB}::test_preflight_refuses_a_rebound_host[in_process",
            f"{RB}::test_preflight_refuses_a_rebound_host[real_agent",
        ),
        "the preflight Host check removed (DNS rebinding against the CORS/PNA preflight)",
    ),
    Mutant(
        "ping_foreign_origin",
        "agent/local_channel.py",
        "if origin is not None and cors is None:",
        "if False:",
        (f"{RB}::test_ping_refuses_a_foreign_page",),
        (
            f"{RB}::test_ping_refuses_a_foreign_page[in_process",
            f"{RB}::test_ping_refuses_a_foreign_page[real_agent",
        ),
        "the foreign-Origin refusal on ping removed (a page learns the agent and its state)",
    ),
    Mutant(
        "guard_sign_key_pg",
        "idp_service/signin/store.py",
        "WHERE d.id = %(device_id)s::varchar AND d.sign_key = %(sign_key)s",
        "WHERE d.id = %(device_id)s::varchar",
        (
            f"{GUARD}::test_the_guarded_write_compares_the_registered_key",
            f"{GUARD}::test_an_answer_signed_with_another_key_is_refused_end_to_end",
        ),
        (f"{GUARD}::test_the_guarded_write_compares_the_registered_key[postgresql",),
        "the guarded sign-in write no longer compares d.sign_key (PostgreSQL statement)",
    ),
    Mutant(
        "guard_sign_key_sqlite",
        "idp_service/signin/store.py",
        "WHERE d.id = :device_id AND d.sign_key = :sign_key AND d.user_id = :user_id",
        "WHERE d.id = :device_id AND d.user_id = :user_id",
        (
            f"{GUARD}::test_the_guarded_write_compares_the_registered_key",
            f"{GUARD}::test_an_answer_signed_with_another_key_is_refused_end_to_end",
        ),
        (f"{GUARD}::test_the_guarded_write_compares_the_registered_key[sqlite",),
        "the guarded sign-in write no longer compares d.sign_key (SQLite statement)",
    ),
    Mutant(
        "browser_binding",
        "idp_service/signin/authenticate.py",
        "        if expected_binding is not None:\n            check_binding(",
        "        if False:\n            check_binding(",
        (
            f"{GUARD}::test_an_answer_bound_to_another_sign_in_is_refused_in_process",
            f"{GUARD}::test_an_answer_bound_to_another_sign_in_is_refused_end_to_end",
        ),
        (
            f"{GUARD}::test_an_answer_bound_to_another_sign_in_is_refused_in_process",
            f"{GUARD}::test_an_answer_bound_to_another_sign_in_is_refused_end_to_end",
        ),
        "check_binding skipped on the browser path (an answer for another sign-in accepted)",
    ),
    Mutant(
        "signed_without_destination",
        "idp_service/saml/protocol/authn_request.py",
        "if signed and request.destination is None:",
        "if False:",
        (
            f"{SAML}::test_a_signed_request_without_destination_is_refused",
            f"{SAML}::test_e2e_signed_request_without_destination",
        ),
        (
            f"{SAML}::test_a_signed_request_without_destination_is_refused",
            f"{SAML}::test_e2e_signed_request_without_destination",
        ),
        "a signed AuthnRequest without Destination accepted (replay to another IdP endpoint)",
    ),
    Mutant(
        "acs_any_binding",
        "idp_service/saml/protocol/sp_view.py",
        'endpoints = [ep for ep in sp.acs or [] if ep.get("binding") == BINDING_POST]',
        "endpoints = list(sp.acs or [])",
        (
            f"{SAML}::test_the_acs_must_be_registered_with_the_post_binding",
            f"{SAML}::test_e2e_acs_with_a_binding_the_sp_never_registered",
            f"{SAML}::test_e2e_a_stored_acs_with_another_binding_is_never_answered",
        ),
        # test_e2e_acs_with_a_binding_the_sp_never_registered passes against this mutant:
        # the metadata parser never stores a non-POST ACS, so it needs a row holding one.
        (
            f"{SAML}::test_the_acs_must_be_registered_with_the_post_binding",
            f"{SAML}::test_e2e_a_stored_acs_with_another_binding_is_never_answered",
        ),
        "ACS matched on location only, any binding",
    ),
    Mutant(
        "reference_not_root",
        "idp_service/saml/protocol/xmldsig.py",
        'if len(refs) != 1 or not root_id or refs[0].get("URI") != "#" + root_id:',
        "if len(refs) != 1 or not root_id:",
        (
            f"{SAML}::test_the_reference_must_point_at_the_root",
            f"{SAML}::test_e2e_reference_not_at_the_root_and_signature_wrapping",
        ),
        (
            f"{SAML}::test_the_reference_must_point_at_the_root",
            f"{SAML}::test_e2e_reference_not_at_the_root_and_signature_wrapping",
        ),
        'the Reference no longer required to be "#" + the root ID (signature wrapping)',
    ),
    Mutant(
        "broker_unsigned",
        "idp_service/saml/protocol/authn_request.py",
        "if (sp.require_signed_requests or sp.identity_broker) and not signed:",
        "if sp.require_signed_requests and not signed:",
        (
            f"{SAML}::test_a_broker_must_sign_even_when_its_row_does_not_require_it",
            f"{SAML}::test_e2e_unsigned_broker_request_naming_a_subject",
        ),
        (
            f"{SAML}::test_a_broker_must_sign_even_when_its_row_does_not_require_it",
            f"{SAML}::test_e2e_unsigned_broker_request_naming_a_subject",
        ),
        "identity brokers no longer required to sign (an unsigned request names a subject)",
    ),
    Mutant(
        "transform_allow_list",
        "idp_service/saml/protocol/xmldsig.py",
        'if transform.get("Algorithm") not in _ALLOWED_TRANSFORM_HREFS:',
        "if False:",
        (
            f"{SAML}::test_dangerous_transforms_are_refused_before_xmlsec_runs",
            f"{SAML}::test_e2e_dangerous_transforms",
        ),
        (f"{SAML}::test_dangerous_transforms_are_refused_before_xmlsec_runs",),
        "the transform allow-list removed (XSLT, XPath reach xmlsec)",
    ),
    Mutant(
        "scim_scheme",
        "scim/app.py",
        'if scheme.lower() != "bearer" or not presented:',
        "if not presented:",
        (
            f"{SCIM}::test_a_token_under_another_scheme_is_refused_in_process",
            f"{SCIM}::test_e2e_a_token_under_another_scheme_is_refused",
        ),
        (
            f"{SCIM}::test_a_token_under_another_scheme_is_refused_in_process",
            f"{SCIM}::test_e2e_a_token_under_another_scheme_is_refused",
        ),
        "the SCIM Authorization scheme no longer checked (a token under any scheme)",
    ),
    Mutant(
        "grace_never_ends",
        "idp_service/tokens.py",
        "previous_until is not None and previous_until > now",
        "previous_until is not None",
        (
            f"{SCIM}::test_match_honours_the_grace_and_then_refuses",
            f"{SCIM}::test_the_cache_refuses_the_old_token_once_its_clock_passes_the_grace",
            f"{SCIM}::test_e2e_a_rotated_out_token_stops_after_its_grace",
        ),
        (
            f"{SCIM}::test_match_honours_the_grace_and_then_refuses",
            f"{SCIM}::test_the_cache_refuses_the_old_token_once_its_clock_passes_the_grace",
        ),
        "a rotated-out SCIM token's grace never ends (in the match every check uses)",
    ),
    # Not in the table: the grace's last layer, the audit INSERT at commit, which
    # stops a rotated-out token that a process's cached copy still takes for live.
    Mutant(
        "grace_audit_insert",
        "scim/audit.py",
        'ScimToken.previous_valid_until > bindparam("at"),',
        "ScimToken.previous_valid_until.is_not(None),",
        (
            f"{SCIM}::test_the_audit_insert_refuses_the_old_token_after_its_grace",
            f"{SCIM}::test_e2e_a_rotated_out_token_stops_after_its_grace",
        ),
        (
            f"{SCIM}::test_the_audit_insert_refuses_the_old_token_after_its_grace",
            f"{SCIM}::test_e2e_a_rotated_out_token_stops_after_its_grace",
        ),
        "the audit INSERT at commit no longer ends the grace (a cached old token lives on)",
    ),
)

_IGNORE = shutil.ignore_patterns(".git", ".venv", "node_modules", "mutants", "__pycache__")


def _copy_tree(dest: Path) -> None:
    """The working tree's tracked and untracked (not ignored) files, as they are now."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in names:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file() or "node_modules/" in rel:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def apply(tree: Path, mutant: Mutant) -> None:
    path = tree / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(
            f"{mutant.name}: the text to replace occurs {count} times in {mutant.file}; "
            "update the entry in tests/mutation/hand_mutants.py"
        )
    path.write_text(text.replace(mutant.old, mutant.new))


def run_tests(tree: Path, tests: tuple[str, ...], extra: list[str]) -> tuple[int, list[str], str]:
    """pytest in ``tree``: (exit status, the node ids that failed or errored, its output tail)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", *extra, *tests]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)
    tail = "\n".join(done.stdout.strip().splitlines()[-3:])
    return done.returncode, failed, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", default=[], help="a mutant's name")
    parser.add_argument("--list", action="store_true", help="print the mutants and their tests")
    parser.add_argument("--control", action="store_true", help="also run the tests unmutated")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        known = ", ".join(m.name for m in MUTANTS)
        raise SystemExit(f"unknown mutant in {args.only}; known: {known}")
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.file}: {m.what}")
            for t in m.tests:
                print(f"    {t}")
        return 0
    results, bad = [], False
    for m in chosen:
        with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
            tree = Path(tmp)
            _copy_tree(tree)
            if args.control:
                started = time.monotonic()
                rc, failed, tail = run_tests(tree, m.tests, args.pytest_args)
                ok = rc == 0
                bad |= not ok
                print(
                    f"control {m.name}: {'pass' if ok else 'FAIL'} "
                    f"({time.monotonic() - started:.0f} s) {tail.splitlines()[-1:]}"
                )
            apply(tree, m)
            started = time.monotonic()
            rc, failed, tail = run_tests(tree, m.tests, args.pytest_args)
        seconds = round(time.monotonic() - started)
        missing = [p for p in m.must_fail if not any(f.startswith(p) for f in failed)]
        killed = rc == 1 and not missing
        bad |= not killed
        verdict = "killed" if killed else ("error" if rc not in (0, 1) else "SURVIVED")
        results.append(
            {
                "mutant": m.name,
                "file": m.file,
                "verdict": verdict,
                "failed": failed,
                "missing": missing,
                "seconds": seconds,
            }
        )
        print(f"{verdict}: {m.name} ({m.file}, {seconds} s)")
        for f in failed:
            print(f"    failed: {f}")
        for p in missing:
            print(f"    expected to fail but did not: {p}")
        if verdict == "error":
            print("    " + tail.replace("\n", "\n    "))
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
