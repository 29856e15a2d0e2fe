"""The SAML 2.0 identity provider: metadata, SSO endpoints, assertions, SP registry.

An assertion is issued only when a login transaction (``idp_service/signin/transactions.py``)
was verified by a trusted device of the right user; this package validates the
AuthnRequest, starts that transaction, and turns its outcome into a signed
SAML Response. Modules, by what they do:

* :mod:`.web` - the HTTP endpoints under ``/saml``; its ``init_app`` registers them
  and the ``saml`` completer, whose outcome it renders with :mod:`.pages` (the
  auto-POST form, the refusal page and the error page).
* :mod:`.completer` - turns a finished login transaction into exactly one Response
  (an outcome value; no web framework).
* :mod:`.store` - the SSO endpoint's writes and the Responses kept for a repeat.
* :mod:`.service` - per-process state: the key ring and the persistent-NameID secret.
* :mod:`.errors` - :class:`~.errors.SamlError`, the one exception this package raises
  for bad input, with a stable code.
* :mod:`.tables` - tables: service providers, signing keys, request-ID replay cache,
  issued Responses.
* :mod:`.keys` - the IdP signing keys and certificates, staged rollover.
* :mod:`.registry` - SP CRUD, per-SP settings and SP-metadata import.
* :mod:`.attributes` - attribute sources (groups, posture) and mapping.
* :mod:`.protocol` - the protocol itself: ``xmlsafe`` (the hardened XML parser),
  ``xmldsig`` (signatures and encryption through python-xmlsec), ``authn_request``
  (decoding, parsing and checking AuthnRequests), ``authn_context``,
  ``assertion`` / ``response`` (building, signing, encrypting Responses),
  ``metadata`` (the IdP's own metadata) and ``constants``.
* :mod:`.api` - JSON functions behind the admin API and the CLI.
* :mod:`.cli` - ``devicetrust sp ...`` and ``devicetrust keys ...``.
"""
