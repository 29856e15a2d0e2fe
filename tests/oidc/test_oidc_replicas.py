"""A code is single use across replicas: two service worker processes on one PostgreSQL
database, twenty concurrent redemptions of one code spread over them, exactly one succeeds;
the others are refused as reuse, which also revokes the access token the winner got."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.oidc.support import pkce_pair, query_of
from tests.oidc.test_oidc_e2e import device_sign_in
from tests.procs import make_agent, start_service


@pytest.mark.postgres
def test_one_code_redeemed_once_across_two_replicas(tmp_path, postgres_url):
    first = start_service(tmp_path, postgres_url, workers=2)  # two processes, one database
    agent = make_agent(tmp_path, "replicas")
    try:
        agent.enroll(first.url, first.enroll_code("rita@example.com"))
        agent.start()
        redirect_uri = "http://127.0.0.1:9/cb"
        added = first.cli_json("oidc-client", "add", "--name", "R", "--redirect-uri", redirect_uri)
        verifier, challenge = pkce_pair()
        done = device_sign_in(
            first,
            agent,
            f"/oidc/authorize?client_id={added['client_id']}&response_type=code&scope=openid"
            f"&redirect_uri={redirect_uri}&state=s&code_challenge={challenge}"
            "&code_challenge_method=S256",
        )
        code = query_of(done.headers["location"])["code"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        auth = (added["client_id"], added["client_secret"])

        def redeem(i: int) -> httpx.Response:
            # A fresh connection each: the kernel spreads them over both workers.
            return httpx.post(first.url + "/oidc/token", data=form, auth=auth, timeout=30)

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(redeem, range(20)))
        statuses = sorted(r.status_code for r in results)
        assert statuses.count(200) == 1, [r.text for r in results]
        refused = {r.json()["code"] for r in results if r.status_code != 200}
        assert refused == {"oidc_code_reused"}
        (winner,) = [r.json() for r in results if r.status_code == 200]
        # The reuse revoked what the code issued.
        info = httpx.get(
            first.url + "/oidc/userinfo",
            headers={"Authorization": f"Bearer {winner['access_token']}"},
        )
        assert info.status_code == 401
    finally:
        agent.stop()
        first.stop()
