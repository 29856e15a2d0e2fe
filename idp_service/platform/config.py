"""Service configuration, read from ``DEVICETRUST_*`` environment variables.

Every setting has a safe default for a single-node install; ``docs/deploy.md``
lists them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trust_protocol import durations
from trust_protocol.ports import DEFAULT_AGENT_PORTS, parse_ports

# Registration policies, least strict first (idp_service/devices/registration_policy.py).
REGISTRATION_POLICIES = ("tofu", "trusted_device_approval", "admin_approval")


def default_data_dir() -> Path:
    """Per-user data directory for the embedded SQLite database and local state."""
    from platformdirs import user_data_path

    return user_data_path("devicetrust", appauthor=False)


def _queries(path: str | None) -> dict[str, str]:
    """The osquery queries agents should run: a YAML/JSON mapping of name to SQL in a file."""
    if not path:
        return {}
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path}: DEVICETRUST_OSQUERY_QUERIES must map query names to SQL")
    return data


def _builtin(text: str) -> tuple[str, ...]:
    """``all`` -> ("all",); ``none`` or empty -> (); else the listed check ids."""
    words = tuple(w.strip() for w in text.replace(",", " ").split() if w.strip())
    if words in ((), ("none",)):
        return ()
    return ("all",) if "all" in words else words


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


# Seconds after each failed webhook attempt: 8 attempts over about 31 hours.
WEBHOOK_RETRY_DELAYS = (10.0, 30.0, 120.0, 600.0, 3600.0, 6 * 3600.0, 24 * 3600.0)


def _delays(text: str | None) -> tuple[float, ...]:
    """``DEVICETRUST_WEBHOOK_RETRY_DELAYS``: seconds, space or comma separated."""
    if not text or not text.strip():
        return WEBHOOK_RETRY_DELAYS
    try:
        delays = tuple(float(w) for w in text.replace(",", " ").split())
    except ValueError:
        raise ValueError("DEVICETRUST_WEBHOOK_RETRY_DELAYS lists seconds, e.g. 10 30 120") from None
    if len(delays) > 20 or any(not 0 <= d <= 7 * 86400 for d in delays):
        raise ValueError("DEVICETRUST_WEBHOOK_RETRY_DELAYS: at most 20 delays of up to 7 days")
    return delays


# Names only this machine can send in Host: health checks and local tools use them.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def _trusted_hosts(text: str | None, public_url: str) -> tuple[str, ...]:
    """``DEVICETRUST_TRUSTED_HOSTS``: host names (``.example.com`` for every subdomain),
    space or comma separated, or ``*`` for any (empty tuple). Unset: the public URL's
    host and the loopback names (any host when the public URL names an IPv6 address,
    which the Host check cannot match)."""
    from urllib.parse import urlsplit

    if text is None or not text.strip():
        host = (urlsplit(public_url).hostname or "").lower()
        if ":" in host:
            return ()
        return tuple(dict.fromkeys(h for h in (host, *LOOPBACK_HOSTS) if h))
    words = tuple(w.strip().lower() for w in text.replace(",", " ").split())
    if words == ("*",):
        return ()
    if any("/" in w or "*" in w or ":" in w for w in words):
        raise ValueError(
            "DEVICETRUST_TRUSTED_HOSTS lists host names without scheme or port "
            "(e.g. idp.example.com .example.com), or is * for any"
        )
    return words


def _flag(env: dict[str, str], name: str, default: bool = False) -> bool:
    """A yes/no setting: true/yes/1/on or false/no/0/off (empty or unset: ``default``)."""
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be true or false")


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
}


def _rate_limits(env: dict[str, str]) -> dict[str, str]:
    """``DEVICETRUST_RATELIMIT_<GROUP>``: a limit string such as ``30/minute``."""
    from limits import parse_many

    result = {}
    for group, default in RATE_LIMITS.items():
        name = f"DEVICETRUST_RATELIMIT_{group.upper()}"
        value = env.get(name, "").strip() or default
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f"{name}={value!r} is not a rate limit; write e.g. 30/minute or 5 per 10 seconds"
            ) from None
        result[group] = value
    return result


def _ratelimit_storage(value: str) -> str:
    """``database`` (the default), ``memory://`` or a ``redis://`` URL."""
    value = value.strip() or "database"
    if value != "database" and not value.startswith(("memory://", "redis://", "rediss://")):
        raise ValueError(
            "DEVICETRUST_RATELIMIT_STORAGE must be database, memory:// or a redis:// URL"
        )
    return value


def _proxies(value: str) -> int:
    """``DEVICETRUST_TRUSTED_PROXIES``: how many proxies append X-Forwarded-For (0 to 10)."""
    value = value.strip() or "0"
    if not value.isdigit() or int(value) > 10:
        raise ValueError("DEVICETRUST_TRUSTED_PROXIES must be a number of proxies, 0 to 10")
    return int(value)


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
    # Clone and duplicate detection (idp_service/devices/detection.py): suspend, or only flag.
    clone_policy: str = "suspend"
    concurrent_window: int = 3600  # seconds in which A, B, A answers mean two agents
    # Staleness: a device not seen for stale_after seconds is flagged and, by policy, denied.
    stale_after: int = 30 * 86400
    stale_policy: str = "deny"
    stale_sweep_interval: int = 300  # seconds between background sweeps
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
    testing: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from the environment (or from ``env`` in tests)."""
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("DEVICETRUST_DATA_DIR") or default_data_dir())
        url = env.get("DEVICETRUST_DATABASE_URL") or f"sqlite:///{data_dir / 'devicetrust.db'}"
        s = cls(
            database_url=url,
            public_url=env.get("DEVICETRUST_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
            data_dir=data_dir,
            agent_ports=parse_ports(env.get("DEVICETRUST_AGENT_PORTS")),
            challenge_ttl=int(env.get("DEVICETRUST_CHALLENGE_TTL", "60")),
            max_clock_skew=float(env.get("DEVICETRUST_MAX_CLOCK_SKEW", "300")),
            login_ttl=int(env.get("DEVICETRUST_LOGIN_TTL", "600")),
            enroll_code_ttl=int(env.get("DEVICETRUST_ENROLL_CODE_TTL", str(24 * 3600))),
            secret_key=env.get("DEVICETRUST_SECRET_KEY", ""),
            registration_policy=env.get("DEVICETRUST_REGISTRATION_POLICY", "tofu").strip(),
            approval_code_ttl=60 * int(env.get("DEVICETRUST_APPROVAL_CODE_TTL", "10")),
            approval_attempts=int(env.get("DEVICETRUST_APPROVAL_ATTEMPTS", "5")),
            report_interval=int(env.get("DEVICETRUST_REPORT_INTERVAL", "300")),
            checks_dirs=tuple(
                d for d in env.get("DEVICETRUST_CHECKS_DIR", "").split(os.pathsep) if d
            ),
            builtin_checks=_builtin(env.get("DEVICETRUST_BUILTIN_CHECKS", "none")),
            osquery_queries=_queries(env.get("DEVICETRUST_OSQUERY_QUERIES")),
            extra_origins=tuple(
                o.rstrip("/") for o in env.get("DEVICETRUST_EXTRA_ORIGINS", "").split() if o
            ),
            scim_reactivation=env.get("DEVICETRUST_SCIM_REACTIVATION", "require_approval"),
            admin_group=env.get("DEVICETRUST_ADMIN_GROUP", "devicetrust-admins").strip(),
            admin_session_ttl=int(env.get("DEVICETRUST_ADMIN_SESSION_TTL", str(8 * 3600))),
            clone_policy=env.get("DEVICETRUST_CLONE_POLICY", "suspend").strip(),
            concurrent_window=parse_duration(
                env.get("DEVICETRUST_CONCURRENT_AGENT_WINDOW", "1h"),
                "DEVICETRUST_CONCURRENT_AGENT_WINDOW",
            ),
            stale_after=parse_duration(
                env.get("DEVICETRUST_STALE_AFTER", "30d"), "DEVICETRUST_STALE_AFTER"
            ),
            stale_policy=env.get("DEVICETRUST_STALE_POLICY", "deny").strip(),
            stale_sweep_interval=parse_duration(
                env.get("DEVICETRUST_STALE_SWEEP_INTERVAL", "5m"),
                "DEVICETRUST_STALE_SWEEP_INTERVAL",
            ),
            webhook_retry_delays=_delays(env.get("DEVICETRUST_WEBHOOK_RETRY_DELAYS")),
            webhook_timeout=float(env.get("DEVICETRUST_WEBHOOK_TIMEOUT", "10")),
            webhook_poll=float(env.get("DEVICETRUST_WEBHOOK_POLL", "1")),
            webhook_allow_private=_flag(env, "DEVICETRUST_WEBHOOK_ALLOW_PRIVATE"),
            ratelimit_enabled=_flag(env, "DEVICETRUST_RATELIMIT_ENABLED", default=True),
            ratelimit_storage=_ratelimit_storage(env.get("DEVICETRUST_RATELIMIT_STORAGE", "")),
            rate_limits=_rate_limits(env),
            trusted_proxies=_proxies(env.get("DEVICETRUST_TRUSTED_PROXIES", "")),
        )
        s.trusted_hosts = _trusted_hosts(env.get("DEVICETRUST_TRUSTED_HOSTS"), s.public_url)
        if s.clone_policy not in ("suspend", "flag"):
            raise ValueError("DEVICETRUST_CLONE_POLICY must be suspend or flag")
        if s.stale_policy not in ("deny", "flag"):
            raise ValueError("DEVICETRUST_STALE_POLICY must be deny or flag")
        if not 0 < s.webhook_timeout <= 60 or not 0 < s.webhook_poll <= 60:
            raise ValueError("DEVICETRUST_WEBHOOK_TIMEOUT and _POLL are 0 to 60 seconds")
        if s.scim_reactivation not in ("require_approval", "restore"):
            raise ValueError("DEVICETRUST_SCIM_REACTIVATION must be require_approval or restore")
        if s.registration_policy not in REGISTRATION_POLICIES:
            raise ValueError(
                f"DEVICETRUST_REGISTRATION_POLICY={s.registration_policy!r} is not a policy; "
                "use one of: " + ", ".join(REGISTRATION_POLICIES)
            )
        if not 0 < s.approval_code_ttl <= 24 * 3600:
            raise ValueError("DEVICETRUST_APPROVAL_CODE_TTL must be between 1 and 1440 minutes")
        if not 0 < s.approval_attempts <= 100:
            raise ValueError("DEVICETRUST_APPROVAL_ATTEMPTS must be between 1 and 100")
        if not 0 < s.challenge_ttl <= 120:
            raise ValueError("DEVICETRUST_CHALLENGE_TTL must be between 1 and 120 seconds")
        return s

    @property
    def origin(self) -> str:
        """The scheme://host[:port] of the public URL, as browsers send it in ``Origin``."""
        from urllib.parse import urlsplit

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
    return f"__Host-{base}" if settings.public_url.startswith("https://") else base
