"""SAML URNs, XML namespaces and the devicetrust-specific identifiers.

The standard values come from python3-saml's constants so the two never disagree.
"""

from __future__ import annotations

from onelogin.saml2.constants import OneLogin_Saml2_Constants as C

NS_SAML = C.NS_SAML
NS_SAMLP = C.NS_SAMLP
NS_MD = C.NS_MD
NS_DS = C.NS_DS
NS_XENC = C.NS_XENC
NS_XS = C.NS_XS
NS_XSI = C.NS_XSI
NSMAP = {"saml": NS_SAML, "samlp": NS_SAMLP, "md": NS_MD, "ds": NS_DS, "xenc": NS_XENC}

BINDING_POST = C.BINDING_HTTP_POST
BINDING_REDIRECT = C.BINDING_HTTP_REDIRECT
BINDINGS = (BINDING_POST, BINDING_REDIRECT)

NAMEID_EMAIL = C.NAMEID_EMAIL_ADDRESS
NAMEID_PERSISTENT = C.NAMEID_PERSISTENT
NAMEID_TRANSIENT = C.NAMEID_TRANSIENT
NAMEID_UNSPECIFIED = C.NAMEID_UNSPECIFIED
# Short names used by the CLI, the API and the database.
NAMEID_FORMATS = {
    "emailAddress": NAMEID_EMAIL,
    "persistent": NAMEID_PERSISTENT,
    "transient": NAMEID_TRANSIENT,
    "unspecified": NAMEID_UNSPECIFIED,
}
NAMEID_SHORT = {v: k for k, v in NAMEID_FORMATS.items()}

STATUS_SUCCESS = C.STATUS_SUCCESS
STATUS_REQUESTER = C.STATUS_REQUESTER
STATUS_RESPONDER = C.STATUS_RESPONDER
STATUS_AUTHN_FAILED = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"
STATUS_INVALID_NAMEID_POLICY = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
STATUS_NO_PASSIVE = C.STATUS_NO_PASSIVE
STATUS_REQUEST_DENIED = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"
STATUS_NO_AUTHN_CONTEXT = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext"

CM_BEARER = C.CM_BEARER
ATTRNAME_FORMAT_BASIC = C.ATTRNAME_FORMAT_BASIC

# The authentication method devicetrust performs: a registered device of the user
# answered a fresh server challenge bound to this login, with its device key.
AUTHN_CONTEXT_DEVICE_BOUND = "urn:devicetrust:ac:classes:device-bound"
# Standard authentication context classes (SAML 2.0 authn context, section 3.4).
AC_PREFIX = "urn:oasis:names:tc:SAML:2.0:ac:classes:"
AC_UNSPECIFIED = C.AC_UNSPECIFIED
AC_PASSWORD = C.AC_PASSWORD
AC_PASSWORD_PROTECTED = C.AC_PASSWORD_PROTECTED

# Signature and encryption algorithms, by the names per-SP settings use.
SIG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SIG_ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SIG_RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
SIG_ECDSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SIGNATURE_ALGORITHMS = {"rsa-sha256": SIG_RSA_SHA256, "ecdsa-sha256": SIG_ECDSA_SHA256}
KEY_TYPE_FOR_ALGORITHM = {"rsa-sha256": "rsa", "ecdsa-sha256": "ec"}
ENC_AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
ENC_RSA_OAEP = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"

SAML_VERSION = "2.0"
