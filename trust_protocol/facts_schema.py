"""The fact document's schema: every field, its type, and an example value.

This is the single source of truth that ``docs/facts.md`` describes in prose.
The agent's output is validated against it in tests, the service can validate
incoming reports with :func:`validate_facts`, and the check linter uses
:func:`known_path` and :func:`example_document` to catch misspelt facts.

Versioning: :data:`SCHEMA_VERSION` is an integer. Adding an optional field or
a new enum value is backwards compatible and keeps the version; renaming or
removing a field, or changing its type or meaning, increments it.

Pure Python, no third-party imports: the service imports this too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
PLATFORMS = ("linux", "macos", "windows")

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Leaf:
    """A scalar: ``string``, ``int``, ``bool`` or ``timestamp`` (an RFC 3339 string)."""

    type: str
    example: Any
    nullable: bool = True
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Obj:
    """A JSON object with exactly these fields (each may be null unless marked)."""

    fields: dict[str, Any]
    nullable: bool = True


@dataclass(frozen=True)
class ListOf:
    """A JSON array of one kind of item."""

    item: Any
    nullable: bool = True


@dataclass(frozen=True)
class MapOf:
    """A JSON object with free-form keys and one kind of value."""

    value: Any
    example_keys: tuple[str, ...] = ()
    nullable: bool = True
    value_example: Any = field(default=None)


def _s(example: Any, *enum: str, nullable: bool = True) -> Leaf:
    return Leaf("string", example, nullable, tuple(enum))


def _i(example: int, nullable: bool = True) -> Leaf:
    return Leaf("int", example, nullable)


def _b(example: bool = True, nullable: bool = True) -> Leaf:
    return Leaf("bool", example, nullable)


VOLUME_ROLES = ("system", "data", "boot", "swap", "removable")
ENCRYPTION_METHODS = (
    "luks1",
    "luks2",
    "plain",
    "tcrypt",
    "bitlk",
    "zfs",
    "ecryptfs",
    "filevault",
    "bitlocker",
    "other",
)

SCHEMA = Obj(
    {
        "schema_version": _i(SCHEMA_VERSION, nullable=False),
        "collected_at": Leaf("timestamp", "2025-01-31T12:00:00Z", nullable=False),
        "hostname": _s("laptop-42"),
        "agent": Obj({"version": _s("0.1.0")}),
        "os": Obj(
            {
                "family": _s("linux", *PLATFORMS, nullable=False),
                "name": _s("Debian GNU/Linux"),
                "version": _s("12"),
                "build": _s("23C71"),
                "kernel": _s("6.1.0-18-amd64"),
                "distribution": _s("debian"),
            },
            nullable=False,
        ),
        "hardware": Obj(
            {
                "vendor": _s("LENOVO"),
                "model": _s("ThinkPad T14 Gen 3"),
                "serial": _s("PF3ABCDE"),
                "hardware_uuid": _s("4c4c4544-0038-4b10-8051-b4c04f4e4e32"),
            }
        ),
        "security_chip": Obj(
            {
                "kind": _s("tpm", "tpm", "secure_enclave"),
                "present": _b(),
                "version": _s("2.0"),
            }
        ),
        "console_users": ListOf(_s("alice", nullable=False)),
        "disk_encryption": Obj(
            {
                "system_volume_encrypted": _b(),
                "all_encrypted": _b(),
                "volumes": ListOf(
                    Obj(
                        {
                            "mountpoint": _s("/", nullable=False),
                            "mountpoints": ListOf(_s("/", nullable=False)),
                            "device": _s("/dev/mapper/vg-root"),
                            "fstype": _s("ext4"),
                            "role": _s("system", *VOLUME_ROLES, nullable=False),
                            "encrypted": _b(),
                            "method": _s("luks2", *ENCRYPTION_METHODS),
                            "cipher": _s("aes-xts-plain64"),
                            "status": _s("active"),
                            "layers": ListOf(_s("crypt", nullable=False)),
                        },
                        nullable=False,
                    )
                ),
            }
        ),
        "firewall": Obj(
            {
                "enabled": _b(),
                "default_inbound": _s("block", "block", "allow"),
                "products": ListOf(
                    Obj(
                        {
                            "name": _s("nftables", nullable=False),
                            "enabled": _b(),
                            "default_inbound": _s("block", "block", "allow"),
                        },
                        nullable=False,
                    )
                ),
            }
        ),
        "screen_lock": Obj(
            {
                "all_enabled": _b(),
                "max_timeout_seconds": _i(300),
                "users": ListOf(
                    Obj(
                        {
                            "user": _s("alice", nullable=False),
                            "source": _s("gsettings"),
                            "enabled": _b(),
                            "timeout_seconds": _i(300),
                            "idle_seconds": _i(300),
                            "delay_seconds": _i(0),
                        },
                        nullable=False,
                    )
                ),
            }
        ),
        "auto_updates": Obj(
            {
                "enabled": _b(),
                "mechanism": _s("unattended-upgrades"),
                "check_enabled": _b(),
                "install_enabled": _b(),
            }
        ),
        "secure_boot": Obj({"supported": _b(), "enabled": _b()}),
        "system_integrity": Obj({"sip_enabled": _b(), "gatekeeper_enabled": _b()}),
        "management": Obj(
            {
                "mdm_enrolled": _b(),
                "mdm_provider": _s("Intune"),
                "domain_joined": _b(),
                "domain": _s("corp.example.com"),
                "azure_ad_joined": _b(False),
            }
        ),
        "security_software": Obj(
            {
                "running": _b(),
                "edr_running": _b(),
                "av_running": _b(),
                "products": ListOf(_s("CrowdStrike Falcon", nullable=False)),
                "defender": Obj(
                    {
                        "antivirus_enabled": _b(),
                        "realtime_enabled": _b(),
                        "signature_age_days": _i(0),
                    }
                ),
            }
        ),
        "packages": Obj(
            {
                "manager": _s("dpkg"),
                "count": _i(1),
                "truncated": _b(False),
                "installed": MapOf(_s("1.0", nullable=False), ("openssh-client",)),
            }
        ),
        "browsers": MapOf(_s("121.0", nullable=False), ("firefox",)),
        "ssh_keys": Obj(
            {
                "scanned_users": ListOf(_s("alice", nullable=False)),
                "unencrypted_count": _i(0),
                "keys": ListOf(
                    Obj(
                        {
                            "user": _s("alice", nullable=False),
                            "path": _s("/home/alice/.ssh/id_ed25519", nullable=False),
                            "type": _s("ssh-ed25519"),
                            "format": _s("openssh", "openssh", "pem", "pkcs8", "putty"),
                            "encrypted": _b(),
                        },
                        nullable=False,
                    )
                ),
            }
        ),
        "uptime_seconds": _i(3600),
        "osquery": Obj(
            {
                "available": _b(False, nullable=False),
                "results": MapOf(ListOf(MapOf(_s("x", nullable=False), ("name",))), ("q",)),
                "errors": MapOf(_s("no such table", nullable=False), ("q",)),
            },
            nullable=False,
        ),
        "errors": ListOf(
            Obj(
                {
                    "collector": _s("firewall", nullable=False),
                    "error": _s("nft exited with status 1", nullable=False),
                },
                nullable=False,
            ),
            nullable=False,
        ),
    },
    nullable=False,
)

#: The fact sections at the top of the document (CEL sees each as a variable).
ROOTS: tuple[str, ...] = tuple(SCHEMA.fields)


def _type_ok(spec: Leaf, value: Any) -> bool:
    if spec.type == "string":
        return isinstance(value, str)
    if spec.type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.type == "bool":
        return isinstance(value, bool)
    if spec.type == "timestamp":
        return isinstance(value, str) and bool(_TIMESTAMP.match(value))
    raise AssertionError(spec.type)  # pragma: no cover - schema bug


def _validate(spec: Any, value: Any, path: str, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if value is None:
        if not spec.nullable:
            out.append(f"{path}: must not be null")
        return
    if isinstance(spec, Leaf):
        if not _type_ok(spec, value):
            out.append(f"{path}: expected {spec.type}, got {type(value).__name__}")
        elif spec.enum and value not in spec.enum:
            out.append(f"{path}: {value!r} is not one of {', '.join(spec.enum)}")
    elif isinstance(spec, Obj):
        if not isinstance(value, dict):
            out.append(f"{path}: expected object, got {type(value).__name__}")
            return
        for key in value:
            if key not in spec.fields:
                out.append(f"{path}.{key}: not in schema v{SCHEMA_VERSION}".lstrip("."))
        for key, sub in spec.fields.items():
            sub_path = f"{path}.{key}" if path else key
            if key not in value:
                out.append(f"{sub_path}: missing")
            else:
                _validate(sub, value[key], sub_path, out, limit)
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            out.append(f"{path}: expected array, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            _validate(spec.item, item, f"{path}[{index}]", out, limit)
    elif isinstance(spec, MapOf):
        if not isinstance(value, dict):
            out.append(f"{path}: expected object, got {type(value).__name__}")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                out.append(f"{path}: keys must be strings")
            else:
                _validate(spec.value, item, f"{path}[{key!r}]", out, limit)


def validate_facts(document: Any, *, limit: int = 50) -> list[str]:
    """Problems with ``document`` against the schema (empty when it conforms)."""
    problems: list[str] = []
    _validate(SCHEMA, document, "", problems, limit)
    return problems


def _example(spec: Any) -> Any:
    if isinstance(spec, Leaf):
        return spec.example
    if isinstance(spec, Obj):
        return {key: _example(sub) for key, sub in spec.fields.items()}
    if isinstance(spec, ListOf):
        return [_example(spec.item)]
    if isinstance(spec, MapOf):
        return {key: _example(spec.value) for key in spec.example_keys}
    raise AssertionError(spec)  # pragma: no cover


def example_document(platform: str = "linux") -> dict[str, Any]:
    """A complete, schema-valid fact document with every field set (for linting)."""
    doc: dict[str, Any] = _example(SCHEMA)
    doc["os"]["family"] = platform
    doc["security_chip"]["kind"] = "secure_enclave" if platform == "macos" else "tpm"
    return doc


def spec_at(path: list[str]) -> Any | None:
    """The schema node at a dotted path, or None if no such fact exists.

    Path segments after a map step may be anything (map keys are free-form);
    a list step cannot be followed by a field name (use a macro or an index).
    """
    spec: Any = SCHEMA
    for segment in path:
        if isinstance(spec, Obj):
            if segment not in spec.fields:
                return None
            spec = spec.fields[segment]
        elif isinstance(spec, MapOf):
            spec = spec.value
        else:
            return None
    return spec


def known_path(path: str) -> bool:
    """True if ``a.b.c`` names a fact (or something inside a map of facts)."""
    return spec_at(path.split(".")) is not None


def iter_paths(spec: Any = SCHEMA, prefix: str = "") -> list[tuple[str, Any]]:
    """Every documented path with its schema node: ``volumes[].encrypted``, ``installed.*``."""
    out: list[tuple[str, Any]] = []
    if isinstance(spec, Obj):
        for key, sub in spec.fields.items():
            path = f"{prefix}.{key}" if prefix else key
            out.append((path, sub))
            out.extend(iter_paths(sub, path))
    elif isinstance(spec, ListOf):
        out.extend(iter_paths(spec.item, f"{prefix}[]"))
    elif isinstance(spec, MapOf):
        out.extend(iter_paths(spec.value, f"{prefix}.*"))
    return out
