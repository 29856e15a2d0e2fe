"""The OpenID Connect provider: discovery, JWKS, authorize, token, userinfo and logout.

Apps sign in with the code flow (PKCE S256); Microsoft Entra ID's External
Authentication Methods and Okta's OIDC IdP authenticator use a client in
*factor* mode. Every sign-in goes through the same login transaction, device
check and posture gate as SAML (``signin/``); the ``oidc`` completer
(``completer.py``) issues the one code or ``id_token`` a verified transaction
allows. See ``docs/oidc.md``.
"""
