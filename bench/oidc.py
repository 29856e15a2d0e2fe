"""Benchmark: id_token issuance against the RS256 signing ceiling, and full OIDC sign-ins over HTTP.

Prints, in one run:
  * id_token issuance per second, in-process on one core, through the provider's
    own path (``idp_service.oidc.service.id_token_claims`` + ``sign``: the claims,
    the key ring's generation check, joserfc's RS256 JWS), and the RS256 signing
    ceiling measured in the same run (one RSA-2048 PKCS#1 v1.5 SHA-256 signature of
    an id_token-sized input through ``cryptography`` alone), and their ratio
    (target: at least 50 %). The two are interleaved in slices, so load from
    elsewhere on the shared machine falls on both alike;
  * full OIDC sign-ins per second over HTTP: the service under gunicorn (2 workers)
    on PostgreSQL, load generators playing the browser, the agent and the relying
    party. One sign-in = GET /oidc/authorize (code flow, PKCE S256) ->
    POST /login/<txn>/challenge -> the agent checks the challenge and seals its
    signed answer -> POST /login/<txn>/response -> GET /login/<txn>/continue (303
    with the code) -> POST /oidc/token (client_secret_post, the code verifier:
    id_token and access token).

Usage: python bench/oidc.py [--seconds 15] [--clients 6] [--skip-http]
       [--pg-url postgresql://postgres@127.0.0.1:5432/postgres] [--smoke]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.login import _Browser, _enroll, _scratch_pg, _wait_for_workers  # noqa: E402

REDIRECT = "https://bench-rp.example.com/callback"
SLICE = 50


def _pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


# ---- in-process issuance --------------------------------------------------------------------


def issuance(tmp: Path, n: int) -> tuple[float, float]:
    """(id_tokens/s through the provider, RS256 signatures/s with cryptography alone)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from idp_service.oidc import service
    from idp_service.oidc.keys import KeyRing
    from idp_service.platform.config import Settings
    from idp_service.platform.db import Database
    from idp_service.platform.migrate import upgrade
    from idp_service.services import Services

    url = f"sqlite:///{tmp / 'issuance.sqlite'}"
    upgrade(url)
    db = Database(url)
    settings = Settings.from_env(
        {"DEVICETRUST_DATABASE_URL": url, "DEVICETRUST_DATA_DIR": str(tmp / "data")}
    )
    svc = Services(settings=settings, db=db, keys=None, saml_keys=None, device_owners=None)  # type: ignore[arg-type]
    svc.oidc_keys = KeyRing(db)
    client = {"client_id": "bench", "acr": "possessionorinherence", "id_token_minutes": 5}
    extra = {"preferred_username": "bench@example.com", "email": "bench@example.com"}

    def ours() -> None:
        claims = service.id_token_claims(
            svc,
            client=client,
            sub=str(uuid.uuid4()),
            nonce=secrets.token_urlsafe(16),
            auth_time=int(time.time()),
            amr="swk",
            extra=extra,
        )
        service.sign(svc, claims)

    ours()  # creates the key
    pem = svc.oidc_keys.active().jwk.as_pem(private=True)
    private = serialization.load_pem_private_key(pem, password=None)
    sample = service.sign(
        svc,
        service.id_token_claims(
            svc,
            client=client,
            sub=str(uuid.uuid4()),
            nonce="n",
            auth_time=0,
            amr="swk",
            extra=extra,
        ),
    )
    signing_input = sample.rsplit(".", 1)[0].encode()

    def ceiling() -> None:
        private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]

    spent = {"ours": 0.0, "ceiling": 0.0}
    done = {"ours": 0, "ceiling": 0}
    while done["ours"] < n:
        for name, fn in (("ceiling", ceiling), ("ours", ours)):
            count = min(SLICE, n - done[name]) or 1
            start = time.perf_counter()
            for _ in range(count):
                fn()
            spent[name] += time.perf_counter() - start
            done[name] += count
    db.dispose()
    return done["ours"] / spent["ours"], done["ceiling"] / spent["ceiling"]


# ---- full sign-ins over HTTP ----------------------------------------------------------------


def _client(
    base: str,
    code: str,
    client_id: str,
    secret: str,
    start_at: float,  # noqa: PLR0913
    stop_at: float,
    out,
) -> None:  # noqa: ANN001
    from trust_protocol import ResponseBody, parse_challenge, seal_response

    b, keys, verify_key, platform = _enroll(base, code)
    done = failed = 0
    while time.time() < start_at:
        time.sleep(0.01)
    warm, measure_start = True, time.time()
    while True:
        now = time.time()
        if warm and now >= start_at + 2:
            warm, done, failed, measure_start = False, 0, 0, now
        if now >= stop_at:
            break
        try:
            verifier = secrets.token_urlsafe(32)
            challenge_s256 = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            query = urlencode(
                {
                    "client_id": client_id,
                    "redirect_uri": REDIRECT,
                    "response_type": "code",
                    "scope": "openid email",
                    "state": secrets.token_urlsafe(8),
                    "nonce": secrets.token_urlsafe(8),
                    "code_challenge": challenge_s256,
                    "code_challenge_method": "S256",
                }
            )
            status, location, _ = b.send("GET", "/oidc/authorize?" + query)
            assert status == 303, status
            txn = location.rsplit("/", 1)[-1]
            status, _, ch = b.send("POST", f"/login/{txn}/challenge", b"{}", "application/json")
            assert status == 200, ch
            tok = json.loads(ch)["challenge"]
            envelope = seal_response(
                ResponseBody(tok, keys.public_json(), platform, "bench", time.time()),
                parse_challenge(tok, verify_key),
                keys,
            )
            status, _, st = b.send("POST", f"/login/{txn}/response", envelope)
            assert status == 200 and b'"verified"' in st, st
            status, location, _ = b.send("GET", f"/login/{txn}/continue")
            assert status == 303 and location.startswith(REDIRECT), (status, location)
            code_ = parse_qs(urlsplit(location).query)["code"][0]
            form = urlencode(
                {
                    "grant_type": "authorization_code",
                    "code": code_,
                    "redirect_uri": REDIRECT,
                    "code_verifier": verifier,
                    "client_id": client_id,
                    "client_secret": secret,
                }
            ).encode()
            status, _, tokens = b.send(
                "POST", "/oidc/token", form, "application/x-www-form-urlencoded"
            )
            assert status == 200 and b'"id_token"' in tokens, tokens[:300]
            done += 1
        except (AssertionError, OSError, http.client.HTTPException) as exc:
            failed += 1
            if failed < 3:
                print(f"sign-in failed: {exc!r}"[:300], file=sys.stderr)
            b = _Browser(base) if isinstance(exc, OSError | http.client.HTTPException) else b
    out.put((done, failed, time.time() - measure_start))


def http_sign_ins(pg_url: str, seconds: float, clients: int) -> tuple[float, int]:
    """(full OIDC sign-ins/s, failures) over HTTP: gunicorn, 2 workers, PostgreSQL."""
    from idp_service.devices import enroll
    from idp_service.directory import users
    from idp_service.oidc import clients as oidc_clients
    from idp_service.platform.db import Database
    from tests.procs import start_service

    with tempfile.TemporaryDirectory() as tmp:
        svc = start_service(
            Path(tmp), pg_url, workers=2, extra_env={"DEVICETRUST_RATELIMIT_ENABLED": "false"}
        )
        try:
            _wait_for_workers(svc.proc.pid, 2)
            db = Database(pg_url)
            codes = []
            with db.session() as s:
                row, secret = oidc_clients.add(
                    s,
                    {
                        "name": "bench",
                        "redirect_uris": [REDIRECT],
                        "token_auth_method": "client_secret_post",
                    },
                )
                client_id = row.client_id
                for i in range(clients):
                    user = users.create(s, f"oidc-bench{i}-{uuid.uuid4().hex[:6]}@example.com")
                    codes.append(enroll.create_code(s, user, ttl_seconds=600)[0])
            db.dispose()
            queue: mp.Queue = mp.Queue()
            start_at = time.time() + 2
            stop_at = start_at + 2 + seconds
            procs = [
                mp.Process(
                    target=_client,
                    args=(svc.url, code, client_id, secret, start_at, stop_at, queue),
                )
                for code in codes
            ]
            for p in procs:
                p.start()
            results = [queue.get(timeout=seconds + 120) for _ in procs]
            for p in procs:
                p.join(10)
        finally:
            svc.stop()
    done = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    return done / max(r[2] for r in results), failed


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured HTTP seconds")
    parser.add_argument("--clients", type=int, default=6, help="load-generator processes")
    parser.add_argument("--n", type=int, default=2000, help="id_tokens to issue in-process")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server to create a scratch database on",
    )
    parser.add_argument("--skip-http", action="store_true", help="only the in-process figures")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test); figures mean nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.clients, args.n = 0.5, 1, 20

    sign_ins = failed = None
    if not args.skip_http:
        url, drop = _scratch_pg(args.pg_url)
        try:
            sign_ins, failed = http_sign_ins(url, args.seconds, args.clients)
        finally:
            drop()

    _pin_one_core()
    with tempfile.TemporaryDirectory() as tmp:
        ours, ceiling = issuance(Path(tmp), args.n)
    print("OpenID Connect benchmark (in-process figures on one core)")
    print(f"id_token issuance, the provider's path:      {ours:,.0f}/s")
    print(f"RS256 signing ceiling, cryptography alone:   {ceiling:,.0f}/s")
    print(f"  ratio issuance / signing ceiling:          {ours / ceiling:.0%}   target >= 50%")
    if sign_ins is not None:
        print(
            f"full OIDC sign-ins over HTTP (gunicorn 2 workers, PostgreSQL, {args.clients} "
            f"clients): {sign_ins:,.1f}/s, {failed} failed"
        )


if __name__ == "__main__":
    main()
