"""SAML 2.0 on the wire: parsing AuthnRequests, building and signing Responses, metadata.

No database and no web framework: these modules take bytes and keys and give
bytes or a :class:`~idp_service.saml.errors.SamlError`.
"""
