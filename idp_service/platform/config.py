"""Service configuration: ``DEVICETRUST_*`` environment variables, plus an optional TOML file.

Every setting has a safe default for a single-node install; ``docs/deploy.md``
lists them all. :class:`Inputs` (pydantic-settings) describes the settings as
people write them: ``DEVICETRUST_STALE_AFTER=30d`` in the environment, or
``stale_after = "30d"`` in the file named by ``DEVICETRUST_CONFIG``; a variable
set in the environment overrides the file. Durations are written as people
write them (``90s``, ``15m``, ``24h``, ``7d``, ``1d 6h``, or plain seconds;
:mod:`trust_protocol.durations`). :meth:`Settings.from_env` turns them
into :class:`Settings`, the plain object the rest of the service reads.

A bad value stops the service at start with a :class:`ConfigError` naming the
variable (or the file and key), the value, and what is expected.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from limits import parse_many
from platformdirs import user_data_path
from pydantic import AfterValidator, BeforeValidator, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from trust_protocol import durations
from trust_protocol.ports import DEFAULT_AGENT_PORTS, parse_ports

PREFIX = "DEVICETRUST_"
CONFIG_VARIABLE = "DEVICETRUST_CONFIG"

# Registration policies, least strict first (idp_service/devices/registration_policy.py).
REGISTRATION_POLICIES = ("tofu", "trusted_device_approval", "admin_approval")

# Seconds after each failed webhook attempt: 8 attempts over about 31 hours.
WEBHOOK_RETRY_DELAYS = (10.0, 30.0, 120.0, 600.0, 3600.0, 6 * 3600.0, 24 * 3600.0)

# Names only this machine can send in Host: health checks and local tools use them.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")

# Per-client rate limits, one per group of routes (idp_service/web/ratelimit.py lists the
# routes): the limits library's syntax, several separated by ";". Generous enough
# for an office of a few thousand people behind one NAT address.
RATE_LIMITS: dict[str, str] = {
    "saml": "600/minute",  # /saml/sso, /saml/idp-initiated
    "login": "1200/minute",  # the login page's POSTs (challenge, response, continue, ...)
    "agent": "1200/minute",  # /agent/v1/*
    "enroll": "120/minute",  # enrollment: register challenges and registrations
    "approval": "60/minute",  # trusted-device approval code submissions
    "admin_signin": "30/minute",  # admin console sign-in and bootstrap token
    "oidc": "600/minute",  # /oidc/authorize, /oidc/token, /oidc/userinfo, /oidc/logout
}


# DEVICETRUST_ENV: what the settings must satisfy. "production" refuses an insecure set.
ENVIRONMENTS = ("development", "production")
SAMESITE = ("Lax", "Strict", "None")
LOG_FORMATS = ("json", "text")
MIN_HSTS = 86400  # production: HSTS for at least a day (a year is usual)
MIN_SECRET_KEY = 32  # characters of a configured session key


class ConfigError(ValueError):
    """A setting that cannot be used: ``variable`` names it (or ``file: key``).

    ``variables`` names every setting to fix, when there are several (production mode).
    """

    def __init__(self, variable: str, message: str, variables: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.variable = variable
        self.variables = variables or (variable,)


def default_data_dir() -> Path:
    """Per-user data directory for the embedded SQLite database and local state."""
    return user_data_path("devicetrust", appauthor=False)


# -- how values are written ------------------------------------------------------------------
DURATION_HINT = "write a duration like 90s, 15m, 12h, 30d, 1d 6h or seconds"


def parse_duration(text: str, name: str) -> int:
    """``30d``, ``12h``, ``15m``, ``90s``, ``1d 6h`` or plain seconds -> seconds (positive).

    The same text the console and the commands print (:mod:`trust_protocol.durations`).
    """
    try:
        seconds = int(durations.parse_duration(text).total_seconds())
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError(f"{name} must be a positive duration like 30d, 12h, 15m or 3600")
    return seconds


def _seconds(value: Any) -> float:
    """A duration: a number of seconds (``0.5``, ``300``) or ``90s``, ``15m``, ``1d 6h``."""
    if isinstance(value, bool):
        raise ValueError(f"is not a duration; {DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                seconds = durations.parse_duration(text).total_seconds()
            except ValueError:
                raise ValueError(f"is not a duration; {DURATION_HINT}") from None
    if seconds != seconds or seconds <= 0:  # NaN, zero, negative
        raise ValueError(f"must be a positive duration; {DURATION_HINT}")
    return seconds


def _whole_seconds(value: Any) -> int:
    seconds = _seconds(value)
    if seconds != int(seconds):
        raise ValueError("must be a whole number of seconds")
    return int(seconds)


def _minutes(value: Any) -> int:
    """A plain number is minutes (``10``); with a unit, any duration (``90s``, ``2h``)."""
    text = str(value).strip()
    if isinstance(value, int) or text.isdigit():
        seconds = 60 * int(text)
    else:
        seconds = _whole_seconds(value)
    if not 60 <= seconds <= 24 * 3600:
        raise ValueError("must be between 1 and 1440 minutes")
    return seconds


def _count(value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise ValueError("is not a whole number")
    return int(text)


def _between(low: float, high: float, unit: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}{unit}")
        return value

    return check


def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value).strip()
        if text not in choices:
            raise ValueError("must be " + " or ".join(choices))
        return text

    return check


def _flag(value: Any) -> bool:
    """true/yes/1/on or false/no/0/off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _words(value: Any) -> tuple[str, ...]:
    """Space or comma separated words, or a list (TOML)."""
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(w for w in str(value).replace(",", " ").split() if w)


def _paths(value: Any) -> tuple[str, ...]:
    """``os.pathsep``-separated directories, or a list (TOML)."""
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if str(v))
    return tuple(d for d in str(value).split(os.pathsep) if d)


def _ports(value: Any) -> tuple[int, ...]:
    text = " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    try:
        return parse_ports(text)
    except ValueError:
        raise ValueError("is not a port list; write e.g. 47621 37123 (1 to 65535)") from None


def _builtin(value: Any) -> tuple[str, ...]:
    """``all`` -> ("all",); ``none`` or empty -> (); else the listed check ids."""
    words = _words(value)
    if words in ((), ("none",)):
        return ()
    return ("all",) if "all" in words else words


def _delays(value: Any) -> tuple[float, ...]:
    """Seconds to wait after each failed webhook attempt, space or comma separated."""
    try:
        delays = tuple(float(w) for w in _words(value))
    except ValueError:
        raise ValueError("lists seconds, e.g. 10 30 120") from None
    if not delays:
        return WEBHOOK_RETRY_DELAYS
    if len(delays) > 20 or any(not 0 <= d <= 7 * 86400 for d in delays):
        raise ValueError("must be at most 20 delays of up to 7 days")
    return delays


def _rate_limit(value: Any) -> str:
    text = str(value).strip()
    try:
        parse_many(text)
    except ValueError:
        raise ValueError("is not a rate limit; write e.g. 30/minute or 5 per 10 seconds") from None
    return text


def _ratelimit_storage(value: Any) -> str:
    text = str(value).strip() or "database"
    if text != "database" and not text.startswith(("memory://", "redis://", "rediss://")):
        raise ValueError("must be database, memory:// or a redis:// URL")
    return text


def _proxies(value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > 10:
        raise ValueError("must be a number of proxies, 0 to 10")
    return int(text)


def _policy(value: Any) -> str:
    text = str(value).strip()
    if text not in REGISTRATION_POLICIES:
        raise ValueError("is not a policy; use one of: " + ", ".join(REGISTRATION_POLICIES))
    return text


def _hsts(value: Any) -> int:
    """``0`` or ``off`` (no header), or a duration."""
    text = str(value).strip().lower()
    if text in ("0", "off", "false", "no", ""):
        return 0
    return _whole_seconds(value)


def _samesite(value: Any) -> str:
    text = str(value).strip().capitalize()
    if text not in SAMESITE:
        raise ValueError("must be Lax, Strict or None")
    return text


def _auto_flag(value: Any) -> bool | None:
    """``auto`` (None: decided from another setting), or a flag."""
    if str(value).strip().lower() == "auto":
        return None
    return _flag(value)


def _listen(value: Any) -> str:
    """``host:port`` (``[::1]:9464`` for IPv6), or empty for none."""
    text = str(value).strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9464 (or empty for none)")
    return text


def _trusted_hosts(value: Any) -> tuple[str, ...] | None:
    """Host names (``.example.com`` for every subdomain), or ``*`` for any (empty tuple)."""
    words = tuple(w.lower() for w in _words(value))
    if not words:
        return None
    if words == ("*",):
        return ()
    if any("/" in w or "*" in w or ":" in w for w in words):
        raise ValueError(
            "lists host names without scheme or port (e.g. idp.example.com .example.com), "
            "or is * for any"
        )
    return words


Seconds = Annotated[float, BeforeValidator(_seconds)]
WholeSeconds = Annotated[int, BeforeValidator(_whole_seconds)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Words = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_words)]
RateLimit = Annotated[str, BeforeValidator(_rate_limit)]


class Inputs(BaseSettings):
    """The settings as written: ``DEVICETRUST_<NAME>`` variables or ``<name>`` in the file."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        extra="forbid",
        validate_default=False,  # the defaults are the values, not text to parse
    )

    database_url: str | None = None
    data_dir: Path | None = None
    public_url: str = "http://127.0.0.1:8000"
    agent_ports: Annotated[tuple[int, ...], NoDecode, BeforeValidator(_ports)] = DEFAULT_AGENT_PORTS
    challenge_ttl: Annotated[WholeSeconds, AfterValidator(_between(1, 120, " seconds"))] = 60
    max_clock_skew: Seconds = 300.0
    login_ttl: WholeSeconds = 600
    enroll_code_ttl: WholeSeconds = 24 * 3600
    secret_key: str = ""
    registration_policy: Annotated[str, BeforeValidator(_policy)] = "tofu"
    approval_code_ttl: Annotated[int, BeforeValidator(_minutes)] = 600
    approval_attempts: Annotated[
        int, BeforeValidator(_count), AfterValidator(_between(1, 100, ""))
    ] = 5
    report_interval: WholeSeconds = 300
    checks_dir: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_paths)] = ()
    builtin_checks: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_builtin)] = ()
    osquery_queries: str | None = None
    extra_origins: Words = ()
    scim_reactivation: Annotated[str, BeforeValidator(_one_of("require_approval", "restore"))] = (
        "require_approval"
    )
    admin_group: Annotated[str, BeforeValidator(lambda v: str(v).strip())] = "devicetrust-admins"
    admin_session_ttl: WholeSeconds = 8 * 3600
    upstream_idps: str = ""  # the TOML file of upstream OIDC IdPs (idp_service/upstream/config.py)
    clone_policy: Annotated[str, BeforeValidator(_one_of("suspend", "flag"))] = "suspend"
    concurrent_agent_window: WholeSeconds = 3600
    stale_after: WholeSeconds = 30 * 86400
    stale_policy: Annotated[str, BeforeValidator(_one_of("deny", "flag"))] = "deny"
    stale_sweep_interval: WholeSeconds = 300
    audit_checkpoint_interval: Seconds = 300.0
    expiry_cleanup_interval: WholeSeconds = 900
    webhook_retry_delays: Annotated[tuple[float, ...], NoDecode, BeforeValidator(_delays)] = (
        WEBHOOK_RETRY_DELAYS
    )
    webhook_timeout: Annotated[Seconds, AfterValidator(_between(0, 60, " seconds"))] = 10.0
    webhook_poll: Annotated[Seconds, AfterValidator(_between(0, 60, " seconds"))] = 1.0
    webhook_allow_private: Flag = False
    ratelimit_enabled: Flag = True
    ratelimit_storage: Annotated[str, BeforeValidator(_ratelimit_storage)] = "database"
    ratelimit_saml: RateLimit = RATE_LIMITS["saml"]
    ratelimit_login: RateLimit = RATE_LIMITS["login"]
    ratelimit_agent: RateLimit = RATE_LIMITS["agent"]
    ratelimit_enroll: RateLimit = RATE_LIMITS["enroll"]
    ratelimit_approval: RateLimit = RATE_LIMITS["approval"]
    ratelimit_admin_signin: RateLimit = RATE_LIMITS["admin_signin"]
    ratelimit_oidc: RateLimit = RATE_LIMITS["oidc"]
    trusted_proxies: Annotated[int, BeforeValidator(_proxies)] = 0
    trusted_hosts: Annotated[tuple[str, ...] | None, NoDecode, BeforeValidator(_trusted_hosts)] = (
        None
    )
    env: Annotated[str, BeforeValidator(_one_of(*ENVIRONMENTS))] = "development"
    hsts_max_age: Annotated[int, BeforeValidator(_hsts)] = 0
    cookie_secure: Annotated[bool | None, BeforeValidator(_auto_flag)] = None
    cookie_httponly: Flag = True
    cookie_samesite: Annotated[str, BeforeValidator(_samesite)] = "Lax"
    metrics_listen: Annotated[str, BeforeValidator(_listen)] = ""
    metrics_token: str = ""
    log_format: Annotated[str, BeforeValidator(_one_of(*LOG_FORMATS))] = "json"
    log_level: Annotated[
        str, BeforeValidator(lambda v: _one_of("DEBUG", "INFO", "WARNING", "ERROR")(str(v).upper()))
    ] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment first (the one :func:`_reading` names), then the TOML file."""
        env, toml_file = _SOURCE.get()
        sources: list[PydanticBaseSettingsSource] = [_EnvSource(settings_cls, env)]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# The environment and file the next Inputs() reads (from_env may be given a dict, in tests).
_SOURCE: ContextVar[tuple[Mapping[str, str], Path | None]] = ContextVar("devicetrust_config")


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping (or ``os.environ``)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._given = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._given, False, True, None)


@contextmanager
def _reading(env: Mapping[str, str], toml_file: Path | None) -> Iterator[None]:
    token = _SOURCE.set((env, toml_file))
    try:
        yield
    finally:
        _SOURCE.reset(token)


def _config_file(env: Mapping[str, str]) -> tuple[Path | None, dict[str, Any]]:
    """The TOML file ``DEVICETRUST_CONFIG`` names, and what it holds."""
    name = env.get(CONFIG_VARIABLE, "").strip()
    if not name:
        return None, {}
    path = Path(name).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            CONFIG_VARIABLE,
            f"{CONFIG_VARIABLE}={name!r}: cannot read the file ({exc.strerror or exc}); "
            "point it at a TOML file, or unset it",
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            CONFIG_VARIABLE, f"{name}: not a valid TOML file ({exc}); write key = value lines"
        ) from None
    return path, data


def _problem(error: Mapping[str, Any]) -> str:
    """What was wrong with one value, from a pydantic error."""
    ctx = error.get("ctx") or {}
    if error.get("type") == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return f"is not valid: {error.get('msg', '')}".rstrip(": ")


def _config_error(
    exc: ValidationError, env: Mapping[str, str], path: Path | None, data: Mapping[str, Any]
) -> ConfigError:
    """The first problem, naming where the value came from: the variable, or file and key."""
    error = exc.errors()[0]
    key = str(error["loc"][0]) if error.get("loc") else "?"
    variable = PREFIX + key.upper()
    problem = _problem(error)
    if env.get(variable, "").strip() or path is None or key not in data:
        message = f"{variable}={env.get(variable, '')!r} {problem}"
        return ConfigError(variable, message)
    if error.get("type") == "extra_forbidden":
        close = difflib.get_close_matches(key, list(Inputs.model_fields), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        message = (
            f"{path}: {key} is not a setting devicetrust knows ({hint}docs/deploy.md lists them)"
        )
    else:
        message = f"{path}: {key} = {data[key]!r} {problem} (or set {variable})"
    return ConfigError(f"{path}: {key}", message)


def _queries(path: str | None) -> dict[str, str]:
    """The osquery queries agents should run: a YAML/JSON mapping of name to SQL in a file."""
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            "DEVICETRUST_OSQUERY_QUERIES",
            f"DEVICETRUST_OSQUERY_QUERIES={path!r}: cannot read the query file ({exc})",
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(
            "DEVICETRUST_OSQUERY_QUERIES",
            f"{path}: DEVICETRUST_OSQUERY_QUERIES must map query names to SQL",
        )
    return data


def _default_trusted_hosts(public_url: str) -> tuple[str, ...]:
    """The public URL's host and the loopback names (any host when the public URL names an
    IPv6 address, which the Host check cannot match)."""
    host = (urlsplit(public_url).hostname or "").lower()
    if ":" in host:
        return ()
    return tuple(dict.fromkeys(h for h in (host, *LOOPBACK_HOSTS) if h))


@dataclass
class Settings:
    """Everything the service needs to know at start-up."""

    database_url: str = ""
    public_url: str = "http://127.0.0.1:8000"
    data_dir: Path = field(default_factory=default_data_dir)
    agent_ports: tuple[int, ...] = DEFAULT_AGENT_PORTS
    challenge_ttl: int = 60  # seconds; the protocol caps it at 120
    max_clock_skew: float = 300.0
    login_ttl: int = 600
    enroll_code_ttl: int = 24 * 3600
    max_request_bytes: int = 1024 * 1024
    secret_key: str = ""  # Flask session key; derived from the server secret when empty
    registration_policy: str = "tofu"
    approval_code_ttl: int = 600  # seconds a trusted-device approval code lives
    approval_attempts: int = 5  # wrong codes allowed per approval request
    approval_poll_skew: int = 120  # seconds a device's signed notice poll may be off
    report_interval: int = 300  # seconds between an agent's posture reports
    checks_dirs: tuple[str, ...] = ()  # the security team's check files (reloaded live)
    builtin_checks: tuple[str, ...] = ()  # ("all",), or ids of built-in checks to enforce
    osquery_queries: dict[str, str] = field(default_factory=dict)  # name -> SQL, for agents
    extra_origins: tuple[str, ...] = ()
    # What SCIM reactivation does to the user's trusted devices (scim/lifecycle.py).
    scim_reactivation: str = "require_approval"
    # The admin console (/admin): members of this SCIM group, signed in on a trusted device.
    admin_group: str = "devicetrust-admins"
    admin_session_ttl: int = 8 * 3600  # seconds an admin console session lasts
    # The organization's OpenID Connect IdPs, a TOML file (idp_service/upstream/config.py).
    upstream_idps: str = ""
    # Clone and duplicate detection (idp_service/devices/detection.py): suspend, or only flag.
    clone_policy: str = "suspend"
    concurrent_window: int = 3600  # seconds in which A, B, A answers mean two agents
    # Staleness: a device not seen for stale_after seconds is flagged and, by policy, denied.
    stale_after: int = 30 * 86400
    stale_policy: str = "deny"
    stale_sweep_interval: int = 300  # seconds between background sweeps
    # Seconds between signed audit checkpoints (when the chain grew; platform/audit_chain.py).
    audit_checkpoint_interval: float = 300.0
    # Seconds between deletions of expired rows (idp_service/expiry.py).
    expiry_cleanup_interval: int = 900
    # Webhooks (docs/events.md): seconds to wait after each failed attempt, the
    # request timeout, and how often the dispatcher looks for due deliveries.
    webhook_retry_delays: tuple[float, ...] = WEBHOOK_RETRY_DELAYS
    webhook_timeout: float = 10.0
    webhook_poll: float = 1.0
    # Send webhooks to loopback/private/link-local addresses too (webhooks/targets.py).
    webhook_allow_private: bool = False
    # Per-client rate limits (idp_service/web/ratelimit.py): on/off, where the counters
    # live, and the limit of each group of routes.
    ratelimit_enabled: bool = True
    ratelimit_storage: str = "database"
    rate_limits: dict[str, str] = field(default_factory=lambda: dict(RATE_LIMITS))
    # Reverse proxies in front of the service that append X-Forwarded-For; the
    # client address is taken that many hops from the right (0: the TCP peer).
    trusted_proxies: int = 0
    # Host names the service answers to (the Host header); empty: any. Unset, the
    # public URL's host and the loopback names (idp_service/web/headers.py).
    trusted_hosts: tuple[str, ...] = ()
    # development or production (production refuses an insecure set: production_problems).
    env: str = "development"
    hsts_max_age: int = 0  # seconds of Strict-Transport-Security; 0: no header
    cookie_secure: bool | None = None  # the session cookie's flags (None: with https)
    cookie_httponly: bool = True
    cookie_samesite: str = "Lax"
    # Prometheus /metrics: on its own listener (host:port), and/or on the service's
    # listener for requests bearing this token; neither set, no /metrics at all.
    metrics_listen: str = ""
    metrics_token: str = ""
    log_format: str = "json"  # json (one object per line) or text
    log_level: str = "INFO"
    testing: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment (or from ``env`` in tests), and the TOML file
        that ``DEVICETRUST_CONFIG`` names, if any; the environment wins over the file.

        Raises :class:`ConfigError` (a ``ValueError``) naming the first bad setting.
        """
        env = dict(os.environ if env is None else env)
        path, data = _config_file(env)
        try:
            with _reading(env, path):
                given = Inputs()
        except ValidationError as exc:
            raise _config_error(exc, env, path, data) from None
        settings = cls.from_inputs(given)
        refuse_insecure(settings, env)
        return settings

    @classmethod
    def from_inputs(cls, given: Inputs) -> Settings:
        """:class:`Settings` from validated :class:`Inputs` (defaults that depend on others)."""
        data_dir = given.data_dir or default_data_dir()
        public_url = given.public_url.rstrip("/")
        return cls(
            database_url=given.database_url or f"sqlite:///{data_dir / 'devicetrust.db'}",
            public_url=public_url,
            data_dir=data_dir,
            agent_ports=given.agent_ports,
            challenge_ttl=given.challenge_ttl,
            max_clock_skew=given.max_clock_skew,
            login_ttl=given.login_ttl,
            enroll_code_ttl=given.enroll_code_ttl,
            secret_key=given.secret_key,
            registration_policy=given.registration_policy,
            approval_code_ttl=given.approval_code_ttl,
            approval_attempts=given.approval_attempts,
            report_interval=given.report_interval,
            checks_dirs=given.checks_dir,
            builtin_checks=given.builtin_checks,
            osquery_queries=_queries(given.osquery_queries),
            extra_origins=tuple(o.rstrip("/") for o in given.extra_origins),
            scim_reactivation=given.scim_reactivation,
            admin_group=given.admin_group,
            admin_session_ttl=given.admin_session_ttl,
            upstream_idps=given.upstream_idps.strip(),
            clone_policy=given.clone_policy,
            concurrent_window=given.concurrent_agent_window,
            stale_after=given.stale_after,
            stale_policy=given.stale_policy,
            stale_sweep_interval=given.stale_sweep_interval,
            audit_checkpoint_interval=given.audit_checkpoint_interval,
            expiry_cleanup_interval=given.expiry_cleanup_interval,
            webhook_retry_delays=given.webhook_retry_delays,
            webhook_timeout=given.webhook_timeout,
            webhook_poll=given.webhook_poll,
            webhook_allow_private=given.webhook_allow_private,
            ratelimit_enabled=given.ratelimit_enabled,
            ratelimit_storage=given.ratelimit_storage,
            rate_limits={group: getattr(given, f"ratelimit_{group}") for group in RATE_LIMITS},
            trusted_proxies=given.trusted_proxies,
            trusted_hosts=(
                _default_trusted_hosts(public_url)
                if given.trusted_hosts is None
                else given.trusted_hosts
            ),
            env=given.env,
            hsts_max_age=given.hsts_max_age,
            cookie_secure=given.cookie_secure,
            cookie_httponly=given.cookie_httponly,
            cookie_samesite=given.cookie_samesite,
            metrics_listen=given.metrics_listen,
            metrics_token=given.metrics_token,
            log_format=given.log_format,
            log_level=given.log_level,
        )

    @property
    def secure_cookies(self) -> bool:
        """Cookies are Secure: as configured, else when the public URL is https."""
        if self.cookie_secure is None:
            return self.public_url.startswith("https://")
        return self.cookie_secure

    @property
    def origin(self) -> str:
        """The scheme://host[:port] of the public URL, as browsers send it in ``Origin``."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        """Browser origins the agent may answer for this service."""
        return (self.origin, *self.extra_origins)


def cookie_name(settings: Settings, base: str) -> str:
    """``__Host-`` + ``base`` when the service is public over https, else ``base``.

    A ``__Host-`` cookie must be Secure, host-only and Path=/, so no sibling host
    can set or shadow it; browsers refuse it without Secure, which plain-http
    loopback (development, tests) cannot have, so there the bare name is used.
    """
    secure = settings.public_url.startswith("https://") and settings.secure_cookies
    return f"__Host-{base}" if secure else base


# Read from the environment only (platform/audit_keys.py), not settings: in production they
# must be given, the same on every replica, or each replica makes its own in its data
# directory and the chain and checkpoints of one cannot be verified with another's.
SHARED_AUDIT_KEYS = ("DEVICETRUST_AUDIT_KEY", "DEVICETRUST_AUDIT_CHECKPOINT_KEY")


def production_problems(
    settings: Settings, env: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """What makes these settings unfit for production: (variable, what to do), each setting.

    ``env`` is the environment the settings came from (the audit keys are read from it).
    """
    problems: list[tuple[str, str]] = []
    if not settings.public_url.startswith("https://"):
        problems.append(("DEVICETRUST_PUBLIC_URL", "must be an https:// URL"))
    if settings.cookie_secure is False:  # auto follows the public URL, named above
        problems.append(("DEVICETRUST_COOKIE_SECURE", "must be true, or auto (with https)"))
    if not settings.cookie_httponly:
        problems.append(("DEVICETRUST_COOKIE_HTTPONLY", "must be true"))
    if settings.cookie_samesite == "None":
        problems.append(("DEVICETRUST_COOKIE_SAMESITE", "must be Lax or Strict"))
    if settings.hsts_max_age < MIN_HSTS:
        problems.append(("DEVICETRUST_HSTS_MAX_AGE", "must be at least 1d; 365d is usual"))
    if settings.trusted_proxies < 1:
        problems.append(
            (
                "DEVICETRUST_TRUSTED_PROXIES",
                "must be the number of reverse proxies in front of the service (1 or more)",
            )
        )
    if not settings.database_url.startswith(("postgresql://", "postgresql+psycopg://")):
        problems.append(("DEVICETRUST_DATABASE_URL", "must be a postgresql:// URL"))
    if len(settings.secret_key) < MIN_SECRET_KEY:
        problems.append(
            (
                "DEVICETRUST_SECRET_KEY",
                f"must be set to the same random value (at least {MIN_SECRET_KEY} characters) "
                "on every replica, e.g. from: python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'",
            )
        )
    env = os.environ if env is None else env
    for variable in SHARED_AUDIT_KEYS:
        if not env.get(variable, "").strip():
            problems.append(
                (
                    variable,
                    "must be set, the same on every replica (hex, from: python3 -c "
                    "'import secrets; print(secrets.token_hex(32))'); docs/deploy.md, "
                    '"Audit log keys and checkpoints"',
                )
            )
    return problems


def refuse_insecure(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """In production, raise :class:`ConfigError` naming every setting to fix (else nothing)."""
    if settings.env != "production":
        return
    problems = production_problems(settings, env)
    if problems:
        lines = "\n".join(f"  {variable} {todo}" for variable, todo in problems)
        raise ConfigError(
            problems[0][0],
            f"DEVICETRUST_ENV=production refuses to start; fix these settings:\n{lines}",
            tuple(variable for variable, _ in problems),
        )
