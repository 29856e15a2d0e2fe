"""Building the Assertion: subject and NameID, conditions, authn statement, attributes.

Follows SAML core and the anchors' defaults: ``NotBefore`` = now - 30 s,
``NotOnOrAfter`` = now + 5 min, ``SessionNotOnOrAfter`` from the SP's session
length, Audience = SP entityID, bearer SubjectConfirmation whose Recipient is
the ACS URL and whose InResponseTo is the request ID, and an
AuthnContextClassRef naming the device-bound method (or ``unspecified`` when the
SP asked for exactly that; see :mod:`.authn_context`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from lxml import etree

from idp_service.saml.protocol.constants import (
    ATTRNAME_FORMAT_BASIC,
    AUTHN_CONTEXT_DEVICE_BOUND,
    CM_BEARER,
    NAMEID_EMAIL,
    NAMEID_FORMATS,
    NAMEID_PERSISTENT,
    NAMEID_TRANSIENT,
    NS_SAML,
    NS_XS,
    NS_XSI,
)

NOT_BEFORE_SKEW = dt.timedelta(seconds=30)
LIFETIME = dt.timedelta(minutes=5)

_S = f"{{{NS_SAML}}}"
_XSI_TYPE = f"{{{NS_XSI}}}type"


def new_id() -> str:
    """A fresh SAML ID (an xsd:ID: starts with a letter or underscore; 160 random bits)."""
    return "_" + secrets.token_hex(20)


def instant(when: dt.datetime) -> str:
    """An xsd:dateTime in UTC with a ``Z``, as SAML requires."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def persistent_id(secret: bytes, sp_entity_id: str, user_id: str) -> str:
    """A pairwise, stable, opaque NameID for a user at one SP (HMAC-SHA256)."""
    mac = hmac.new(secret, sp_entity_id.encode() + b"\x00" + user_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


@dataclass
class Subject:
    """Who the assertion is about, as the SP will see it."""

    user_id: str
    user_name: str
    email: str | None


@dataclass
class AssertionSpec:
    """Everything that varies between assertions."""

    issuer: str
    sp_entity_id: str
    acs_url: str
    in_response_to: str | None
    nameid_format: str  # short name: emailAddress | persistent | transient | unspecified
    subject: Subject
    persistent_secret: bytes
    session_minutes: int
    attributes: list[tuple[str, list[str]]] = field(default_factory=list)
    now: dt.datetime | None = None
    session_index: str | None = None
    # Chosen at the SSO endpoint from the SP's RequestedAuthnContext (authn_context.choose);
    # None means the device-bound class.
    authn_context_class: str | None = None


def nameid_value(spec: AssertionSpec) -> tuple[str, str]:
    """(format URN, value) of the subject's NameID at this SP."""
    fmt = NAMEID_FORMATS[spec.nameid_format]
    if fmt == NAMEID_PERSISTENT:
        return fmt, persistent_id(spec.persistent_secret, spec.sp_entity_id, spec.subject.user_id)
    if fmt == NAMEID_TRANSIENT:
        return fmt, "_" + secrets.token_hex(16)
    if fmt == NAMEID_EMAIL:
        return fmt, spec.subject.email or spec.subject.user_name
    return fmt, spec.subject.user_name


def build(spec: AssertionSpec) -> etree._Element:
    """The unsigned ``saml:Assertion`` element for ``spec``."""
    now = spec.now or dt.datetime.now(dt.UTC)
    issued = instant(now)
    not_on_or_after = instant(now + LIFETIME)
    assertion = etree.Element(
        _S + "Assertion",
        nsmap={"saml": NS_SAML, "xs": NS_XS, "xsi": NS_XSI},
        ID=new_id(),
        Version="2.0",
        IssueInstant=issued,
    )
    etree.SubElement(assertion, _S + "Issuer").text = spec.issuer

    subject = etree.SubElement(assertion, _S + "Subject")
    fmt, value = nameid_value(spec)
    nameid = etree.SubElement(subject, _S + "NameID", Format=fmt)
    if fmt in (NAMEID_PERSISTENT, NAMEID_TRANSIENT):
        nameid.set("NameQualifier", spec.issuer)
        nameid.set("SPNameQualifier", spec.sp_entity_id)
    nameid.text = value
    confirmation = etree.SubElement(subject, _S + "SubjectConfirmation", Method=CM_BEARER)
    data = etree.SubElement(
        confirmation,
        _S + "SubjectConfirmationData",
        NotOnOrAfter=not_on_or_after,
        Recipient=spec.acs_url,
    )
    if spec.in_response_to:
        data.set("InResponseTo", spec.in_response_to)

    conditions = etree.SubElement(
        assertion,
        _S + "Conditions",
        NotBefore=instant(now - NOT_BEFORE_SKEW),
        NotOnOrAfter=not_on_or_after,
    )
    restriction = etree.SubElement(conditions, _S + "AudienceRestriction")
    etree.SubElement(restriction, _S + "Audience").text = spec.sp_entity_id

    statement = etree.SubElement(
        assertion,
        _S + "AuthnStatement",
        AuthnInstant=issued,
        SessionIndex=spec.session_index or new_id(),
        SessionNotOnOrAfter=instant(now + dt.timedelta(minutes=spec.session_minutes)),
    )
    context = etree.SubElement(statement, _S + "AuthnContext")
    etree.SubElement(context, _S + "AuthnContextClassRef").text = (
        spec.authn_context_class or AUTHN_CONTEXT_DEVICE_BOUND
    )

    if spec.attributes:
        attrs = etree.SubElement(assertion, _S + "AttributeStatement")
        for name, values in spec.attributes:
            attr = etree.SubElement(
                attrs, _S + "Attribute", Name=name, NameFormat=ATTRNAME_FORMAT_BASIC
            )
            for v in values:
                av = etree.SubElement(attr, _S + "AttributeValue")
                av.set(_XSI_TYPE, "xs:string")
                av.text = v
    return assertion
