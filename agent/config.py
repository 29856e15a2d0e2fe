"""The agent's configuration: which service it belongs to, the pinned server key, ports, interval.

Layers, each overriding the one before::

    defaults < file < MDM-managed source < environment (DEVICETRUST_AGENT_*) < command line

* **file**: TOML, ``/etc/devicetrust/agent.toml`` on Linux,
  ``/Library/Application Support/devicetrust/agent.toml`` on macOS,
  ``%ProgramData%\\devicetrust\\agent.toml`` on Windows (``--config`` or
  ``DEVICETRUST_AGENT_CONFIG`` name another; a missing default file is fine, a
  missing named one is an error).
* **MDM-managed source**: on macOS the managed preferences a configuration
  profile writes (``/Library/Managed Preferences/com.devicetrust.agent.plist``);
  on Windows the policy key an Intune policy writes
  (``HKLM\\SOFTWARE\\Policies\\devicetrust\\Agent``). Linux has none (the file is
  what apt, Ansible or Puppet manage).

Every source uses the same key names (:data:`KEYS`): ``service_url``,
``server_key_fingerprint``, ``agent_ports`` and ``report_interval``. None of
them is secret, and a source that holds one (an enrollment code, a token, a
password) is refused: codes never go into fleet-wide configuration, employees
enroll from the login page.

The standard library only (``tomllib``, ``plistlib``, ``winreg``): the agent must
stay small. pydantic-settings would add pydantic and pydantic-core, about 10 MB
on disk and 17 MB of resident memory once imported, against an idle budget of
40 MB (docs/rollout.md, "Configuration keys").
"""

from __future__ import annotations

import hmac
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.origins import service_url
from trust_protocol import durations
from trust_protocol.device_keys import fingerprint
from trust_protocol.encoding import b64d, b64e
from trust_protocol.errors import ProtocolError
from trust_protocol.ports import parse_ports

KEYS = ("service_url", "server_key_fingerprint", "agent_ports", "report_interval")
ENV_PREFIX = "DEVICETRUST_AGENT_"
# The environment variable of each key (agent_ports keeps the name the protocol uses).
ENV_NAMES = {
    "service_url": "DEVICETRUST_AGENT_SERVICE_URL",
    "server_key_fingerprint": "DEVICETRUST_AGENT_SERVER_KEY_FINGERPRINT",
    "agent_ports": "DEVICETRUST_AGENT_PORTS",
    "report_interval": "DEVICETRUST_AGENT_REPORT_INTERVAL",
}
CONFIG_ENV = "DEVICETRUST_AGENT_CONFIG"
MAC_MANAGED_PLIST = Path("/Library/Managed Preferences/com.devicetrust.agent.plist")
MAC_DOMAIN = "com.devicetrust.agent"
WINDOWS_POLICY_KEY = r"SOFTWARE\Policies\devicetrust\Agent"
MIN_REPORT_INTERVAL = 30.0  # the agent's own floor (agent/report.py MIN_INTERVAL)
MAX_REPORT_INTERVAL = 86400.0
# Names that can only hold a secret. Compared without case, "_" or "-".
SECRET_WORDS = ("code", "token", "secret", "password", "passwd", "otp", "apikey")
EX_CONFIG = 78  # sysexits.h: configuration error (units do not restart on it)


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and what to do."""


# ---- values ---------------------------------------------------------------------------


def parse_fingerprint(value: object) -> str:
    """``SHA256:<base64url>`` (as ``devicetrust-agent server-fingerprint`` prints) or 64 hex.

    Returns the canonical ``SHA256:`` form; raises ValueError otherwise.
    """
    if not isinstance(value, str):
        raise ValueError("must be a key fingerprint, a string like SHA256:<43 characters>")
    text = value.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return "SHA256:" + b64e(bytes.fromhex(text))
    if text[:7].upper() == "SHA256:" and _decodes(text[7:]):
        return "SHA256:" + text[7:]
    raise ValueError(
        f"{text[:80]!r} is not a key fingerprint: use the SHA256:... text that "
        "`devicetrust-agent server-fingerprint URL` prints (or 64 hex digits)"
    )


def _decodes(text: str) -> bool:
    try:
        b64d(text, length=32, field="fingerprint")
    except ProtocolError:
        return False
    return True


def _service_url(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a URL like https://signin.example.com")
    return service_url(value)


def _ports(value: object) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise ValueError("must be a list of port numbers")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, list | tuple):
        if not value or not all(
            isinstance(p, int | str) and not isinstance(p, bool) for p in value
        ):
            raise ValueError("must be a list of port numbers")
        value = " ".join(str(p) for p in value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be port numbers like 47621 37123")
    try:
        return parse_ports(value)
    except ValueError:
        raise ValueError(f"{value[:80]!r} is not a list of port numbers (1-65535)") from None


def _interval(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError('must be a duration like "15 min"')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = durations.parse_duration(value).total_seconds()
    else:
        raise ValueError('must be a duration like "15 min"')
    if not MIN_REPORT_INTERVAL <= seconds <= MAX_REPORT_INTERVAL:
        raise ValueError(
            f"must be between {durations.format_duration(MIN_REPORT_INTERVAL)} and "
            f"{durations.format_duration(MAX_REPORT_INTERVAL)}, not {value!r}"
        )
    return seconds


PARSERS: dict[str, Callable[[object], Any]] = {
    "service_url": _service_url,
    "server_key_fingerprint": parse_fingerprint,
    "agent_ports": _ports,
    "report_interval": _interval,
}


def looks_secret(name: str) -> bool:
    """True for a key name that can only hold a secret (``enrollment_code``, ``Token``...)."""
    flat = re.sub(r"[^a-z]", "", name.lower())
    return any(word in flat for word in SECRET_WORDS)


# ---- sources --------------------------------------------------------------------------


class Source(Protocol):
    """One layer: ``read()`` returns its raw key/values, or None when it is absent."""

    name: str
    strict: bool  # unknown keys are errors (hand-edited) or warnings (fleet-wide, maybe newer)

    def read(self) -> Mapping[str, object] | None:
        """The raw values, or None when this source does not exist on this machine."""
        ...


@dataclass
class FileSource:
    """The TOML configuration file."""

    path: Path
    required: bool = False
    strict: bool = True

    @property
    def name(self) -> str:
        """Where values came from, as messages say it."""
        return f"file {self.path}"

    def read(self) -> Mapping[str, object] | None:
        """Parse the file; None when the default file is absent."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            if self.required:
                raise ConfigError(
                    f"{self.path}: no such configuration file. Create it, or drop --config / "
                    f"{CONFIG_ENV} to use the default location."
                ) from None
            return None
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read it ({exc.strerror}).") from None
        _check_not_writable_by_others(self.path)
        import tomllib  # only when there is a file: the agent's idle memory is counted

        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"{self.path}: not valid TOML ({exc}). Fix it; `devicetrust-agent config` "
                "checks it."
            ) from None


def _check_not_writable_by_others(path: Path) -> None:
    """A pin that anyone can rewrite pins nothing: refuse a group/world-writable file."""
    if sys.platform == "win32":  # NTFS ACLs; the installer restricts %ProgramData%\devicetrust
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"{path} has mode {mode:04o}: others could change the service and its pinned key. "
            f"Fix it: chmod 644 {path}"
        )


@dataclass
class PlistSource:
    """macOS managed preferences, written by a configuration profile (Jamf, Kandji...)."""

    path: Path = MAC_MANAGED_PLIST
    strict: bool = False

    @property
    def name(self) -> str:
        """Where values came from, as messages say it."""
        return f"managed preferences {self.path}"

    def read(self) -> Mapping[str, object] | None:
        """The preference domain's keys (binary or XML plist); None without a profile."""
        import plistlib

        try:
            with self.path.open("rb") as fh:
                data = plistlib.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, plistlib.InvalidFileException, ValueError) as exc:
            raise ConfigError(
                f"{self.path}: not a readable property list ({exc}). Check the "
                f"{MAC_DOMAIN} configuration profile in your MDM."
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path}: expected a dictionary of settings.")
        # A custom-settings payload may carry its own Payload* bookkeeping keys.
        return {k: v for k, v in data.items() if not str(k).startswith("Payload")}


class RegistryReader(Protocol):
    """Reads the values of one registry key: name -> (data, REG_* type); None if no key."""

    def values(self) -> dict[str, tuple[object, int]] | None:
        """All values of the key, or None when the key does not exist."""
        ...


REG_SZ, REG_EXPAND_SZ, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 1, 2, 4, 7, 11


class WinregReader:
    """:class:`RegistryReader` over ``winreg`` (or a module with the same calls)."""

    def __init__(self, key: str = WINDOWS_POLICY_KEY, module: Any = None) -> None:
        self.key = key
        self.module = module

    def values(self) -> dict[str, tuple[object, int]] | None:
        """Enumerate the key's values (64-bit view, read only)."""
        winreg = self.module
        if winreg is None:
            import winreg  # type: ignore[import-not-found,no-redef]  # Windows only
        access = winreg.KEY_READ | getattr(winreg, "KEY_WOW64_64KEY", 0)
        try:
            handle = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, self.key, 0, access)
        except FileNotFoundError:
            return None
        out: dict[str, tuple[object, int]] = {}
        with handle:
            index = 0
            while True:
                try:
                    name, data, kind = winreg.EnumValue(handle, index)
                except OSError:  # ERROR_NO_MORE_ITEMS
                    break
                out[name] = (data, kind)
                index += 1
        return out


@dataclass
class RegistrySource:
    """Windows policy values, written by Intune (ADMX-backed policy or a script)."""

    reader: RegistryReader = field(default_factory=WinregReader)
    strict: bool = False

    @property
    def name(self) -> str:
        """Where values came from, as messages say it."""
        return "registry HKLM\\" + WINDOWS_POLICY_KEY

    def read(self) -> Mapping[str, object] | None:
        """The values as Python data: REG_SZ text, REG_DWORD numbers, REG_MULTI_SZ lists."""
        found = self.reader.values()
        if found is None:
            return None
        out: dict[str, object] = {}
        for name, (data, kind) in found.items():
            if name == "":  # the key's unnamed default value
                continue
            if kind in (REG_SZ, REG_EXPAND_SZ, REG_DWORD, REG_QWORD):
                out[name] = data
            elif kind == REG_MULTI_SZ:
                out[name] = [s for s in data if s] if isinstance(data, list) else data
            else:
                out[name] = _Unsupported(kind)
        return out


@dataclass(frozen=True)
class _Unsupported:
    kind: int


@dataclass
class EnvSource:
    """``DEVICETRUST_AGENT_<KEY>`` environment variables (:data:`ENV_NAMES`)."""

    environ: Mapping[str, str]
    strict: bool = True
    name: str = "environment"

    def read(self) -> Mapping[str, object] | None:
        """The keys that have a non-empty variable."""
        return {k: self.environ[v] for k, v in ENV_NAMES.items() if self.environ.get(v, "").strip()}


@dataclass
class ArgsSource:
    """Command-line flags (None: not given)."""

    values: Mapping[str, object]
    strict: bool = True
    name: str = "command line"

    def read(self) -> Mapping[str, object] | None:
        """The flags that were given."""
        return {k: v for k, v in self.values.items() if v is not None}


# ---- the merged configuration ---------------------------------------------------------


@dataclass(frozen=True)
class AgentConfig:
    """The effective configuration and where each value came from."""

    service_url: str | None = None
    server_key_fingerprint: str | None = None
    agent_ports: tuple[int, ...] | None = None
    report_interval: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    searched: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def origin(self, key: str) -> str:
        """Where ``key`` came from (``default`` when nowhere set it)."""
        return self.sources.get(key, "default")

    def to_json(self) -> dict[str, Any]:
        """For ``devicetrust-agent config --json``."""
        return {
            "service_url": self.service_url,
            "server_key_fingerprint": self.server_key_fingerprint,
            "agent_ports": list(self.agent_ports) if self.agent_ports else None,
            "report_interval": self.report_interval,
            "sources": {k: self.origin(k) for k in KEYS},
            "searched": list(self.searched),
            "warnings": list(self.warnings),
        }


def default_config_path(
    platform: str = sys.platform, environ: Mapping[str, str] = os.environ
) -> Path:
    """The per-OS configuration file."""
    if platform == "win32":
        base = environ.get("PROGRAMDATA") or environ.get("ProgramData") or r"C:\ProgramData"
        return Path(base) / "devicetrust" / "agent.toml"
    if platform == "darwin":
        return Path("/Library/Application Support/devicetrust/agent.toml")
    return Path("/etc/devicetrust/agent.toml")


def default_mdm_source(platform: str = sys.platform) -> Source | None:
    """The MDM-managed source of this OS, if it has one."""
    if platform == "darwin":
        return PlistSource()
    if platform == "win32":
        return RegistrySource()
    return None


def default_sources(
    args: Mapping[str, object] | None = None,
    *,
    config_path: Path | None = None,
    platform: str = sys.platform,
    environ: Mapping[str, str] = os.environ,
) -> list[Source]:
    """The layers for this OS, lowest first."""
    named = config_path or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    sources: list[Source] = [
        FileSource(named or default_config_path(platform, environ), required=named is not None)
    ]
    mdm = default_mdm_source(platform)
    if mdm is not None:
        sources.append(mdm)
    sources.append(EnvSource(environ))
    sources.append(ArgsSource(args or {}))
    return sources


def merge(sources: Iterable[Source]) -> AgentConfig:
    """Read every layer in order; later layers win key by key. Raises :class:`ConfigError`."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    searched: list[str] = []
    warnings: list[str] = []
    for source in sources:
        raw = source.read()
        searched.append(source.name + ("" if raw is not None else " (absent)"))
        if raw is None:
            continue
        refused = sorted(k for k in raw if looks_secret(str(k)))
        if refused:
            raise ConfigError(
                f"{source.name} holds {', '.join(refused)}: the agent's configuration must "
                "not carry enrollment codes or other secrets, and is refused. Remove the key "
                "from it (and treat that code as disclosed: revoke it). Employees enroll from "
                "the login page, or with `devicetrust-agent enroll`."
            )
        for key, value in raw.items():
            if key not in PARSERS:
                message = f"{source.name}: unknown setting {key!r} (known: {', '.join(KEYS)})"
                if source.strict:
                    raise ConfigError(message + ". Fix or remove it.")
                warnings.append(message + "; ignored")
                continue
            if isinstance(value, _Unsupported):
                raise ConfigError(
                    f"{source.name}: {key} has registry type {value.kind}; write it as a "
                    "string (REG_SZ), a number (REG_DWORD) or a list (REG_MULTI_SZ)."
                )
            try:
                values[key] = PARSERS[key](value)
            except OverflowError:
                raise ConfigError(f"{source.name}: {key} is far too large") from None
            except ValueError as exc:
                raise ConfigError(f"{source.name}: {key} {exc}") from None
            origins[key] = source.name
    return AgentConfig(
        **values, sources=origins, searched=tuple(searched), warnings=tuple(warnings)
    )


def load(
    args: Mapping[str, object] | None = None,
    *,
    config_path: Path | None = None,
    platform: str = sys.platform,
    environ: Mapping[str, str] = os.environ,
) -> AgentConfig:
    """The effective configuration on this machine (defaults < file < MDM < env < flags)."""
    return merge(default_sources(args, config_path=config_path, platform=platform, environ=environ))


def _toml_value(value: object) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(int(v)) for v in value) + "]"
    if isinstance(value, int | float):
        return str(int(value))
    text = str(value)
    if any(c in text for c in '"\\\n\r'):
        raise ConfigError(f"{text[:40]!r}: quotes, backslashes and newlines are not allowed")
    return f'"{text}"'


def update_file(path: Path, settings: Mapping[str, object]) -> dict[str, object]:
    """Set ``settings`` in the TOML file at ``path`` (an installer's command-line values).

    Blank values are left out; the file's other keys stay. Every value is checked
    as the agent will read it, so a typo fails here (and fails the install). The
    file is replaced atomically, 0644. Returns what was written.
    """
    given = {k: v for k, v in settings.items() if not (isinstance(v, str) and not v.strip())}
    for key in given:
        if key not in PARSERS:
            raise ConfigError(f"unknown setting {key!r} (known: {', '.join(KEYS)})")
    if not given:
        return {}
    current = dict(FileSource(path).read() or {})
    merged = {**current, **given}
    checked = merge([ArgsSource(merged)])  # raises ConfigError with the key's name
    out = {k: getattr(checked, k) for k in KEYS if k in merged}
    text = "# Written by the devicetrust agent's installer; see docs/rollout.md.\n" + "".join(
        f"{k} = {_toml_value(v)}\n" for k, v in out.items()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return {k: out[k] for k in given}


# ---- the pin --------------------------------------------------------------------------


class PinMismatch(Exception):
    """The service's key is not the one the configuration pins."""

    code = "server_key_mismatch"

    def __init__(self, server_url: str, presented: str, pinned: str, origin: str) -> None:
        self.presented = presented
        self.pinned = pinned
        self.message = (
            f"the service at {server_url} presents server key {presented}, but this device's "
            f"configuration ({origin}) pins {pinned}. The agent will not talk to it."
        )
        self.hint = (
            "If the address is right and IT changed the service's key, update "
            f"server_key_fingerprint in {origin}. Otherwise service_url may point at the "
            "wrong server (check it, and DNS). `devicetrust-agent server-fingerprint URL` "
            "shows what a service presents; compare it with what the service's operators "
            "publish."
        )
        super().__init__(self.message)


def check_pin(server_key: str, server_url: str, config: AgentConfig) -> None:
    """Raise :class:`PinMismatch` when a pin is set and ``server_key`` (base64url) differs."""
    pinned = config.server_key_fingerprint
    if not pinned:
        return
    presented = fingerprint(b64d(server_key, length=32, field="server_key"))
    if not hmac.compare_digest(presented.encode(), pinned.encode()):
        raise PinMismatch(server_url, presented, pinned, config.origin("server_key_fingerprint"))


__all__ = [
    "AgentConfig",
    "ArgsSource",
    "ConfigError",
    "EnvSource",
    "FileSource",
    "PinMismatch",
    "PlistSource",
    "RegistryReader",
    "RegistrySource",
    "WinregReader",
    "check_pin",
    "default_config_path",
    "load",
    "merge",
    "parse_fingerprint",
]
