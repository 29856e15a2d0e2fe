"""What a person reads when a sign-in does not go through: one sentence per stable code.

The login page, the SAML refusal page and the console's refusal page all say
the same thing for the same code; the codes themselves (and their hints in
``idp_service/platform/errors.py``) are the stable part, these texts may be reworded.
"""

from __future__ import annotations

from trust_protocol.errors import CODES

MESSAGES: dict[str, str] = {
    "reverify_required": "Sign in with your organization's identity provider to confirm it is "
    "still you.",
    "reauth_reused": "This device's sign-in token was used twice, so it may have been copied. "
    "Its tokens are revoked; sign in with your organization's identity provider again.",
    "device_unknown": "This device is not enrolled yet.",
    "device_pending": "This device is waiting for approval by IT or by one of your trusted "
    "devices.",
    "device_denied": "Your IT administrator denied this device.",
    "device_revoked": "This device's trust was revoked.",
    "device_suspended": "This device is suspended pending a security review by IT.",
    "owner_inactive": "Your account is deactivated.",
    "device_key_mismatch": "This device answered with a key that does not match its enrollment.",
    "expired": "This sign-in took too long and has expired.",
    "posture_blocked": "This device does not meet your organization's security requirements.",
    "login_elsewhere": "This sign-in was answered by a device in another browser, so it "
    "cannot be continued here. Start a new sign-in on this computer.",
}


def message_for(code: str | None) -> str:
    """The sentence for ``code``: ours, else the protocol's, else the code itself."""
    code = code or ""
    return MESSAGES.get(code, CODES.get(code, code))
