"""The upstream identity provider: devicetrust as an OpenID Connect relying party.

The organization's own IdP (Okta, Entra ID, Google, Keycloak, ...) proves who the
person is; SCIM stays the only source of users. ``config.py`` reads the IdPs,
``oidc.py`` speaks the protocol (authlib for the code flow, joserfc for the ID
token), ``service.py`` runs a sign-in, ``store.py`` and ``tables.py`` keep its
state, and ``web.py`` is the thin Flask half. See docs/oidc.md.
"""
