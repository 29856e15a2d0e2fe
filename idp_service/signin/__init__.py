"""Sign-in: the login page, the authenticate ceremony, and the login transaction.

``web`` is the page and its JSON endpoints; ``authenticate`` judges a device's
answer; ``store`` and ``reads`` are the hot path's statements; completers
(SAML, the console, later OpenID Connect) turn a verified sign-in into what the
relying party asked for.
"""
