"""HTML answers of the SAML surface: the auto-POST form, the refusal page, the error page.

Every page that carries a SAML Response is ``no-store``; RelayState and every
other value reach the HTML only through Jinja's autoescaping.
"""

from __future__ import annotations

from flask import Response, make_response, render_template

from idp_service.saml.errors import SamlError
from idp_service.web.headers import page_policy


def _no_store(resp: Response, *, to_sp: bool = False) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if to_sp:  # its form goes to the SP's ACS, which may redirect anywhere: no form-action
        resp.headers["Content-Security-Policy"] = page_policy((), form_action=False)
    return resp


def post_form(acs_url: str, saml_response: str, relay_state: str | None, sp_name: str) -> Response:
    """The page that POSTs a Response to the SP's ACS on load (a button without JavaScript)."""
    return _no_store(
        make_response(
            render_template(
                "saml/post.html",
                acs_url=acs_url,
                saml_response=saml_response,
                relay_state=relay_state,
                sp_name=sp_name,
            )
        ),
        to_sp=True,
    )


def refused(
    *,
    acs_url: str,
    saml_response: str,
    relay_state: str | None,
    sp_name: str,
    code: str,
    message: str,
    hint: str,
    status: int = 403,
) -> Response:
    """Why the sign-in was refused, with a button that takes the AuthnFailed Response to the SP."""
    resp = make_response(
        render_template(
            "saml/refused.html",
            acs_url=acs_url,
            saml_response=saml_response,
            relay_state=relay_state,
            sp_name=sp_name,
            code=code,
            message=message,
            hint=hint,
        ),
        status,
    )
    return _no_store(resp, to_sp=True)


def error(exc: SamlError) -> Response:
    """An error page for a request whose ACS cannot be trusted (nothing goes to any SP)."""
    resp = make_response(
        render_template("saml/error.html", code=exc.code, message=exc.message, hint=exc.hint),
        exc.status,
    )
    return _no_store(resp)
