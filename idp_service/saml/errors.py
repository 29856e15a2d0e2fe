"""The one exception type of the SAML surface for bad or refused input.

Every failure has a stable ``code`` (shown on the error page and recorded in the
audit log). When the request was authentic enough that its ACS URL can be
trusted, ``saml_status`` is set and the SP receives a SAML Response with that
status; otherwise the browser gets an error page and nothing goes to the SP.
"""

from __future__ import annotations

from typing import Any

MESSAGES: dict[str, str] = {
    "saml_malformed": "The sign-in request from the application is not valid SAML.",
    "saml_too_large": "The sign-in request is too large.",
    "saml_dtd_forbidden": "The sign-in request contains a document type declaration.",
    "saml_inflate_limit": "The compressed sign-in request expands beyond the allowed size.",
    "saml_unknown_sp": "The application that sent you here is not registered with devicetrust.",
    "saml_sp_disabled": "Sign-in to this application is disabled.",
    "saml_acs_mismatch": "The application asked for a reply address it has not registered.",
    "saml_wrong_destination": "The sign-in request was addressed to a different server.",
    "saml_replayed": "This sign-in request was already used.",
    "saml_expired_request": "The sign-in request is too old, or its clock is wrong.",
    "saml_signature_required": "This application must sign its sign-in requests.",
    "saml_signature_invalid": "The sign-in request's signature does not verify.",
    "saml_bad_id": "The sign-in request's identifier is not valid.",
    "saml_relay_state_too_long": "The sign-in request's RelayState is too long.",
    "saml_unsupported_binding": "This SAML binding is not supported here.",
    "saml_broker_subject_missing": "The identity broker did not name the user to verify.",
    "saml_idp_initiated_disabled": "This application does not accept IdP-initiated sign-in.",
    "saml_login_finished": "This sign-in was already completed, and its answer can no longer "
    "be sent to the application.",
    "saml_no_passive": "devicetrust cannot sign you in without showing its page.",
    "saml_nameid_policy": "The application asked for a NameID format it is not set up for.",
    "saml_no_authn_context": "The application asked for a kind of sign-in (such as a password) "
    "that devicetrust does not perform.",
}

HINTS: dict[str, str] = {
    "saml_unknown_sp": "Ask your IT administrator to add the application: devicetrust sp add.",
    "saml_acs_mismatch": "The application's metadata in devicetrust may be out of date.",
    "saml_replayed": "Go back to the application and start the sign-in again.",
    "saml_expired_request": "Go back to the application and start the sign-in again.",
    "saml_login_finished": "Go back to the application and start the sign-in again.",
    "saml_signature_invalid": "The application's signing certificate may have changed; "
    "ask your IT administrator to refresh its metadata.",
    "saml_no_authn_context": "Ask your IT administrator: the application's requested "
    "authentication context does not match devicetrust's device check.",
}


class SamlError(Exception):
    """Bad or refused SAML input, with a stable ``code``."""

    def __init__(
        self,
        code: str,
        detail: str = "",
        *,
        status: int = 400,
        saml_status: tuple[str, ...] | None = None,
        audit_details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.status = status
        self.saml_status = saml_status
        self.audit_details = audit_details

    @property
    def message(self) -> str:
        """What the person in front of the browser reads."""
        return MESSAGES.get(self.code, "The sign-in request could not be accepted.")

    @property
    def hint(self) -> str:
        """What to do next, when there is something to do."""
        return HINTS.get(self.code, "")
