"""A tiny SAML service provider built with python3-saml, for trying devicetrust out.

    python -m idp_service.demo_sp --idp http://127.0.0.1:8000 --port 8001

It serves a page with a "Sign in" button; the button sends a signed AuthnRequest
(HTTP-Redirect) to the IdP; the ACS validates the Response in python3-saml's
strict mode (signed message *and* signed assertion required) and shows the
assertion's NameID and attributes. ``/metadata`` is its SP metadata. On start
it adds (or refreshes) itself in the IdP's SP registry directly, through the
same ``DEVICETRUST_*`` environment (database) as the ``devicetrust`` command;
``--no-register`` skips that (then run ``devicetrust sp add --metadata
http://HOST:PORT/metadata`` yourself).

It keeps its key pair in ``--state-dir`` so its metadata stays valid across runs,
and it only accepts Responses to requests it sent (unless ``--allow-unsolicited``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, redirect, render_template_string, request, session
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.settings import OneLogin_Saml2_Settings

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo app · devicetrust</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;background:#f5f7fa;color:#1f2933;display:flex;
justify-content:center;padding-top:10vh;margin:0}
.card{background:#fff;padding:2rem 2.25rem;border-radius:12px;width:min(36rem,92vw);
box-shadow:0 1px 3px rgba(0,0,0,.08)}
a.button,button{font:inherit;padding:.55rem 1.1rem;border-radius:8px;border:1px solid #2952cc;
background:#2952cc;color:#fff;text-decoration:none;cursor:pointer}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}
dt{color:#616e7c}dd{margin:0;word-break:break-all}.bad{color:#b42318}.ok{color:#1f7a4d}
</style></head><body><main class="card">
<h1>Demo app</h1>
{% if user %}
  <p class="ok" id="signed-in">Signed in as <strong id="nameid">{{ user.nameid }}</strong>.</p>
  <dl id="attributes">
    <dt>NameID format</dt><dd>{{ user.nameid_format }}</dd>
    <dt>Session index</dt><dd>{{ user.session_index }}</dd>
    {% for name, values in user.attributes.items() %}
      <dt>{{ name }}</dt><dd data-attribute="{{ name }}">{{ values | join(", ") or "(none)" }}</dd>
    {% endfor %}
    {% if user.relay_state %}<dt>RelayState</dt><dd id="relay-state">{{ user.relay_state }}</dd>
    {% endif %}
  </dl>
  <p><a class="button" href="/logout">Sign out</a></p>
{% elif error %}
  <p class="bad" id="error">Sign-in failed: {{ error }}</p>
  {% if reason %}<p>{{ reason }}</p>{% endif %}
  <p><a class="button" href="/login" id="sign-in">Try again</a></p>
{% else %}
  <p>This application signs you in through devicetrust: only from your trusted device.</p>
  <p><a class="button" href="/login" id="sign-in">Sign in</a></p>
{% endif %}
</main></body></html>"""

OUTSTANDING_TTL = 600.0


def _key_pair(state_dir: Path) -> tuple[str, str]:
    """The SP's signing key and certificate, made once and kept in ``state_dir``."""
    key_path, cert_path = state_dir / "sp-key.pem", state_dir / "sp-cert.pem"
    if not key_path.exists() or not cert_path.exists():
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devicetrust demo SP")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path.read_text(), cert_path.read_text()


def sp_settings(base_url: str, key: str, cert: str, idp: dict[str, Any] | None) -> dict[str, Any]:
    """python3-saml settings for the demo SP (strict; wants signed messages and assertions)."""
    settings: dict[str, Any] = {
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": base_url + "/metadata",
            "assertionConsumerService": {
                "url": base_url + "/acs",
                "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
            },
            "NameIDFormat": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
            "x509cert": cert,
            "privateKey": key,
        },
        "security": {
            "authnRequestsSigned": True,
            "wantMessagesSigned": True,
            "wantAssertionsSigned": True,
            "wantNameId": True,
            "requestedAuthnContext": False,
            "signatureAlgorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
            "rejectDeprecatedAlgorithm": True,
        },
    }
    if idp is not None:
        settings["idp"] = idp
    return settings


def create_app(
    idp_url: str, base_url: str, state_dir: Path, *, allow_unsolicited: bool = False
) -> Flask:
    """The demo SP as a Flask app."""
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config.update(SESSION_COOKIE_NAME="demo_sp_session", SESSION_COOKIE_SAMESITE="Lax")
    key, cert = _key_pair(state_dir)
    outstanding: dict[str, float] = {}
    lock = threading.Lock()
    idp_cache: dict[str, Any] = {}

    def idp() -> dict[str, Any]:
        if "idp" not in idp_cache:
            parsed = OneLogin_Saml2_IdPMetadataParser.parse_remote(
                idp_url.rstrip("/") + "/saml/metadata",
                required_sso_binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
            )
            idp_cache["idp"] = parsed["idp"]
        return idp_cache["idp"]

    def auth() -> OneLogin_Saml2_Auth:
        url = urlsplit(base_url)
        req = {
            "https": "on" if url.scheme == "https" else "off",
            "http_host": url.netloc,
            "script_name": request.path,
            "get_data": request.args.copy(),
            "post_data": request.form.copy(),
        }
        return OneLogin_Saml2_Auth(req, sp_settings(base_url, key, cert, idp()))

    @app.get("/")
    def index() -> str:
        return render_template_string(PAGE, user=session.get("user"))

    @app.get("/metadata")
    def metadata() -> Response:
        settings = OneLogin_Saml2_Settings(
            sp_settings(base_url, key, cert, None), sp_validation_only=True
        )
        return Response(settings.get_sp_metadata(), mimetype="application/samlmetadata+xml")

    @app.get("/login")
    def login() -> Response:
        a = auth()
        url = a.login(return_to=request.args.get("next", "/"))
        with lock:
            now = time.monotonic()
            for rid in [r for r, t in outstanding.items() if now - t > OUTSTANDING_TTL]:
                outstanding.pop(rid, None)
            outstanding[a.get_last_request_id()] = now
        return redirect(url)

    @app.post("/acs")
    def acs() -> str:
        a = auth()
        a.process_response()
        errors = a.get_errors()
        in_response_to = a.get_last_response_in_response_to()
        if not errors:
            with lock:
                known = outstanding.pop(in_response_to or "", None) is not None
            if not known and not (allow_unsolicited and in_response_to is None):
                errors = ["unsolicited_response"]
        if errors:
            return render_template_string(
                PAGE,
                user=None,
                error=", ".join(errors),
                reason=a.get_last_error_reason(),
            )
        session["user"] = {
            "nameid": a.get_nameid(),
            "nameid_format": a.get_nameid_format(),
            "session_index": a.get_session_index(),
            "attributes": a.get_attributes(),
            "relay_state": request.form.get("RelayState"),
        }
        return render_template_string(PAGE, user=session["user"])

    @app.get("/logout")
    def logout() -> Response:
        session.clear()
        return redirect("/")

    return app


def register(base_url: str, key_cert: tuple[str, str]) -> str:
    """Add (or refresh) this SP in the IdP's registry, through the same DB the IdP uses."""
    from onelogin.saml2.settings import OneLogin_Saml2_Settings

    from idp_service.platform.config import Settings
    from idp_service.platform.db import Database
    from idp_service.platform.errors import ServiceError
    from idp_service.saml import api
    from idp_service.webhooks import outbox

    key, cert = key_cert
    xml = OneLogin_Saml2_Settings(
        sp_settings(base_url, key, cert, None), sp_validation_only=True
    ).get_sp_metadata()
    xml = xml.decode() if isinstance(xml, bytes) else xml
    outbox.subscribe_to_audit()  # as in every process that writes audit events
    db = Database(Settings.from_env().database_url)
    try:
        try:
            api.create_sp(db, {"metadata_xml": xml, "name": "Demo app"}, actor="demo_sp")
            return "registered"
        except ServiceError as exc:
            if exc.code != "sp_exists":
                raise
            api.update_sp(db, base_url + "/metadata", {"metadata_xml": xml}, actor="demo_sp")
            return "refreshed"
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> None:
    """``python -m idp_service.demo_sp``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--idp", required=True, help="The IdP's base URL, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--base-url", help="This SP's public base URL (default http://HOST:PORT)")
    parser.add_argument("--state-dir", type=Path, help="Where the SP keeps its key pair.")
    parser.add_argument(
        "--register",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Add (or refresh) this SP in the IdP's registry first (default: yes).",
    )
    parser.add_argument("--allow-unsolicited", action="store_true", help="Accept IdP-initiated.")
    args = parser.parse_args(argv)
    base_url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    if args.state_dir is None:
        from platformdirs import user_data_path

        args.state_dir = user_data_path("devicetrust", appauthor=False) / "demo-sp"
    if args.register:
        try:
            done = register(base_url, _key_pair(args.state_dir))
            print(f"demo SP {done} with the IdP", flush=True)
        except Exception as exc:  # noqa: BLE001 - the SP still runs; say how to register it
            print(
                f"could not register the demo SP with the IdP ({exc}); run:\n"
                f"  devicetrust sp add --metadata {base_url}/metadata",
                file=sys.stderr,
                flush=True,
            )
    app = create_app(args.idp, base_url, args.state_dir, allow_unsolicited=args.allow_unsolicited)
    print(f"demo SP on {base_url}/ (IdP {args.idp})", flush=True)
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
