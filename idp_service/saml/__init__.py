"""The SAML 2.0 identity provider: metadata, SSO endpoints, assertions, SP registry.

An assertion is issued only when a login transaction (``idp_service/signin/transactions.py``)
was verified by a trusted device of the right user; this package validates the
AuthnRequest, starts that transaction, and turns its outcome into a signed
SAML Response. Modules, by what they do:

* :mod:`.constants` - URNs and namespaces.
* :mod:`.errors` - :class:`~.errors.SamlError`, the one exception this package raises
  for bad input, with a stable code.
* :mod:`.xmlsafe` - the hardened XML parser (no DTD, no entities, no network).
* :mod:`.models` - tables: service providers, signing keys, request-ID replay cache.
* :mod:`.keys` - the IdP signing keys and certificates, staged rollover.
* :mod:`.xmldsig` - XML signatures and encryption through python-xmlsec.
* :mod:`.sp_registry` - SP CRUD, per-SP settings and SP-metadata import.
* :mod:`.metadata` - the IdP's own metadata document.
* :mod:`.authn_request` - decoding, parsing and checking AuthnRequests.
* :mod:`.authn_context` - RequestedAuthnContext: the classes we assert, their
  strength order, and the choice (or ``NoAuthnContext``).
* :mod:`.attributes` - attribute sources (groups, posture) and mapping.
* :mod:`.assertion` / :mod:`.response` - building, signing, encrypting Responses.
* :mod:`.completer` - turns a finished login transaction into exactly one Response.
* :mod:`.pages` - the auto-POST form, the refusal page and the error page.
* :mod:`.service` - per-process state: the key ring and the persistent-NameID secret.
* :mod:`.blueprint` - the HTTP endpoints under ``/saml``.
* :mod:`.api` - JSON functions behind the admin API and the CLI.
* :mod:`.cli` - ``devicetrust sp ...`` and ``devicetrust keys ...``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the ``/saml`` endpoints and the login completer for SAML transactions."""
    from idp_service.saml import completer
    from idp_service.saml import web as blueprint
    from idp_service.signin import web as login

    app.register_blueprint(blueprint.bp)
    login.LOGIN_COMPLETERS["saml"] = completer.complete
