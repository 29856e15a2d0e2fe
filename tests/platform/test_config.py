"""Configuration: DEVICETRUST_* variables and an optional TOML file, with errors that say
which setting is wrong and what it should be."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from idp_service.cli import cli
from idp_service.platform.config import (
    DEFAULT_AGENT_PORTS,
    RATE_LIMITS,
    WEBHOOK_RETRY_DELAYS,
    ConfigError,
    Settings,
)
from trust_protocol.durations import format_duration


def _error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    return caught.value


def test_the_defaults_are_the_documented_ones(tmp_path):
    s = Settings.from_env({"DEVICETRUST_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'devicetrust.db'}"
    assert (s.public_url, s.agent_ports) == ("http://127.0.0.1:8000", DEFAULT_AGENT_PORTS)
    assert (s.challenge_ttl, s.max_clock_skew, s.login_ttl, s.enroll_code_ttl) == (
        60, 300.0, 600, 86400
    )  # fmt: skip
    assert (s.registration_policy, s.approval_code_ttl, s.approval_attempts) == ("tofu", 600, 5)
    assert (s.report_interval, s.checks_dirs, s.builtin_checks, s.osquery_queries) == (
        300, (), (), {}
    )  # fmt: skip
    assert (s.scim_reactivation, s.admin_group, s.admin_session_ttl) == (
        "require_approval", "devicetrust-admins", 8 * 3600
    )  # fmt: skip
    assert (s.clone_policy, s.concurrent_window, s.stale_after, s.stale_policy) == (
        "suspend", 3600, 30 * 86400, "deny"
    )  # fmt: skip
    assert (s.stale_sweep_interval, s.audit_checkpoint_interval, s.expiry_cleanup_interval) == (
        300, 300.0, 900
    )  # fmt: skip
    assert (s.webhook_retry_delays, s.webhook_timeout, s.webhook_poll) == (
        WEBHOOK_RETRY_DELAYS, 10.0, 1.0
    )  # fmt: skip
    assert not s.webhook_allow_private and s.ratelimit_enabled
    assert (s.ratelimit_storage, s.rate_limits, s.trusted_proxies) == ("database", RATE_LIMITS, 0)
    assert s.trusted_hosts == ("127.0.0.1", "localhost") and s.secret_key == ""


def test_values_are_read_as_people_write_them():
    s = Settings.from_env(
        {
            "DEVICETRUST_PUBLIC_URL": "https://idp.example.com/",
            "DEVICETRUST_CHALLENGE_TTL": "1m",
            "DEVICETRUST_LOGIN_TTL": "15m",
            "DEVICETRUST_ADMIN_SESSION_TTL": "1d 6h",
            "DEVICETRUST_APPROVAL_CODE_TTL": "3",  # a plain number stays minutes
            "DEVICETRUST_MAX_CLOCK_SKEW": "90 s",
            "DEVICETRUST_WEBHOOK_POLL": "0.5",
            "DEVICETRUST_EXTRA_ORIGINS": "https://a.example/ https://b.example",
            "DEVICETRUST_BUILTIN_CHECKS": "disk_encryption, firewall",
            "DEVICETRUST_WEBHOOK_RETRY_DELAYS": "1, 2 3",
            "DEVICETRUST_SECRET_KEY": "",  # empty is the same as unset
        }
    )
    assert (s.public_url, s.trusted_hosts) == (
        "https://idp.example.com", ("idp.example.com", "localhost", "127.0.0.1")
    )  # fmt: skip
    assert (s.challenge_ttl, s.login_ttl, s.admin_session_ttl) == (60, 900, 30 * 3600)
    assert (s.approval_code_ttl, s.max_clock_skew, s.webhook_poll) == (180, 90.0, 0.5)
    assert s.extra_origins == ("https://a.example", "https://b.example")
    assert s.builtin_checks == ("disk_encryption", "firewall")
    assert s.webhook_retry_delays == (1.0, 2.0, 3.0)
    assert Settings.from_env({"DEVICETRUST_APPROVAL_CODE_TTL": "2h"}).approval_code_ttl == 7200


@given(st.integers(min_value=1, max_value=400 * 86400))
def test_every_duration_the_console_prints_is_a_valid_setting(seconds):
    text = format_duration(seconds)
    assert Settings.from_env({"DEVICETRUST_STALE_AFTER": text}).stale_after == seconds


@pytest.mark.parametrize(
    ("env", "variable", "expected"),
    [
        # a duration
        ({"DEVICETRUST_STALE_AFTER": "soon"}, "DEVICETRUST_STALE_AFTER", "is not a duration"),
        ({"DEVICETRUST_LOGIN_TTL": "-5"}, "DEVICETRUST_LOGIN_TTL", "positive duration"),
        ({"DEVICETRUST_LOGIN_TTL": "1.5"}, "DEVICETRUST_LOGIN_TTL", "whole number of seconds"),
        # a number in a range
        ({"DEVICETRUST_CHALLENGE_TTL": "5m"}, "DEVICETRUST_CHALLENGE_TTL", "between 1 and 120"),
        ({"DEVICETRUST_APPROVAL_ATTEMPTS": "0"}, "DEVICETRUST_APPROVAL_ATTEMPTS", "between 1"),
        ({"DEVICETRUST_APPROVAL_ATTEMPTS": "five"}, "DEVICETRUST_APPROVAL_ATTEMPTS", "whole"),
        ({"DEVICETRUST_APPROVAL_CODE_TTL": "0"}, "DEVICETRUST_APPROVAL_CODE_TTL", "1440 min"),
        ({"DEVICETRUST_WEBHOOK_TIMEOUT": "2m"}, "DEVICETRUST_WEBHOOK_TIMEOUT", "0 and 60"),
        ({"DEVICETRUST_TRUSTED_PROXIES": "11"}, "DEVICETRUST_TRUSTED_PROXIES", "0 to 10"),
        # one of a few words
        ({"DEVICETRUST_CLONE_POLICY": "ignore"}, "DEVICETRUST_CLONE_POLICY", "suspend or flag"),
        (
            {"DEVICETRUST_REGISTRATION_POLICY": "tofo"},
            "DEVICETRUST_REGISTRATION_POLICY",
            "is not a policy; use one of: tofu",
        ),  # fmt: skip
        ({"DEVICETRUST_RATELIMIT_STORAGE": "x://"}, "DEVICETRUST_RATELIMIT_STORAGE", "redis://"),
        # yes or no
        (
            {"DEVICETRUST_RATELIMIT_ENABLED": "maybe"},
            "DEVICETRUST_RATELIMIT_ENABLED",
            "true or false",
        ),  # fmt: skip
        # lists
        ({"DEVICETRUST_AGENT_PORTS": "80 99999"}, "DEVICETRUST_AGENT_PORTS", "port list"),
        ({"DEVICETRUST_TRUSTED_HOSTS": "https://x"}, "DEVICETRUST_TRUSTED_HOSTS", "host names"),
        (
            {"DEVICETRUST_WEBHOOK_RETRY_DELAYS": "ten"},
            "DEVICETRUST_WEBHOOK_RETRY_DELAYS",
            "lists seconds",
        ),  # fmt: skip
        # a limit in the limits library's syntax
        ({"DEVICETRUST_RATELIMIT_LOGIN": "lots"}, "DEVICETRUST_RATELIMIT_LOGIN", "30/minute"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_expected(env, variable, expected):
    error = _error(env)
    value = next(iter(env.values()))
    assert error.variable == variable
    assert str(error).startswith(f"{variable}={value!r} ")
    assert expected in str(error)


def test_a_bad_query_file_names_the_variable(tmp_path):
    error = _error({"DEVICETRUST_OSQUERY_QUERIES": str(tmp_path / "missing.yaml")})
    assert error.variable == "DEVICETRUST_OSQUERY_QUERIES" and "cannot read" in str(error)


# -- the TOML file ---------------------------------------------------------------------------
def _toml(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "devicetrust.toml"
    path.write_text(text)
    return {"DEVICETRUST_CONFIG": str(path)}


def test_the_file_sets_values_and_the_environment_overrides_it(tmp_path):
    env = _toml(
        tmp_path,
        'database_url = "postgresql://idp@db/devicetrust"\n'
        'stale_after = "12h"\n'
        "challenge_ttl = 30\n"
        "webhook_poll = 0.25\n"
        "webhook_allow_private = true\n"
        'extra_origins = ["https://a.example"]\n'
        "agent_ports = [40000, 40001]\n"
        'ratelimit_login = "10/second"\n'
        'trusted_hosts = "*"\n',
    )
    s = Settings.from_env({**env, "DEVICETRUST_CHALLENGE_TTL": "45"})
    assert s.database_url == "postgresql://idp@db/devicetrust"
    assert (s.stale_after, s.challenge_ttl, s.webhook_poll) == (43200, 45, 0.25)
    assert s.webhook_allow_private and s.extra_origins == ("https://a.example",)
    assert s.agent_ports == (40000, 40001) and s.rate_limits["login"] == "10/second"
    assert s.trusted_hosts == ()  # "*": any host
    assert Settings.from_env(env).challenge_ttl == 30  # without the variable: the file's


def test_a_bad_value_in_the_file_names_the_file_and_key(tmp_path):
    env = _toml(tmp_path, 'stale_after = "soon"\n')
    error = _error(env)
    assert error.variable == f"{env['DEVICETRUST_CONFIG']}: stale_after"
    assert "stale_after = 'soon' is not a duration" in str(error)
    assert "DEVICETRUST_STALE_AFTER" in str(error)
    # The same key set well in the environment wins, so the file's value is not used.
    assert Settings.from_env({**env, "DEVICETRUST_STALE_AFTER": "1d"}).stale_after == 86400


def test_an_unknown_key_in_the_file_is_refused(tmp_path):
    error = _error(_toml(tmp_path, 'stale_afer = "12h"\n'))
    assert "stale_afer is not a setting devicetrust knows" in str(error)


def test_a_file_that_is_missing_or_not_toml_is_refused(tmp_path):
    missing = _error({"DEVICETRUST_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.variable == "DEVICETRUST_CONFIG" and "cannot read the file" in str(missing)
    broken = _error(_toml(tmp_path, "stale_after = \n"))
    assert broken.variable == "DEVICETRUST_CONFIG" and "not a valid TOML file" in str(broken)


def test_the_cli_prints_the_problem_without_a_traceback(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["devices", "sweep-stale"],
        env={"DEVICETRUST_DATA_DIR": str(tmp_path), "DEVICETRUST_STALE_AFTER": "soon"},
    )
    assert result.exit_code == 1
    assert "DEVICETRUST_STALE_AFTER='soon' is not a duration" in result.output
    assert "Traceback" not in result.output
