"""Wrapping assertions in signed SAML Responses (and failure Responses), ready for HTTP-POST.

Order of operations for a success: sign the Assertion (if the SP wants it), then
encrypt it (if the SP wants that), then sign the Response (if the SP wants it),
so every signature covers exactly what the SP will check. Destination and
InResponseTo are set on the Response; a failure Response carries a status code
pair (for example Responder / AuthnFailed) and no assertion.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from lxml import etree

from idp_service.saml.keys import LoadedKey
from idp_service.saml.protocol import xmldsig
from idp_service.saml.protocol.assertion import instant, new_id
from idp_service.saml.protocol.constants import NS_SAML, NS_SAMLP, STATUS_SUCCESS

_P = f"{{{NS_SAMLP}}}"
_S = f"{{{NS_SAML}}}"


@dataclass(frozen=True)
class Target:
    """Where a Response goes and how the SP wants it protected."""

    issuer: str
    acs_url: str
    in_response_to: str | None
    sign_response: bool = True
    sign_assertion: bool = True
    encrypt_cert: str | None = None


def _envelope(target: Target, now: dt.datetime) -> etree._Element:
    response = etree.Element(
        _P + "Response",
        nsmap={"samlp": NS_SAMLP, "saml": NS_SAML},
        ID=new_id(),
        Version="2.0",
        IssueInstant=instant(now),
        Destination=target.acs_url,
    )
    if target.in_response_to:
        response.set("InResponseTo", target.in_response_to)
    etree.SubElement(response, _S + "Issuer").text = target.issuer
    return response


def _status(parent: etree._Element, codes: tuple[str, ...], message: str | None) -> None:
    status = etree.SubElement(parent, _P + "Status")
    holder = status
    for code in codes:
        holder = etree.SubElement(holder, _P + "StatusCode", Value=code)
    if message:
        etree.SubElement(status, _P + "StatusMessage").text = message


def success(
    target: Target, assertion: etree._Element, key: LoadedKey, now: dt.datetime | None = None
) -> bytes:
    """The serialized, signed (and maybe encrypted) success Response carrying ``assertion``."""
    response = _envelope(target, now or dt.datetime.now(dt.UTC))
    _status(response, (STATUS_SUCCESS,), None)
    if target.sign_assertion:
        xmldsig.sign(assertion, key)
    if target.encrypt_cert:
        response.append(xmldsig.encrypt_assertion(assertion, target.encrypt_cert))
    else:
        response.append(assertion)
    if target.sign_response:
        xmldsig.sign(response, key)
    return etree.tostring(response)


def failure(
    target: Target,
    codes: tuple[str, ...],
    key: LoadedKey,
    message: str | None = None,
    now: dt.datetime | None = None,
) -> bytes:
    """A Response with a non-success status and no assertion (signed when the SP wants
    signed responses, so the SP can trust the refusal too)."""
    response = _envelope(target, now or dt.datetime.now(dt.UTC))
    _status(response, codes, message)
    if target.sign_response or target.sign_assertion:
        xmldsig.sign(response, key)
    return etree.tostring(response)


def encode(xml: bytes) -> str:
    """The HTTP-POST form value of a Response (base64, no line breaks)."""
    return base64.b64encode(xml).decode()
