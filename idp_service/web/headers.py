"""Security headers on every answer the service gives: no framing, and a strict CSP.

Every response is refused to frames (``frame-ancestors 'none'`` and
``X-Frame-Options: DENY``), so no page can be clickjacked. HTML pages get a
strict Content-Security-Policy: scripts and styles only from the service's own
``/static`` files (no inline script runs), no plugins, forms only to the
service, and ``connect-src`` open only to the agent's loopback ports (the login
and posture pages talk to the agent on ``http://127.0.0.1:PORT``). A page that
sets its own policy keeps it: the admin console's, and the SAML auto-POST
pages, whose forms go to the SP's ACS (``idp_service/saml/pages.py``).

An absolute redirect the framework builds from the request (``/admin`` to
``/admin/``) names the configured public URL, never the request's ``Host``
header, which the client chooses.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Response, request

from idp_service.platform.config import Settings

FRAME_ANCESTORS = "frame-ancestors 'none'"


def page_policy(agent_ports: tuple[int, ...], *, form_action: bool = True) -> str:
    """The CSP of the service's HTML pages (``form_action=False`` for a form to an SP)."""
    agents = " ".join(f"http://127.0.0.1:{port}" for port in agent_ports)
    directives = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src 'self' {agents}".rstrip(),
        "form-action 'self'" if form_action else "",
        FRAME_ANCESTORS,
        "base-uri 'none'",
    ]
    return "; ".join(d for d in directives if d)


OTHER_POLICY = f"default-src 'none'; {FRAME_ANCESTORS}"


def hsts(settings: Settings) -> str | None:
    """The ``Strict-Transport-Security`` value, or None (plain http, or turned off)."""
    if settings.hsts_max_age and settings.public_url.startswith("https://"):
        return f"max-age={settings.hsts_max_age}; includeSubDomains"
    return None


def api_headers(settings: Settings) -> list[tuple[str, str]]:
    """The headers the app adds to a JSON answer, for an answer written outside Flask
    (``devices/web.py``'s quick path): no framing, no sniffing, the non-HTML CSP, HSTS."""
    found = [
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy", OTHER_POLICY),
    ]
    value = hsts(settings)
    if value:
        found.append(("Strict-Transport-Security", value))
    return found


def install(app: Flask, settings: Settings) -> None:
    """Add the headers to every response that does not already carry its own."""
    html_policy = page_policy(settings.agent_ports)
    other_policy = OTHER_POLICY

    public = urlsplit(settings.public_url)

    @app.after_request
    def _security_headers(resp: Response) -> Response:
        location = resp.headers.get("Location")
        if location:
            parts = urlsplit(location)
            if parts.netloc and parts.netloc.lower() == request.headers.get("Host", "").lower():
                resp.headers["Location"] = urlunsplit(
                    (public.scheme, public.netloc, parts.path, parts.query, parts.fragment)
                )
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if "Content-Security-Policy" not in resp.headers:
            html = resp.mimetype == "text/html"
            resp.headers["Content-Security-Policy"] = html_policy if html else other_policy
        return resp
