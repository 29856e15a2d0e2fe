"""Production mode: DEVICETRUST_ENV=production refuses an insecure configuration, naming
every setting to fix; `serve --config FILE` reads a TOML file the environment overrides;
the cookie, HSTS and proxy settings reach the running app."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from idp_service.cli import cli
from idp_service.platform.config import ConfigError, Settings

GOOD = {
    "DEVICETRUST_ENV": "production",
    "DEVICETRUST_PUBLIC_URL": "https://idp.example.com",
    "DEVICETRUST_DATABASE_URL": "postgresql://idp@db.internal/devicetrust",
    "DEVICETRUST_HSTS_MAX_AGE": "365d",
    "DEVICETRUST_TRUSTED_PROXIES": "1",
    "DEVICETRUST_SECRET_KEY": "k" * 48,
    "DEVICETRUST_AUDIT_KEY": "ab" * 32,
    "DEVICETRUST_AUDIT_CHECKPOINT_KEY": "cd" * 32,
}
EVERY = (
    "DEVICETRUST_PUBLIC_URL",
    "DEVICETRUST_HSTS_MAX_AGE",
    "DEVICETRUST_TRUSTED_PROXIES",
    "DEVICETRUST_DATABASE_URL",
    "DEVICETRUST_SECRET_KEY",
    "DEVICETRUST_AUDIT_KEY",
    "DEVICETRUST_AUDIT_CHECKPOINT_KEY",
)


def _refusal(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    return caught.value


def test_a_secure_production_configuration_starts():
    s = Settings.from_env(GOOD)
    assert (s.env, s.secure_cookies, s.cookie_httponly, s.cookie_samesite) == (
        "production", True, True, "Lax"
    )  # fmt: skip
    assert (s.hsts_max_age, s.trusted_proxies) == (365 * 86400, 1)


def test_production_with_the_development_defaults_names_every_setting_to_fix(tmp_path):
    error = _refusal({"DEVICETRUST_ENV": "production", "DEVICETRUST_DATA_DIR": str(tmp_path)})
    assert error.variables == EVERY
    for variable in EVERY:
        assert variable in str(error)
    # Development accepts the same settings.
    Settings.from_env({"DEVICETRUST_DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICETRUST_PUBLIC_URL", "http://idp.example.com"),
        ("DEVICETRUST_COOKIE_SECURE", "false"),
        ("DEVICETRUST_COOKIE_HTTPONLY", "false"),
        ("DEVICETRUST_COOKIE_SAMESITE", "None"),
        ("DEVICETRUST_HSTS_MAX_AGE", "0"),
        ("DEVICETRUST_HSTS_MAX_AGE", "1h"),
        ("DEVICETRUST_TRUSTED_PROXIES", "0"),
        ("DEVICETRUST_DATABASE_URL", "sqlite:////var/lib/devicetrust/devicetrust.db"),
        ("DEVICETRUST_SECRET_KEY", "short"),
        ("DEVICETRUST_AUDIT_KEY", ""),
        ("DEVICETRUST_AUDIT_CHECKPOINT_KEY", " "),
    ],
)
def test_each_insecure_setting_is_named(variable, value):
    error = _refusal({**GOOD, variable: value})
    assert error.variables == (variable,), str(error)
    assert variable in str(error) and "refuses to start" in str(error)


def test_a_bad_value_of_a_new_setting_names_it():
    for variable, value, expected in (
        ("DEVICETRUST_ENV", "prod", "must be development or production"),
        ("DEVICETRUST_COOKIE_SAMESITE", "sometimes", "must be Lax, Strict or None"),
        ("DEVICETRUST_METRICS_LISTEN", "9464", "must be host:port"),
        ("DEVICETRUST_LOG_FORMAT", "xml", "must be json or text"),
        ("DEVICETRUST_HSTS_MAX_AGE", "forever", "duration"),
    ):
        error = _refusal({variable: value})
        assert error.variable == variable and expected in str(error), str(error)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "devicetrust.toml"
    path.write_text(text)
    return path


def test_the_file_says_production_too_and_the_environment_overrides_it(tmp_path):
    path = _write(
        tmp_path,
        'env = "production"\npublic_url = "https://idp.example.com"\n'
        'database_url = "postgresql://idp@db/dt"\nhsts_max_age = "180d"\n'
        f'trusted_proxies = 2\nsecret_key = "{"s" * 40}"\n',
    )
    # The audit keys are read from the environment only (never from the file).
    keys = {k: GOOD[k] for k in ("DEVICETRUST_AUDIT_KEY", "DEVICETRUST_AUDIT_CHECKPOINT_KEY")}
    s = Settings.from_env({"DEVICETRUST_CONFIG": str(path), **keys})
    assert (s.env, s.trusted_proxies, s.hsts_max_age) == ("production", 2, 180 * 86400)
    assert _refusal({"DEVICETRUST_CONFIG": str(path)}).variables == tuple(keys)
    error = _refusal({"DEVICETRUST_CONFIG": str(path), "DEVICETRUST_TRUSTED_PROXIES": "0", **keys})
    assert error.variables == ("DEVICETRUST_TRUSTED_PROXIES",)
    assert Settings.from_env(
        {"DEVICETRUST_CONFIG": str(path), "DEVICETRUST_ENV": "development"}
    ).env == ("development")


def test_serve_config_refuses_before_binding(tmp_path, monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("DEVICETRUST_"):
            monkeypatch.delenv(name)
    runner = CliRunner()
    typo = _write(tmp_path, 'public_url = "https://idp.example.com"\npublik_url = "x"\n')
    # --config sets DEVICETRUST_CONFIG in this process: the runner restores it after.
    keep = {"DEVICETRUST_CONFIG": None}
    result = runner.invoke(cli, ["serve", "--config", str(typo)], env=keep)
    assert result.exit_code == 1
    assert "publik_url is not a setting devicetrust knows (did you mean public_url?" in (
        result.output
    )

    insecure = _write(tmp_path, 'env = "production"\npublic_url = "https://idp.example.com"\n')
    result = runner.invoke(cli, ["serve", "--config", str(insecure)], env=keep)
    assert result.exit_code == 1
    assert "DEVICETRUST_ENV=production refuses to start" in result.output
    assert "DEVICETRUST_CONFIG" not in __import__("os").environ
    for variable in EVERY[1:]:  # the URL is https (and the cookies follow it)
        assert variable in result.output


def test_the_app_sends_hsts_request_ids_and_sets_the_cookie_flags(tmp_path, sqlite_url):
    from idp_service.app import create_app

    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": sqlite_url,
            "DEVICETRUST_DATA_DIR": str(tmp_path),
            "DEVICETRUST_PUBLIC_URL": "https://idp.example.com",
            "DEVICETRUST_HSTS_MAX_AGE": "365d",
            "DEVICETRUST_COOKIE_SAMESITE": "strict",
            "DEVICETRUST_TRUSTED_PROXIES": "1",
        }
    )
    app = create_app(settings)
    seen = {}

    @app.get("/_probe")
    def _probe():
        from flask import request

        seen.update(scheme=request.scheme, addr=request.remote_addr)
        return "ok"

    assert app.config["SESSION_COOKIE_SECURE"] and app.config["SESSION_COOKIE_HTTPONLY"]
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Strict"
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-devicetrust_session"
    client = app.test_client()
    answer = client.get("/healthz", headers={"Host": "idp.example.com"})
    assert answer.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    rid = answer.headers["X-Request-ID"]
    assert len(rid) == 16 and rid != client.get("/healthz").headers["X-Request-ID"]
    # A proxy's id is kept when it is a short token, replaced when it is not.
    kept = client.get("/healthz", headers={"X-Request-ID": "lb-1234abcd"})
    assert kept.headers["X-Request-ID"] == "lb-1234abcd"
    odd = client.get("/healthz", headers={"X-Request-ID": "<script>" * 3})
    assert odd.headers["X-Request-ID"] != "<script>" * 3
    # One trusted proxy: its X-Forwarded-Proto and -For are believed (ProxyFix).
    client.get("/_probe", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert seen == {"scheme": "https", "addr": "203.0.113.9"}
