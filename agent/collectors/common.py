"""Collectors and helpers shared by every OS: psutil facts, SSH keys, known products.

* security software: running process names (psutil) matched against a table
  of known EDR/AV products;
* uptime from psutil's boot time;
* SSH private keys: which ones have no passphrase, found by parsing only the
  key file's header (format, cipher name, key type). Key material is never
  decoded, kept or sent;
* browsers: picked out of the installed packages/apps by name.
"""

from __future__ import annotations

import base64
import binascii
import re
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.collectors.base import Host


@dataclass(frozen=True)
class Product:
    """A security product and the process names that show it is running."""

    name: str
    kind: str  # "edr" or "av"
    processes: tuple[str, ...]


#: Known EDR/AV products. Process names are compared case-insensitively.
SECURITY_PRODUCTS: tuple[Product, ...] = (
    Product(
        "CrowdStrike Falcon",
        "edr",
        ("falcon-sensor", "falcond", "com.crowdstrike.falcon.agent", "csfalconservice.exe"),
    ),
    Product(
        "SentinelOne",
        "edr",
        (
            "sentinelagent",
            "sentineld",
            "s1-agent",
            "s1-orchestrator",
            "sentinelagent.exe",
            "sentinelservicehost.exe",
        ),
    ),
    Product("Microsoft Defender for Endpoint", "edr", ("mssense.exe", "wdavdaemon", "mdatp")),
    Product("Microsoft Defender Antivirus", "av", ("msmpeng.exe",)),
    Product(
        "Sophos",
        "edr",
        ("sophos_threat_detector", "sophosscand", "sophosed.exe", "sophosfilescanner.exe"),
    ),
    Product("VMware Carbon Black", "edr", ("cbagentd", "cbdaemon", "repmgr.exe")),
    Product("Palo Alto Cortex XDR", "edr", ("traps_pmd", "cyserver.exe", "cortex-xdr")),
    Product("Elastic Defend", "edr", ("elastic-endpoint", "elastic-endpoint.exe")),
    Product("Jamf Protect", "edr", ("jamfprotect",)),
    Product("Huntress", "edr", ("huntressagent.exe", "huntress-agent")),
    Product("Trend Micro", "edr", ("ds_agent", "ntrtscan.exe", "tmbmsrv.exe")),
    Product("ESET", "av", ("esets_daemon", "ekrn.exe", "oaeventd")),
    Product("Kaspersky", "av", ("kesl", "avp.exe", "avp")),
    Product("Bitdefender", "av", ("bdsecd", "bdservicehost.exe", "epsecurityservice.exe")),
    Product("Malwarebytes", "av", ("mbamservice.exe", "rtprotectiondaemon")),
    Product("ClamAV", "av", ("clamd", "clamd.exe")),
    Product("Apple XProtect", "av", ("xprotectservice", "xprotect")),
    Product("Wazuh", "edr", ("wazuh-agentd",)),
)

# Linux truncates process names to 15 characters (TASK_COMM_LEN - 1).
_COMM_LEN = 15


def match_security_products(process_names: Iterable[str]) -> list[Product]:
    """The known products among these running process names."""
    running = {name.lower() for name in process_names}
    truncated = {name for name in running if len(name) == _COMM_LEN}
    found = []
    for product in SECURITY_PRODUCTS:
        for proc in product.processes:
            if proc in running or any(proc.startswith(t) for t in truncated):
                found.append(product)
                break
    return found


def collect_security_software(host: Host) -> dict[str, Any]:
    """Which known EDR/AV products have a running process."""
    products = match_security_products(host.process_names())
    return {
        "running": bool(products),
        "edr_running": any(p.kind == "edr" for p in products),
        "av_running": any(p.kind in ("av", "edr") for p in products),
        "products": sorted(p.name for p in products),
        "defender": None,
    }


def collect_uptime(host: Host) -> int:
    """Seconds since boot."""
    return max(0, int(host.clock() - host.boot_time_source()))


def agent_version() -> str | None:
    """This agent's version, or None if it cannot be told (running from a source tree)."""
    try:
        import agent

        version = getattr(agent, "__version__", None)
        if isinstance(version, str):
            return version
    except ImportError:  # pragma: no cover - we are inside the agent package
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("devicetrust")
        except PackageNotFoundError:
            return None
    except ImportError:  # pragma: no cover
        return None


_PLACEHOLDERS = {
    "",
    "none",
    "n/a",
    "default string",
    "to be filled by o.e.m.",
    "system serial number",
    "not specified",
    "system manufacturer",
    "system product name",
    "0",
    "00000000-0000-0000-0000-000000000000",
    "03000200-0400-0500-0006-000700080009",
}


def clean_dmi(value: str | None) -> str | None:
    """A DMI string, or None when it is missing or a firmware placeholder."""
    if value is None:
        return None
    value = value.strip().strip("\x00").strip()
    return None if value.lower() in _PLACEHOLDERS else value


# --- SSH private keys -------------------------------------------------------------

#: Only this much of a candidate file is read: enough for every header we parse.
SSH_KEY_READ_LIMIT = 4096
#: At most this many files are looked at per user, and keys reported in total.
SSH_MAX_FILES_PER_USER = 64
SSH_MAX_KEYS = 100
_SKIP_NAMES = {"known_hosts", "known_hosts.old", "authorized_keys", "authorized_keys2", "config"}

# DER-encoded algorithm OIDs as they appear in a PKCS#8 PrivateKeyInfo header.
_PKCS8_OIDS = (
    (bytes.fromhex("06092a864886f70d010101"), "rsa"),
    (bytes.fromhex("06072a8648ce3d0201"), "ecdsa"),
    (bytes.fromhex("06032b6570"), "ed25519"),
    (bytes.fromhex("06032b6571"), "ed448"),
    (bytes.fromhex("06072a8648ce380401"), "dsa"),
)
_PEM_TYPES = {"RSA": "ssh-rsa", "DSA": "ssh-dss", "EC": "ecdsa"}


def _b64_prefix(body: str, nbytes: int) -> bytes:
    """Decode just the first ``nbytes`` (rounded up to a base64 quantum) of ``body``."""
    chars = re.sub(r"[^A-Za-z0-9+/]", "", body)
    take = ((nbytes + 2) // 3) * 4
    chunk = chars[:take]
    chunk = chunk[: len(chunk) - len(chunk) % 4]
    try:
        return base64.b64decode(chunk, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _ssh_string(buf: bytes, offset: int) -> tuple[bytes, int] | None:
    if offset + 4 > len(buf):
        return None
    (length,) = struct.unpack(">I", buf[offset : offset + 4])
    end = offset + 4 + length
    if end > len(buf):
        return None
    return buf[offset + 4 : end], end


def _openssh_header(body: str) -> tuple[str | None, bool | None]:
    """Key type and encrypted flag of an ``openssh-key-v1`` blob (public part only).

    Layout: magic, string ciphername, string kdfname, string kdfoptions,
    uint32 nkeys, string publickey (whose first field is the key type), then the
    private section. Only the first ~128 bytes are decoded - they end before any
    private key bytes - and parsing stops at the key type.
    """
    magic = b"openssh-key-v1\0"
    for budget in (128, 1024):
        blob = _b64_prefix(body, budget)
        if not blob.startswith(magic):
            return None, None
        cipher = _ssh_string(blob, len(magic))
        if cipher is None:
            continue
        encrypted = cipher[0] != b"none"
        kdf = _ssh_string(blob, cipher[1])
        kdfopts = _ssh_string(blob, kdf[1]) if kdf else None
        # Skip uint32 nkeys and the public key blob's length: its type string follows.
        keytype = _ssh_string(blob, kdfopts[1] + 8) if kdfopts else None
        if keytype is not None:
            return keytype[0].decode("ascii", "replace")[:64], encrypted
        if budget == 1024:
            return None, encrypted
    return None, None


def classify_private_key(head: bytes) -> dict[str, Any] | None:
    """``{"type", "format", "encrypted"}`` for a private key file's first bytes, else None.

    Never raises and never returns anything derived from secret key bytes.
    """
    text = head[:SSH_KEY_READ_LIMIT].decode("ascii", "replace").replace("\r\n", "\n")
    stripped = text.lstrip()
    if stripped.startswith("PuTTY-User-Key-File-"):
        first = stripped.split("\n", 1)[0]
        keytype = first.split(":", 1)[1].strip()[:64] if ":" in first else None
        enc = re.search(r"^Encryption:\s*(\S+)", stripped, re.M)
        return {
            "type": keytype or None,
            "format": "putty",
            "encrypted": None if enc is None else enc.group(1) != "none",
        }
    match = re.match(r"-----BEGIN ([A-Z0-9 ]+)-----\n", stripped)
    if not match:
        return None
    label = match.group(1)
    body = stripped[match.end() :].split("-----END", 1)[0]
    if label == "OPENSSH PRIVATE KEY":
        keytype, encrypted = _openssh_header(body)
        return {"type": keytype, "format": "openssh", "encrypted": encrypted}
    if label == "ENCRYPTED PRIVATE KEY":
        return {"type": None, "format": "pkcs8", "encrypted": True}
    if label == "PRIVATE KEY":
        # PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, ... }: the OID
        # sits in the first ~20 bytes, before any key material.
        header = _b64_prefix(body, 24)
        keytype = next((name for oid, name in _PKCS8_OIDS if oid in header), None)
        return {"type": keytype, "format": "pkcs8", "encrypted": False}
    pem = re.fullmatch(r"(RSA|DSA|EC) PRIVATE KEY", label)
    if pem:
        headers = body.split("\n\n", 1)[0] if "\n\n" in body else ""
        encrypted = bool(re.search(r"^Proc-Type:\s*4,\s*ENCRYPTED", headers, re.M))
        return {"type": _PEM_TYPES[pem.group(1)], "format": "pem", "encrypted": encrypted}
    return None


@dataclass(frozen=True)
class LocalUser:
    """A user logged in at the device itself (not over SSH)."""

    name: str
    uid: int | None
    home: str | None
    desktop: str = ""
    graphical: bool = False


def scan_ssh_keys(host: Host, users: Iterable[LocalUser], sep: str = "/") -> dict[str, Any]:
    """Private keys in each user's ``~/.ssh``: path, type, format, encrypted - never contents."""
    keys: list[dict[str, Any]] = []
    scanned: list[str] = []
    for user in users:
        if not user.home:
            continue
        scanned.append(user.name)
        directory = f"{user.home.rstrip('/' + chr(92))}{sep}.ssh"
        st = host.files.stat(directory, follow=False)
        if st is None or stat.S_ISLNK(st.st_mode):
            continue  # no ~/.ssh, or a symlink someone could point at another user's
        if user.uid is not None and str(host.files.root) == "/" and st.st_uid != user.uid:
            continue
        for name in host.files.listdir(directory)[:SSH_MAX_FILES_PER_USER]:
            if name in _SKIP_NAMES or name.endswith((".pub", ".old", ".bak~")):
                continue
            path = f"{directory}{sep}{name}"
            head = host.files.read_bytes(path, SSH_KEY_READ_LIMIT, nofollow=True, owner=user.uid)
            if not head:
                continue
            info = classify_private_key(head)
            if info is None:
                continue
            keys.append({"user": user.name, "path": path, **info})
            if len(keys) >= SSH_MAX_KEYS:
                break
    return {
        "scanned_users": scanned,
        "unencrypted_count": sum(1 for k in keys if k["encrypted"] is False),
        "keys": keys,
    }


# --- browsers ---------------------------------------------------------------------

#: Browser key -> package/app names that carry it, per package manager.
BROWSER_NAMES: Mapping[str, tuple[str, ...]] = {
    "chrome": ("google-chrome-stable", "google-chrome", "Google Chrome"),
    "chromium": ("snap:chromium", "chromium", "chromium-browser", "Chromium"),
    "firefox": ("snap:firefox", "firefox", "firefox-esr", "Firefox", "Mozilla Firefox"),
    "edge": ("microsoft-edge-stable", "Microsoft Edge"),
    "brave": ("brave-browser", "Brave Browser"),
    "safari": ("Safari",),
}


def browsers_from_packages(installed: Mapping[str, str] | None) -> dict[str, str] | None:
    """Browser key -> version for the browsers found among installed packages/apps."""
    if installed is None:
        return None
    found: dict[str, str] = {}
    for key, names in BROWSER_NAMES.items():
        for name in names:
            version = installed.get(name)
            if version is None:
                # Windows display names carry a suffix: "Mozilla Firefox (x64 en-US)".
                version = next((v for n, v in installed.items() if n.startswith(name + " (")), None)
            if version:
                found[key] = version
                break
    return found


def bounded_packages(
    manager: str, items: Iterable[tuple[str, str]], limit: int = 5000
) -> dict[str, Any]:
    """The ``packages`` section from ``(name, version)`` pairs, capped at ``limit``."""
    installed: dict[str, str] = {}
    total = 0
    for name, version in items:
        name = name.strip()[:200]
        if not name:
            continue
        total += 1
        if len(installed) < limit:
            installed[name] = version.strip()[:100]
    return {
        "manager": manager,
        "count": total,
        "truncated": total > len(installed),
        "installed": installed,
    }
