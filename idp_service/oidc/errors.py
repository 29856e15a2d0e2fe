"""The one exception type of the OpenID Connect surface for bad or refused input.

Every refusal has a stable ``code`` (``oidc_*``, recorded in the audit log and
sent as the extra ``code`` member of an OAuth error) and the OAuth ``error``
value it maps to (``invalid_request``, ``invalid_grant``, ...). ``redirect`` is
True once the client and its redirect URI are known good: only then may the
error go back to the client; before that the browser gets an error page.
"""

from __future__ import annotations

MESSAGES: dict[str, str] = {
    "oidc_unknown_client": "The application that sent you here is not registered with devicetrust.",
    "oidc_client_disabled": "Sign-in to this application is disabled.",
    "oidc_redirect_uri_mismatch": "The application asked for a reply address it has not "
    "registered.",
    "oidc_malformed": "The sign-in request is not a valid OpenID Connect request.",
    "oidc_too_large": "The request is too large.",
    "oidc_unsupported_response_type": "The application asked for a response type devicetrust "
    "does not issue to it.",
    "oidc_invalid_scope": "The request does not ask for the openid scope.",
    "oidc_nonce_required": "The request has no nonce.",
    "oidc_state_required": "The request has no state.",
    "oidc_pkce_required": "The request has no PKCE code challenge (S256).",
    "oidc_pkce_method": "Only the S256 PKCE method is accepted.",
    "oidc_request_not_supported": "Request objects are not supported.",
    "oidc_login_required": "devicetrust cannot sign you in without showing its page.",
    "oidc_hint_required": "The request has no id_token_hint naming the user.",
    "oidc_hint_invalid": "The id_token_hint could not be verified.",
    "oidc_hint_expired": "The id_token_hint is too old.",
    "oidc_hint_keys_unavailable": "The tenant's signing keys could not be fetched.",
    "user_unprovisioned": "The user the application named is not provisioned in devicetrust.",
    "owner_inactive": "The user the application named is deactivated.",
    "oidc_login_finished": "This sign-in was already completed.",
    "oidc_invalid_client": "The client could not be authenticated.",
    "oidc_assertion_replayed": "The client assertion was used before; each may be used once.",
    "oidc_unsupported_grant_type": "Only the authorization_code grant is supported.",
    "oidc_invalid_grant": "The code is unknown, expired, or issued to another client.",
    "oidc_code_reused": "The code was used already; the tokens issued from it are revoked.",
    "oidc_pkce_mismatch": "The PKCE code verifier does not match the challenge.",
    "oidc_invalid_token": "The access token is unknown, expired or revoked.",
    "oidc_logout_invalid": "The logout request could not be accepted.",
}

HINTS: dict[str, str] = {
    "oidc_unknown_client": "Ask your IT administrator to add it: devicetrust oidc-client add.",
    "oidc_redirect_uri_mismatch": "Redirect URIs must match a registered one exactly: "
    "devicetrust oidc-client update --redirect-uri.",
    "user_unprovisioned": "Ask your IT administrator to provision you in devicetrust (SCIM).",
    "oidc_hint_keys_unavailable": "Check the client's --eam-jwks-url and the network path to it.",
    "oidc_login_finished": "Go back to the application and start the sign-in again.",
}


class OidcError(Exception):
    """Bad or refused OpenID Connect input, with a stable ``code`` and its OAuth ``error``."""

    def __init__(
        self,
        code: str,
        detail: str = "",
        *,
        error: str = "invalid_request",
        status: int = 400,
        redirect: bool = False,
    ) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.error = error
        self.status = status
        self.redirect = redirect

    @property
    def message(self) -> str:
        """What the person in front of the browser (or the client's developer) reads."""
        return MESSAGES.get(self.code, "The request could not be accepted.")

    @property
    def hint(self) -> str:
        """What to do next, when there is something to do."""
        return HINTS.get(self.code, "")
