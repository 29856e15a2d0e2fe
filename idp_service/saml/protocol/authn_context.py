"""``RequestedAuthnContext``: reading it from an AuthnRequest and deciding what we can assert.

SAML core section 3.3.2.2.1: the IdP either asserts an authentication context
that satisfies the request, or answers with ``Responder`` /
``NoAuthnContext``. This module holds the classes devicetrust can truthfully
assert, the strength order used for ``minimum``, ``better`` and ``maximum``
comparisons, and :func:`choose`, which picks the class to put in the
assertion's ``AuthnContextClassRef`` (or None: nothing we can assert
satisfies the request).

What devicetrust does on every sign-in: a device registered to the user
answers a fresh server challenge bound to this sign-in by signing it with its
device key (Ed25519, kept by the agent). That is one possession factor. No
password is checked, so the password classes (``Password``,
``PasswordProtectedTransport``, ``InternetProtocolPassword``) would be false;
the PKI classes (``X509``, ``SoftwarePKI``, ``SmartcardPKI``, ``XMLDSig``,
``SPKI``, ``PGP``) each name a key-validation scheme (certificates, PGP ...)
we do not use; the ``Mobile*`` classes describe mobile-network contracts; and
a multi-factor class would claim a second factor we did not check. So the
classes we assert are our own ``urn:devicetrust:ac:classes:device-bound`` and,
only when an SP asks for it, the standard ``unspecified`` (always true).

Strength order (who is "stronger" is the responder's call in SAML):
``unspecified`` < ``InternetProtocol``, ``Password`` <
``InternetProtocolPassword``, ``PasswordProtectedTransport`` < device-bound <
the multi-factor classes in :data:`RANK`. A device key answering a challenge
bound to the sign-in is phishing resistant and sends nothing reusable, so it
ranks above a password over TLS; it is one factor, so it ranks below any
multi-factor class. A class not in :data:`RANK` cannot be ranked: it is
satisfied only by an ``exact`` match.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from idp_service.saml.errors import SamlError
from idp_service.saml.protocol.constants import (
    AC_PASSWORD,
    AC_PASSWORD_PROTECTED,
    AC_PREFIX,
    AC_UNSPECIFIED,
    AUTHN_CONTEXT_DEVICE_BOUND,
    NS_SAML,
    NS_SAMLP,
)

COMPARISONS = ("exact", "minimum", "better", "maximum")
MAX_REFS = 32  # class or declaration references in one request
MAX_REF_LENGTH = 1024

# What we may put in AuthnContextClassRef, in order of preference (the most specific first).
ASSERTABLE = (AUTHN_CONTEXT_DEVICE_BOUND, AC_UNSPECIFIED)

# Strength of the classes we can compare; a higher number is stronger.
RANK: dict[str, int] = {
    AC_UNSPECIFIED: 0,
    AC_PREFIX + "InternetProtocol": 10,
    AC_PASSWORD: 10,
    AC_PREFIX + "InternetProtocolPassword": 20,
    AC_PASSWORD_PROTECTED: 20,
    AUTHN_CONTEXT_DEVICE_BOUND: 30,
    AC_PREFIX + "MobileTwoFactorUnregistered": 40,
    AC_PREFIX + "MobileTwoFactorContract": 40,
    AC_PREFIX + "SmartcardPKI": 40,
    "https://refeds.org/profile/mfa": 40,
    "http://schemas.microsoft.com/claims/multipleauthn": 40,
}

_P = f"{{{NS_SAMLP}}}"
_S = f"{{{NS_SAML}}}"


@dataclass(frozen=True)
class Requested:
    """A parsed ``RequestedAuthnContext``: the comparison and the references, in order."""

    comparison: str
    class_refs: tuple[str, ...]
    decl_refs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """For audit details."""
        data: dict[str, object] = {"comparison": self.comparison, "classes": list(self.class_refs)}
        if self.decl_refs:
            data["declarations"] = list(self.decl_refs)
        return data


def parse(request: etree._Element) -> Requested | None:
    """The ``RequestedAuthnContext`` of an AuthnRequest element, or None if it has none.

    Raises :class:`SamlError` (``saml_malformed``) for anything the schema does not
    allow: two of them, an unknown ``Comparison``, no references, both class and
    declaration references, other child elements, empty or oversized values.
    """
    found = request.findall(_P + "RequestedAuthnContext")
    if not found:
        return None
    if len(found) > 1:
        raise SamlError("saml_malformed", "RequestedAuthnContext appears twice")
    el = found[0]
    comparison = el.get("Comparison", "exact")
    if comparison not in COMPARISONS:
        raise SamlError(
            "saml_malformed", f"RequestedAuthnContext Comparison must be one of {COMPARISONS}"
        )
    classes: list[str] = []
    decls: list[str] = []
    for child in el:
        if child.tag == _S + "AuthnContextClassRef":
            bucket = classes
        elif child.tag == _S + "AuthnContextDeclRef":
            bucket = decls
        else:
            raise SamlError("saml_malformed", "unexpected element in RequestedAuthnContext")
        value = (child.text or "").strip()
        if not value or len(value) > MAX_REF_LENGTH:
            raise SamlError(
                "saml_malformed", "an authentication context reference is empty or too long"
            )
        bucket.append(value)
        if len(classes) + len(decls) > MAX_REFS:
            raise SamlError("saml_malformed", "too many authentication context references")
    if not classes and not decls:
        raise SamlError("saml_malformed", "RequestedAuthnContext names no context")
    if classes and decls:
        raise SamlError("saml_malformed", "RequestedAuthnContext mixes class and declaration refs")
    return Requested(comparison, tuple(classes), tuple(decls))


def _satisfies(ours: int, comparison: str, requested: list[int]) -> bool:
    if comparison == "minimum":
        return any(ours >= r for r in requested)
    if comparison == "better":
        return any(ours > r for r in requested)
    return any(ours <= r for r in requested)  # maximum


def choose(requested: Requested | None) -> str | None:
    """The class to assert for ``requested``, or None when none of ours satisfies it.

    * no RequestedAuthnContext: the device-bound class;
    * ``exact``: one of ours that is literally requested;
    * ``minimum`` / ``better`` / ``maximum``: the strongest of ours that is at least
      as strong as / stronger than / no stronger than one requested class we can rank
      (SAML's "as strong as possible without exceeding" for ``maximum``).

    Declaration references are never satisfied: we publish no authentication
    context declarations.
    """
    if requested is None:
        return AUTHN_CONTEXT_DEVICE_BOUND
    if requested.comparison == "exact":
        for ours in ASSERTABLE:
            if ours in requested.class_refs:
                return ours
        return None
    ranks = [RANK[c] for c in requested.class_refs if c in RANK]
    if not ranks:
        return None
    # ASSERTABLE is ordered strongest first, so the first that satisfies is the strongest.
    for ours in ASSERTABLE:
        if _satisfies(RANK[ours], requested.comparison, ranks):
            return ours
    return None
