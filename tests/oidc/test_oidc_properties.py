"""Properties where our parsers meet untrusted bytes: any id_token_hint is refused with a stable
code (never an exception), and any authorize query gets a 4xx page or a redirect, never a 500."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idp_service.oidc import eam
from idp_service.oidc.errors import OidcError
from tests.oidc.support import Tenant

TENANT = eam.Tenant(
    client_id="c",
    tenant_id="t",
    issuer="https://login.microsoftonline.com/t/v2.0",
    jwks_url="http://127.0.0.1:9/keys",
    max_age=600,
    user_match="external_id",
)
_KEYS = Tenant.jwk_of(rsa.generate_private_key(public_exponent=65537, key_size=2048), "k1")


def _keyset(url: str):
    from joserfc.jwk import KeySet

    return KeySet.import_key_set({"keys": [_KEYS]})


WORDS = ["c", "https://rp.example/cb", "code", "id_token", "openid", "none", "S256", "A" * 43]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


segments = st.one_of(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=64
    ),
    st.binary(max_size=64).map(b64),
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64"]),
        st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none()),
        max_size=4,
    ).map(lambda d: b64(json.dumps(d).encode())),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.tuples(segments, segments, segments).map(".".join)))
def test_any_hint_is_refused_with_a_stable_code(token):
    keys = eam.HintKeys(fetch=_keyset)
    try:
        eam.verify_hint(keys, TENANT, token)
    except OidcError as exc:
        assert exc.code in {"oidc_hint_invalid", "oidc_hint_expired"}
        assert exc.redirect
    else:  # pragma: no cover - a random string never carries the tenant's signature
        raise AssertionError("accepted")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "client_id",
                    "redirect_uri",
                    "response_type",
                    "scope",
                    "state",
                    "nonce",
                    "code_challenge",
                    "prompt",
                    "id_token_hint",
                    "x",
                ]
            ),
            st.text(max_size=40),
        ),
        max_size=8,
    )
)
def test_any_authorize_query_is_answered_without_a_server_error(idp_app, pairs):
    from urllib.parse import urlencode

    from idp_service.oidc import clients

    svc = idp_app.extensions["devicetrust"]
    with svc.db.session() as s:
        if clients.store.get_client(s, "c") is None:
            clients.add(s, {"client_id": "c", "redirect_uris": ["https://rp.example/cb"]})
    r = idp_app.test_client().get("/oidc/authorize?" + urlencode(pairs))
    assert r.status_code in (303, 400, 403, 413, 414) or (
        r.status_code == 200 and b"error" in r.data
    )
