"""Receiving AuthnRequests: decode, parse (hardened), verify the signature, check against the SP.

Untrusted bytes go through three gates, each with a hard limit and each failing
only with :class:`~idp_service.saml.errors.SamlError`:

1. :func:`read_redirect` / :func:`read_post` - size caps on the received
   parameters, strict base64, and (Redirect) raw-DEFLATE inflation with a hard
   output cap through ``zlib.decompressobj().decompress(data, max_length)``.
   python3-saml's ``decode_base64_and_inflate`` has no cap and is not used here.
2. :func:`parse` - the hardened parser of :mod:`.xmlsafe`, then the structure:
   a ``samlp:AuthnRequest``, Version 2.0, an ``ID`` that is a plain xsd:ID (no
   ``${...}``, no markup), an Issuer, timestamps.
3. :func:`check` - the SP exists and is enabled; the signature verifies
   (enveloped on POST, detached over the query string *as received* on
   Redirect); Destination is this endpoint; the request is fresh; the ACS is
   one of the SP's own, by index or exact URL plus binding. After that the ACS
   can be trusted, so :func:`policy_check` failures (among them a
   RequestedAuthnContext we cannot satisfy, :mod:`.authn_context`) are answered
   to the SP with a SAML status. Each ID is single use: the endpoint records it, until
   :func:`seen_until`, in the same write that starts the login transaction
   (``sso_sql.accept``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from lxml import etree

from idp_service.platform.models import utcnow
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import authn_context, sp_view, xmldsig, xmlsafe
from idp_service.saml.protocol.constants import (
    AUTHN_CONTEXT_DEVICE_BOUND,
    BINDING_POST,
    BINDING_REDIRECT,
    NAMEID_FORMATS,
    NAMEID_UNSPECIFIED,
    NS_SAML,
    NS_SAMLP,
    STATUS_INVALID_NAMEID_POLICY,
    STATUS_NO_AUTHN_CONTEXT,
    STATUS_NO_PASSIVE,
    STATUS_REQUEST_DENIED,
    STATUS_REQUESTER,
    STATUS_RESPONDER,
)
from idp_service.saml.tables import ServiceProvider

MAX_ENCODED = 64 * 1024  # the SAMLRequest parameter as received
MAX_XML = 128 * 1024  # the decoded (inflated) document
MAX_POST_BODY = 256 * 1024
MAX_RELAY_STATE = 1024  # bytes; SAML bindings ask for 80, real SPs send URLs
MAX_AGE = dt.timedelta(minutes=8)  # how old an IssueInstant may be
MAX_FUTURE = dt.timedelta(minutes=3)  # how far ahead an SP's clock may run

ID_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,255}\Z")
INSTANT_PATTERN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]00:00)\Z")
_P = f"{{{NS_SAMLP}}}"
_S = f"{{{NS_SAML}}}"
_TRUE = ("true", "1")


@dataclass(frozen=True)
class Incoming:
    """A received SAMLRequest before it is trusted."""

    binding: str
    xml: bytes
    relay_state: str | None
    # Redirect binding only: the detached signature and the exact bytes it covers.
    sig_alg: str | None = None
    signature: bytes | None = None
    signed_query: bytes | None = None


@dataclass(frozen=True)
class AuthnRequest:
    """The fields of an AuthnRequest that devicetrust acts on."""

    id: str
    issuer: str
    issue_instant: dt.datetime
    destination: str | None
    acs_url: str | None
    acs_index: int | None
    protocol_binding: str | None
    nameid_format: str | None
    is_passive: bool
    force_authn: bool
    subject: str | None
    root: etree._Element
    requested_authn_context: authn_context.Requested | None = None


@dataclass(frozen=True)
class Accepted:
    """A request whose SP, signature, Destination, freshness and ACS all checked out."""

    request: AuthnRequest
    sp_id: str
    sp_entity_id: str
    sp_name: str
    acs_url: str
    binding: str
    relay_state: str | None
    signed: bool
    identity_broker: bool
    sp_settings: dict[str, Any]

    def authn_context_class(self) -> str | None:
        """The AuthnContextClassRef to assert, or None: we cannot satisfy the SP's
        RequestedAuthnContext and the SP is strict about it (the default)."""
        chosen = authn_context.choose(self.request.requested_authn_context)
        if chosen is None and self.sp_settings.get("requested_authn_context") == "lenient":
            return AUTHN_CONTEXT_DEVICE_BOUND
        return chosen

    def context(self) -> dict[str, Any]:
        """What the login transaction keeps (JSON) until the completer answers the SP.

        ``broker_subject`` is the user an identity broker asks us to verify, and
        ``tofu_subject`` marks it as an identity proof for registering that
        user's first device (only ever set for a signed broker request).
        ``sp`` is the SP's settings as they were when the request was accepted.
        ``authn_context_class`` is what the assertion's AuthnContextClassRef will say.
        """
        subject = self.request.subject if self.identity_broker else None
        return {
            "sp_entity_id": self.sp_entity_id,
            "sp_name": self.sp_name,
            "acs_url": self.acs_url,
            "binding": self.binding,
            "request_id": self.request.id,
            "relay_state": self.relay_state,
            "nameid_format": self.request.nameid_format,
            "broker_subject": subject,
            "tofu_subject": subject if self.signed else None,
            "sp": self.sp_settings,
            "authn_context_class": self.authn_context_class() or AUTHN_CONTEXT_DEVICE_BOUND,
        }


# ---- 1. reading the binding ------------------------------------------------------------


def _b64(value: str, limit: int) -> bytes:
    if len(value) > limit:
        raise SamlError("saml_too_large", f"SAMLRequest exceeds {limit} characters", status=413)
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SamlError("saml_malformed", "SAMLRequest is not base64") from None


def inflate(data: bytes, limit: int = MAX_XML) -> bytes:
    """Raw-DEFLATE ``data`` to at most ``limit`` bytes; a bigger output is refused, not cut."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        # One byte more than allowed tells "too big" from "exactly at the limit".
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise SamlError("saml_malformed", "SAMLRequest is not DEFLATE-compressed") from None
    if len(out) > limit:
        raise SamlError("saml_inflate_limit", f"inflates beyond {limit} bytes", status=413)
    if not inflater.eof:
        raise SamlError("saml_malformed", "SAMLRequest is a truncated DEFLATE stream")
    return out


def check_relay_state(relay_state: str | None) -> str | None:
    if (
        relay_state is not None
        and len(relay_state.encode("utf-8", "surrogatepass")) > MAX_RELAY_STATE
    ):
        raise SamlError("saml_relay_state_too_long", f"RelayState exceeds {MAX_RELAY_STATE} bytes")
    return relay_state


def read_redirect(raw_query: bytes) -> Incoming:
    """Read the HTTP-Redirect binding from the raw query string, keeping its exact encoding."""
    if len(raw_query) > MAX_ENCODED * 3 + 4 * MAX_RELAY_STATE:
        raise SamlError("saml_too_large", "query string too large", status=413)
    raw: dict[str, bytes] = {}
    for part in raw_query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        key = name.decode("ascii", "replace")
        if key in ("SAMLRequest", "RelayState", "SigAlg", "Signature"):
            if key in raw:
                raise SamlError("saml_malformed", f"{key} appears twice")
            raw[key] = value
    if "SAMLRequest" not in raw:
        raise SamlError("saml_malformed", "no SAMLRequest parameter")

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        try:
            return unquote_plus(value.decode("ascii"), errors="strict")
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise SamlError("saml_malformed", f"{key} is not URL-encoded UTF-8") from None

    saml_request = text("SAMLRequest") or ""
    relay_state = check_relay_state(text("RelayState"))
    xml = inflate(_b64(saml_request, MAX_ENCODED))
    sig_alg, signature, signed_query = None, None, None
    if "Signature" in raw:
        sig_alg = text("SigAlg")
        if not sig_alg:
            raise SamlError("saml_signature_invalid", "Signature without SigAlg")
        signature = _b64(text("Signature") or "", 8192)
        signed_query = b"SAMLRequest=" + raw["SAMLRequest"]
        if "RelayState" in raw:
            signed_query += b"&RelayState=" + raw["RelayState"]
        signed_query += b"&SigAlg=" + raw["SigAlg"]
    return Incoming(BINDING_REDIRECT, xml, relay_state, sig_alg, signature, signed_query)


def read_post(saml_request: str | None, relay_state: str | None) -> Incoming:
    """Read the HTTP-POST binding's form fields."""
    if not saml_request:
        raise SamlError("saml_malformed", "no SAMLRequest field")
    return Incoming(BINDING_POST, _b64(saml_request, MAX_ENCODED), check_relay_state(relay_state))


# ---- 2. parsing ---------------------------------------------------------------------------


def _instant(text: str | None, what: str) -> dt.datetime:
    if not text or not INSTANT_PATTERN.match(text):
        raise SamlError("saml_malformed", f"{what} is not a UTC xsd:dateTime")
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError:
        raise SamlError("saml_malformed", f"{what} is not a valid date") from None


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def _text(el: etree._Element | None, limit: int, what: str) -> str | None:
    if el is None:
        return None
    value = (el.text or "").strip()
    if len(value) > limit:
        raise SamlError("saml_malformed", f"{what} is too long")
    return value or None


def parse(xml: bytes) -> AuthnRequest:
    """Parse an AuthnRequest document; raises only :class:`SamlError`."""
    root = xmlsafe.parse(xml, max_size=MAX_XML)
    if root.tag != _P + "AuthnRequest":
        raise SamlError("saml_malformed", "not a samlp:AuthnRequest")
    if root.get("Version") != "2.0":
        raise SamlError("saml_malformed", "Version must be 2.0")
    request_id = root.get("ID") or ""
    if not ID_PATTERN.match(request_id):
        raise SamlError("saml_bad_id", "ID must be an xsd:ID of letters, digits, _ . -")
    issuer = _text(root.find(_S + "Issuer"), 1024, "Issuer")
    if not issuer:
        raise SamlError("saml_malformed", "no Issuer")
    index_text = root.get("AssertionConsumerServiceIndex")
    acs_index = None
    if index_text is not None:
        if not (index_text.isascii() and index_text.isdigit()) or len(index_text) > 5:
            raise SamlError("saml_malformed", "AssertionConsumerServiceIndex is not an index")
        acs_index = int(index_text)
    policy = root.find(_P + "NameIDPolicy")
    nameid_format = policy.get("Format") if policy is not None else None
    subject = _text(root.find(f"{_S}Subject/{_S}NameID"), 256, "Subject NameID")
    return AuthnRequest(
        id=request_id,
        issuer=issuer,
        issue_instant=_instant(root.get("IssueInstant"), "IssueInstant"),
        destination=root.get("Destination"),
        acs_url=root.get("AssertionConsumerServiceURL"),
        acs_index=acs_index,
        protocol_binding=root.get("ProtocolBinding"),
        nameid_format=nameid_format,
        is_passive=_bool(root.get("IsPassive")),
        force_authn=_bool(root.get("ForceAuthn")),
        subject=subject,
        root=root,
        requested_authn_context=authn_context.parse(root),
    )


# ---- 3. checking against the SP -----------------------------------------------------------


def check(
    incoming: Incoming,
    request: AuthnRequest,
    sp: ServiceProvider | None,
    *,
    sso_url: str,
    now: dt.datetime | None = None,
) -> Accepted:
    """Check a parsed request against its SP; the result's ACS URL is safe to answer at."""
    if sp is None:
        raise SamlError("saml_unknown_sp", "no SP with this entityID", status=404)
    if not sp.enabled:
        raise SamlError("saml_sp_disabled", "the SP is disabled", status=403)
    signed = False
    certs = list(sp.signing_certs or [])
    if incoming.binding == BINDING_REDIRECT and incoming.signature is not None:
        xmldsig.verify_detached(
            incoming.signed_query or b"", incoming.sig_alg or "", incoming.signature, certs
        )
        signed = True
    elif incoming.binding == BINDING_POST and xmldsig.signature_of(request.root) is not None:
        xmldsig.verify_enveloped(request.root, certs)
        signed = True
    if (sp.require_signed_requests or sp.identity_broker) and not signed:
        raise SamlError("saml_signature_required", "this SP must sign its requests", status=403)
    if request.destination is not None and request.destination != sso_url:
        raise SamlError("saml_wrong_destination", "Destination is not this endpoint")
    if signed and request.destination is None:
        raise SamlError("saml_wrong_destination", "a signed request must carry its Destination")
    now = now or dt.datetime.now(dt.UTC)
    if not now - MAX_AGE <= request.issue_instant <= now + MAX_FUTURE:
        raise SamlError("saml_expired_request", "IssueInstant is outside the accepted window")
    acs_url = sp_view.resolve_acs(
        sp, url=request.acs_url, index=request.acs_index, binding=request.protocol_binding
    )
    return Accepted(
        request=request,
        sp_id=sp.id,
        sp_entity_id=sp.entity_id,
        sp_name=sp.name,
        acs_url=acs_url,
        binding=incoming.binding,
        relay_state=incoming.relay_state,
        signed=signed,
        identity_broker=sp.identity_broker,
        sp_settings=sp_view.snapshot(sp),
    )


def policy_check(accepted: Accepted) -> None:
    """Refusals the SP hears about as a SAML status (its ACS is trusted by now)."""
    request = accepted.request
    if request.is_passive:
        raise SamlError(
            "saml_no_passive",
            "IsPassive is not possible: the device check needs the login page",
            saml_status=(STATUS_RESPONDER, STATUS_NO_PASSIVE),
        )
    fmt = request.nameid_format
    configured = accepted.sp_settings["nameid_format"]
    if fmt and fmt != NAMEID_UNSPECIFIED and fmt != NAMEID_FORMATS[configured]:
        raise SamlError(
            "saml_nameid_policy",
            f"this SP is set up for {configured} NameIDs",
            saml_status=(STATUS_REQUESTER, STATUS_INVALID_NAMEID_POLICY),
        )
    if accepted.identity_broker and not request.subject:
        raise SamlError(
            "saml_broker_subject_missing",
            "an identity broker must name the user in Subject/NameID",
            saml_status=(STATUS_REQUESTER, STATUS_REQUEST_DENIED),
        )
    if accepted.authn_context_class() is None:
        # SAML core 3.3.2.2.1: satisfy the requested context or say NoAuthnContext. Said
        # here, before a login transaction exists, so no device is asked to answer for it.
        requested = request.requested_authn_context
        raise SamlError(
            "saml_no_authn_context",
            "none of the classes devicetrust asserts satisfies the RequestedAuthnContext",
            saml_status=(STATUS_RESPONDER, STATUS_NO_AUTHN_CONTEXT),
            audit_details={"requested_authn_context": requested.to_json() if requested else None},
        )


def seen_until(accepted: Accepted, now: dt.datetime | None = None) -> dt.datetime:
    """How long a request ID must be remembered: until its IssueInstant is too old anyway."""
    return max(now or utcnow(), accepted.request.issue_instant) + MAX_AGE + MAX_FUTURE


__all__ = [
    "Accepted",
    "AuthnRequest",
    "Incoming",
    "check",
    "inflate",
    "parse",
    "policy_check",
    "read_post",
    "read_redirect",
    "seen_until",
]
