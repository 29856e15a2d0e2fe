"""The service as an OpenID Connect relying party, against panva's oidc-provider.

One real service process and one provider process serve the whole module
(SQLite). Each test starts its own login transaction with its own cookie jar
(a browser), signs in at the provider's own login form, and delivers the
provider's answer to our callback, as is or altered by the provider itself
(``op.mjs``'s fault injection re-signs the ID token it issues). Nothing stands in
for the provider or for our client.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy import create_engine, select

from idp_service.platform.models import AuditEvent
from tests.upstream.support import set_active, sign_in, start_login, upstream_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("upstream")
    svc, op = upstream_stack(tmp, f"sqlite:///{tmp / 'db.sqlite'}")
    svc.cli("users", "add", "nora@example.com")
    svc.cli("users", "add", "ivan@example.com")
    set_active(svc, "ivan@example.com", False)
    try:
        yield svc, op
    finally:
        svc.stop()
        op.stop()


def audit_rows(svc, action="upstream.signin"):
    engine = create_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(AuditEvent.outcome, AuditEvent.code, AuditEvent.details)
                .where(AuditEvent.action == action)
                .order_by(AuditEvent.id)
            ).all()
    finally:
        engine.dispose()


def refusal(resp):
    found = re.search(r'<code id="code">([a-z_]+)</code>', resp.text)
    return resp.status_code, found.group(1) if found else None


def run(svc, op, login, *, fault=None, alter=None):
    """One upstream sign-in in a fresh browser: (that browser, txn, callback response)."""
    http = requests.Session()
    txn = start_login(http, svc)
    if fault is not None:
        op.tamper(**fault)
    callback = sign_in(http, svc, op, txn, login)
    if alter is not None:
        callback = alter(callback)
    return http, txn, http.get(callback, allow_redirects=False, timeout=20)


def with_state(url, state):
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["state"] = state
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_sign_in_offers_registration_as_the_scim_user(stack):
    svc, op = stack
    http, txn, resp = run(svc, op, "nora@example.com")
    assert resp.status_code == 303 and resp.headers["Location"] == f"/login/{txn}"
    options = http.get(f"{svc.url}/login/{txn}/enroll-options", timeout=10).json()
    assert options["tofu"] == {"user": "nora@example.com", "mode": "upstream"}
    # the register challenge for this sign-in is now available, bound upstream:<txn>
    challenge = http.post(
        f"{svc.url}/login/{txn}/register-challenge", json={"mode": "upstream"}, timeout=10
    )
    assert challenge.status_code == 200, challenge.text
    outcome, code, details = audit_rows(svc)[-1]
    assert (outcome, code) == ("ok", None)
    assert details["idp"] == "corp" and details["purpose"] == "enroll"
    # The same answer again: the request was used (single use), nothing else happens.
    again = http.get(resp.url, allow_redirects=False, timeout=10)
    assert refusal(again) == (403, "upstream_state_invalid")
    assert audit_rows(svc)[-1][2]["reason"] == "used"


def test_no_upstream_sign_in_no_registration_without_a_code(stack):
    svc, _ = stack
    http = requests.Session()
    txn = start_login(http, svc)
    assert http.get(f"{svc.url}/login/{txn}/enroll-options", timeout=10).json()["tofu"] is None
    resp = http.post(
        f"{svc.url}/login/{txn}/register-challenge", json={"mode": "upstream"}, timeout=10
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "upstream_required"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"claims": {"nonce": "not-the-nonce-we-sent"}}, "nonce"),
        ({"claims": {"aud": "some-other-client"}}, "aud"),
        ({"claims": {"aud": ["devicetrust-test", "other"], "azp": "other"}}, "azp"),
        ({"claims": {"exp": 1_000_000_000, "iat": 999_999_000}}, "exp"),
        ({"claims": {"iss": "http://127.0.0.1:1/"}}, "iss"),
        ({"foreign_key": True, "kid": "unpublished"}, "signature"),
        ({"foreign_key": True}, "signature"),  # the published kid, another key
    ],
)
def test_a_bad_id_token_is_refused(stack, fault, reason):
    svc, op = stack
    http, txn, resp = run(svc, op, "nora@example.com", fault=fault)
    assert refusal(resp) == (403, "upstream_token_invalid")
    assert "could not be verified" in resp.text
    outcome, code, details = audit_rows(svc)[-1]
    assert (outcome, code, details["reason"]) == ("rejected", "upstream_token_invalid", reason)
    assert http.get(f"{svc.url}/login/{txn}/enroll-options", timeout=10).json()["tofu"] is None


def test_an_iat_far_in_the_past_is_refused(stack):
    svc, op = stack
    import time

    now = int(time.time())
    _, _, resp = run(svc, op, "nora@example.com", fault={"claims": {"iat": now - 3600}})
    assert refusal(resp) == (403, "upstream_token_invalid")
    assert audit_rows(svc)[-1][2]["reason"] == "iat"


def test_a_state_mismatch_is_refused_before_any_exchange(stack):
    svc, op = stack
    http, txn, resp = run(
        svc, op, "nora@example.com", alter=lambda url: with_state(url, "forged-state-value")
    )
    assert refusal(resp) == (403, "upstream_state_invalid")
    assert audit_rows(svc)[-1][2]["reason"] == "unknown"
    assert http.get(f"{svc.url}/login/{txn}/enroll-options", timeout=10).json()["tofu"] is None


def with_iss(url, iss):
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    assert "iss" in query  # oidc-provider sends it (RFC 9207) and says so in its metadata
    if iss is None:
        del query["iss"]
    else:
        query["iss"] = iss
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.parametrize(
    ("iss", "reason"),
    [
        ("https://other-idp.example", "iss_mismatch"),
        ("slash", "iss_mismatch"),
        (None, "iss_missing"),
    ],
)
def test_an_answer_naming_another_issuer_is_refused_before_any_exchange(stack, iss, reason):
    """RFC 9207 (mix-up): every IdP answers at one callback; the answer's iss must be the
    provider this request went to, and a provider that advertises iss must send it."""
    svc, op = stack
    value = op.issuer + "/" if iss == "slash" else iss
    http, txn, resp = run(svc, op, "nora@example.com", alter=lambda url: with_iss(url, value))
    assert refusal(resp) == (403, "upstream_state_invalid")
    outcome, code, details = audit_rows(svc)[-1]
    assert (outcome, code, details["reason"]) == ("rejected", "upstream_state_invalid", reason)
    assert http.get(f"{svc.url}/login/{txn}/enroll-options", timeout=10).json()["tofu"] is None


def test_an_answer_delivered_to_another_browser_is_refused(stack):
    svc, op = stack
    http = requests.Session()
    txn = start_login(http, svc)
    callback = sign_in(http, svc, op, txn, "nora@example.com")
    other = requests.Session()
    start_login(other, svc)
    resp = other.get(callback, allow_redirects=False, timeout=10)
    assert refusal(resp) == (403, "upstream_state_invalid")
    assert audit_rows(svc)[-1][2]["reason"] == "other_browser"
    # and the request is spent: the rightful browser cannot use it afterwards either
    assert refusal(http.get(callback, allow_redirects=False, timeout=10))[1] == (
        "upstream_state_invalid"
    )


def test_users_not_in_scim_or_inactive_are_refused_and_nothing_is_created(stack):
    svc, op = stack
    _, txn, resp = run(svc, op, "stranger@example.com")
    assert refusal(resp) == (403, "upstream_user_unknown")
    assert "not a user of this organization" in resp.text
    _, _, resp = run(svc, op, "ivan@example.com")
    assert refusal(resp) == (403, "upstream_user_inactive")
    names = [u["user_name"] for u in svc.cli_json("users", "list")]
    assert "stranger@example.com" not in names


def test_unknown_idp_and_foreign_transaction(stack):
    svc, _ = stack
    http = requests.Session()
    txn = start_login(http, svc)
    resp = http.get(f"{svc.url}/upstream/nope/start?txn={txn}", allow_redirects=False, timeout=10)
    assert refusal(resp) == (404, "upstream_unknown_idp")
    other = requests.Session()
    resp = other.get(f"{svc.url}/upstream/corp/start?txn={txn}", allow_redirects=False, timeout=10)
    assert refusal(resp) == (403, "upstream_state_invalid")


def test_key_rotation_is_followed_without_a_restart(stack):
    svc, op = stack
    _, _, resp = run(svc, op, "nora@example.com")
    assert resp.status_code == 303
    old = op.kid
    op.rotate("key-rotated")
    _, _, resp = run(svc, op, "nora@example.com")
    assert resp.status_code == 303, resp.text  # the new key was fetched; no restart
    # A token under the old key id, which the provider no longer publishes: refused.
    _, _, resp = run(svc, op, "nora@example.com", fault={"foreign_key": True, "kid": old})
    assert refusal(resp) == (403, "upstream_token_invalid")
