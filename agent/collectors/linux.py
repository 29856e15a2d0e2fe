"""Linux fact collectors: os-release, sysfs, lsblk/dmsetup/zfs, nftables, gsettings, dpkg/rpm.

Disk encryption is the part the field gets wrong (LVM-on-LUKS, LUKS2 and ZFS
native encryption reported as unencrypted), so it is done by walking the block
device tree from every mounted volume down to the disks:

* ``lsblk --json`` gives the whole stack in one process: disk -> part ->
  crypt -> lvm, with mountpoints on whichever layer holds the filesystem;
* a volume is encrypted when any layer under it is a dm-crypt device
  (``TYPE=crypt``) whose cipher is not ``cipher_null``; the kind comes from the
  device-mapper UUID in ``/sys/block/dm-N/dm/uuid`` (``CRYPT-LUKS2-...``,
  ``CRYPT-LUKS1-...``, ``CRYPT-PLAIN-...``), and the cipher from
  ``dmsetup table --target crypt`` when running as root (only the cipher field
  is parsed; the rest of each line is dropped);
* ZFS datasets are mounted by name, not device, so they come from
  ``/proc/self/mounts`` and ``zfs get encryption,keystatus,encryptionroot``;
  a pool whose vdevs sit on dm-crypt (ZFS on LUKS) counts as encrypted too.

Screen lock is read per local console user in that user's context: from the
report of the user's own helper when one is fresh (``agent/user_helper.py``), else
``runuser -u USER -- gsettings`` for GNOME (dconf), the user's own
``~/.config/kscreenlockerrc`` for KDE (opened without following symlinks).
"""

from __future__ import annotations

import configparser
import json
import re
from collections.abc import Iterable
from typing import Any

from agent.collectors.base import (
    Collector,
    CollectorError,
    CommandNotFound,
    Host,
)
from agent.collectors.common import (
    LocalUser,
    bounded_packages,
    clean_dmi,
    collect_security_software,
    collect_uptime,
    scan_ssh_keys,
)

# --- small parsers ---------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of an os-release file, with shell quoting removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value.replace('\\"', '"')
    return out


# --- os, hardware, chip ----------------------------------------------------------


def collect_os(host: Host) -> dict[str, Any]:
    """Distribution and kernel, from /etc/os-release (or /usr/lib/os-release)."""
    text = host.files.read_text("/etc/os-release") or host.files.read_text("/usr/lib/os-release")
    if text is None:
        raise CollectorError("no /etc/os-release")
    rel = parse_os_release(text)
    return {
        "family": "linux",
        "name": rel.get("NAME") or None,
        "version": rel.get("VERSION_ID") or None,
        "build": rel.get("BUILD_ID") or None,
        "kernel": host.kernel or None,
        "distribution": rel.get("ID") or None,
    }


def collect_hardware(host: Host) -> dict[str, Any]:
    """Vendor, model, serial and UUID from DMI (serial and UUID need root).

    Devices without DMI (many ARM boards) fall back to the device tree.
    """

    def dmi(name: str) -> str | None:
        return clean_dmi(host.files.read_text(f"/sys/class/dmi/id/{name}", 4096))

    def devtree(name: str) -> str | None:
        return clean_dmi(host.files.read_text(f"/sys/firmware/devicetree/base/{name}", 4096))

    return {
        "vendor": dmi("sys_vendor") or dmi("board_vendor"),
        "model": dmi("product_name") or devtree("model"),
        "serial": dmi("product_serial") or devtree("serial-number"),
        "hardware_uuid": (dmi("product_uuid") or "").lower() or None,
    }


def collect_security_chip(host: Host) -> dict[str, Any]:
    """Whether a TPM is present (/sys/class/tpm) and its major version."""
    names = [n for n in host.files.listdir("/sys/class/tpm") if re.fullmatch(r"tpm\d+", n)]
    if not names:
        return {"kind": "tpm", "present": False, "version": None}
    major = host.files.read_text(f"/sys/class/tpm/{names[0]}/tpm_version_major", 16)
    version = {"2": "2.0", "1": "1.2"}.get((major or "").strip())
    return {"kind": "tpm", "present": True, "version": version}


# --- users -----------------------------------------------------------------------


def parse_passwd(text: str) -> dict[str, tuple[int, str]]:
    """name -> (uid, home) from /etc/passwd."""
    out: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 6 and parts[2].isdigit():
            out[parts[0]] = (int(parts[2]), parts[5])
    return out


def parse_show_session(text: str) -> list[dict[str, str]]:
    """Blocks of ``Key=Value`` lines from ``loginctl show-session A B ...``."""
    sessions: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current:
                sessions.append(current)
                current = {}
            continue
        key, _, value = line.partition("=")
        current[key.strip()] = value.strip()
    return sessions


_GRAPHICAL = {"x11", "wayland", "mir"}


def local_users(host: Host) -> list[LocalUser]:
    """Users logged in at this machine (not remotely), from systemd-logind.

    Falls back to utmp (psutil) where logind is not running.
    """
    return host.shared("local_users", lambda: _local_users(host))


def _local_users(host: Host) -> list[LocalUser]:
    passwd = parse_passwd(host.files.read_text("/etc/passwd") or "")
    users: dict[str, LocalUser] = {}
    sessions: list[dict[str, str]] | None = None
    try:
        listing = host.runner.run(["loginctl", "list-sessions", "--no-legend"])
        if listing.ok:
            ids = [ln.split()[0] for ln in listing.stdout.splitlines() if ln.split()]
            ids = [i for i in ids if re.fullmatch(r"[A-Za-z0-9]+", i)][:32]
            sessions = []
            if ids:
                props = "Name,Type,Class,Remote,Desktop,State"
                shown = host.runner.run(["loginctl", "show-session", *ids, "-p", props])
                sessions = parse_show_session(shown.check())
    except CommandNotFound:
        sessions = None
    if sessions is not None:
        for s in sessions:
            name = s.get("Name", "")
            if not name or s.get("Class", "user") != "user" or s.get("Remote") == "yes":
                continue
            graphical = s.get("Type", "") in _GRAPHICAL
            uid, home = passwd.get(name, (None, None))
            prev = users.get(name)
            if prev is None or (graphical and not prev.graphical):
                users[name] = LocalUser(name, uid, home, s.get("Desktop", ""), graphical)
        return sorted(users.values(), key=lambda u: u.name)
    if str(host.files.root) != "/":
        return []
    import psutil

    for entry in psutil.users():
        if entry.host not in ("", None, "localhost") and not entry.host.startswith(":"):
            continue  # logged in over the network
        graphical = entry.terminal is not None and entry.terminal.startswith(":")
        uid, home = passwd.get(entry.name, (None, None))
        users.setdefault(entry.name, LocalUser(entry.name, uid, home, "", graphical))
    return sorted(users.values(), key=lambda u: u.name)


def collect_console_users(host: Host) -> list[str]:
    """Names of users logged in at the device."""
    return [u.name for u in local_users(host)]


# --- disk encryption ---------------------------------------------------------------

LSBLK_COLUMNS = "NAME,KNAME,PATH,TYPE,FSTYPE,FSVER,LABEL,MOUNTPOINTS,RM"
LSBLK_LEGACY_COLUMNS = "NAME,KNAME,TYPE,FSTYPE,LABEL,MOUNTPOINT,RM"
BOOT_MOUNTS = {"/boot", "/boot/efi", "/efi", "/boot/firmware"}
_SKIP_TYPES = {"loop", "rom"}
_READONLY_FS = {"squashfs", "iso9660", "udf", "erofs"}
_DM_KINDS = {
    "LUKS2": "luks2",
    "LUKS1": "luks1",
    "LUKS": "luks1",
    "PLAIN": "plain",
    "TCRYPT": "tcrypt",
    "BITLK": "bitlk",
}


def _flag(value: Any) -> bool:
    return value is True or value in ("1", 1, "true")


def _mounts_of(node: dict[str, Any]) -> list[str]:
    points = node.get("mountpoints")
    if points is None:
        points = [node.get("mountpoint")]
    if not isinstance(points, list):
        return []
    return sorted({p for p in points if isinstance(p, str) and p})


def parse_dmsetup_ciphers(text: str) -> dict[str, str]:
    """dm name -> cipher from ``dmsetup table --target crypt``; the key field is ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, table = line.partition(": ")
        fields = table.split()
        if sep and len(fields) >= 4 and fields[2] == "crypt":
            out[name.strip()] = fields[3]
    return out


def parse_zfs_get(text: str) -> dict[str, dict[str, str]]:
    """dataset -> {property: value} from ``zfs get -H -p -o name,property,value``."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            out.setdefault(parts[0], {})[parts[1]] = parts[2]
    return out


def parse_mounts(text: str) -> list[tuple[str, str, str]]:
    """(source, mountpoint, fstype) from /proc/self/mounts, with octal escapes decoded."""

    def unescape(s: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)

    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((unescape(parts[0]), unescape(parts[1]), parts[2]))
    return out


def _crypt_layer(host: Host, node: dict[str, Any], parent: dict[str, Any] | None) -> dict:
    kname = str(node.get("kname") or "")
    uuid = (host.files.read_text(f"/sys/block/{kname}/dm/uuid", 512) or "").strip()
    method = None
    match = re.match(r"CRYPT-([A-Z0-9]+)-", uuid)
    if match:
        method = _DM_KINDS.get(match.group(1), "other")
    elif parent is not None and parent.get("fstype") == "crypto_LUKS":
        method = {"1": "luks1", "2": "luks2"}.get(str(parent.get("fsver") or ""), "luks1")
    return {"name": node.get("name"), "method": method or "other"}


def _role(mounts: list[str], removable: bool) -> str:
    if "[SWAP]" in mounts:
        return "swap"
    if "/" in mounts:
        return "system"
    if mounts and all(m in BOOT_MOUNTS for m in mounts):
        return "boot"
    return "removable" if removable else "data"


def walk_block_tree(host: Host, tree: Any, ciphers: dict[str, str]) -> list[dict[str, Any]]:
    """One volume per mounted block device, each judged by the stack beneath it."""
    if not isinstance(tree, dict) or not isinstance(tree.get("blockdevices"), list):
        raise CollectorError("lsblk printed no blockdevices list")
    found: dict[str, dict[str, Any]] = {}
    stack: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        (n, []) for n in reversed(tree["blockdevices"]) if isinstance(n, dict)
    ]
    while stack:
        node, ancestors = stack.pop()
        if len(ancestors) > 32:
            continue
        chain = [*ancestors, node]
        children = node.get("children")
        if isinstance(children, list):
            stack.extend((c, chain) for c in reversed(children) if isinstance(c, dict))
        mounts = _mounts_of(node)
        if not mounts or node.get("type") in _SKIP_TYPES or node.get("fstype") in _READONLY_FS:
            continue
        if str(node.get("name", "")).startswith("zram"):
            continue  # compressed RAM, not storage
        layers, crypts = [], []
        for index, item in enumerate(chain):
            layers.append(str(item.get("type") or "unknown"))
            if item.get("type") == "crypt":
                layer = _crypt_layer(host, item, chain[index - 1] if index else None)
                layer["cipher"] = ciphers.get(str(item.get("name")))
                crypts.append(layer)
        real = [c for c in crypts if not str(c["cipher"] or "").startswith("cipher_null")]
        best = real[-1] if real else (crypts[-1] if crypts else None)
        volume = {
            "mountpoint": "/" if "/" in mounts else mounts[0],
            "mountpoints": mounts,
            "device": node.get("path") or f"/dev/{node.get('kname') or node.get('name')}",
            "fstype": node.get("fstype"),
            "role": _role(mounts, any(_flag(a.get("rm")) for a in chain)),
            "encrypted": bool(real),
            "method": best["method"] if best else None,
            "cipher": best["cipher"] if best else None,
            "status": "active" if crypts else None,
            "layers": layers,
        }
        key = str(node.get("kname") or node.get("name"))
        if key in found:  # the same device under two parents (RAID): all paths must encrypt
            found[key]["encrypted"] = found[key]["encrypted"] and volume["encrypted"]
        else:
            found[key] = volume
    return list(found.values())


def _zfs_member_encryption(tree: Any, host: Host, pool: str, ciphers: dict[str, str]) -> dict:
    """Whether every vdev of ``pool`` (lsblk zfs_member with that label) sits on dm-crypt."""
    results: list[dict[str, Any]] = []
    stack = [(n, []) for n in tree.get("blockdevices", []) if isinstance(n, dict)]
    while stack:
        node, ancestors = stack.pop()
        chain = [*ancestors, node]
        for child in node.get("children") or []:
            if isinstance(child, dict) and len(chain) < 32:
                stack.append((child, chain))
        if node.get("fstype") == "zfs_member" and node.get("label") == pool:
            crypt = next(
                (
                    _crypt_layer(host, item, chain[i - 1] if i else None)
                    | {"cipher": ciphers.get(str(item.get("name")))}
                    for i, item in reversed(list(enumerate(chain)))
                    if item.get("type") == "crypt"
                ),
                None,
            )
            results.append({"crypt": crypt, "layers": [str(i.get("type")) for i in chain]})
    if results and all(r["crypt"] for r in results):
        return {"encrypted": True, **results[0]}
    return {"encrypted": False, "crypt": None, "layers": results[0]["layers"] if results else []}


def zfs_volumes(
    host: Host, mounts: list[tuple[str, str, str]], tree: Any, ciphers: dict[str, str]
) -> list[dict[str, Any]]:
    """Volumes for mounted ZFS datasets, using ``zfs get`` for native encryption."""
    datasets: dict[str, list[str]] = {}
    for source, mountpoint, fstype in mounts:
        if fstype == "zfs":
            datasets.setdefault(source, []).append(mountpoint)
    if not datasets:
        return []
    names = sorted(datasets)[:256]
    props: dict[str, dict[str, str]] = {}
    error = None
    try:
        result = host.runner.run(
            ["zfs", "get", "-H", "-p", "-o", "name,property,value",
             "encryption,keystatus,encryptionroot", *names]
        )  # fmt: skip
        props = parse_zfs_get(result.check())
    except CollectorError as exc:
        error = exc
    volumes = []
    for name in names:
        mounts_here = sorted(set(datasets[name]))
        p = props.get(name, {})
        encryption = p.get("encryption")
        native = encryption not in (None, "off", "-")
        under = _zfs_member_encryption(tree, host, name.split("/")[0], ciphers)
        if native:
            method, cipher, encrypted = "zfs", encryption, True
        elif under["encrypted"]:
            crypt = under["crypt"]
            method, cipher, encrypted = crypt["method"], crypt["cipher"], True
        else:
            method, cipher = None, None
            encrypted = False if encryption == "off" else None
        volumes.append(
            {
                "mountpoint": "/" if "/" in mounts_here else mounts_here[0],
                "mountpoints": mounts_here,
                "device": name,
                "fstype": "zfs",
                "role": _role(mounts_here, False),
                "encrypted": encrypted,
                "method": method,
                "cipher": cipher,
                "status": p.get("keystatus") if native else ("active" if encrypted else None),
                "layers": [*under["layers"], "zfs"],
            }
        )
    if error is not None and not props:
        for volume in volumes:
            if volume["method"] is None:
                volume["encrypted"] = None  # zfs could not tell us
    return volumes


def summarize_volumes(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """The disk_encryption section: volumes plus the two summary booleans."""
    system = [v for v in volumes if v["role"] == "system"]
    relevant = [v["encrypted"] for v in volumes if v["role"] in ("system", "data", "swap")]
    if any(r is False for r in relevant):
        all_encrypted: bool | None = False
    elif relevant and all(r is True for r in relevant):
        all_encrypted = True
    else:
        all_encrypted = None
    return {
        "system_volume_encrypted": system[0]["encrypted"] if system else None,
        "all_encrypted": all_encrypted,
        "volumes": sorted(volumes, key=lambda v: (v["role"] != "system", v["mountpoint"])),
    }


def _lsblk(host: Host) -> Any:
    result = host.runner.run(["lsblk", "--json", "--output", LSBLK_COLUMNS])
    if not result.ok and "unknown column" in result.stderr:
        result = host.runner.run(["lsblk", "--json", "--output", LSBLK_LEGACY_COLUMNS])
    try:
        return json.loads(result.check())
    except ValueError as exc:
        raise CollectorError("lsblk printed invalid JSON") from exc


def collect_disk_encryption(host: Host) -> dict[str, Any]:
    """Per-volume encryption, walking each mount down the block-device stack."""
    tree = _lsblk(host)
    text = json.dumps(tree)
    ciphers: dict[str, str] = {}
    if '"crypt"' in text:
        try:
            result = host.runner.run(["dmsetup", "table", "--target", "crypt"])
            if result.ok:
                ciphers = parse_dmsetup_ciphers(result.stdout)
        except CollectorError:
            pass  # not root: the cipher stays unknown, encryption is still known
    volumes = walk_block_tree(host, tree, ciphers)
    mounts = parse_mounts(host.files.read_text("/proc/self/mounts") or "")
    volumes.extend(zfs_volumes(host, mounts, tree, ciphers))
    return summarize_volumes(volumes)


# --- firewall ----------------------------------------------------------------------

_VERDICTS_BLOCK = ("drop", "reject")
_NEUTRAL_EXPRS = {"counter", "log", "limit"}


def _rule_verdict(rule: dict[str, Any]) -> tuple[str | None, bool, str | None]:
    """(verdict, unconditional, jump target) of one nft JSON rule."""
    verdict, target, unconditional = None, None, True
    for expr in rule.get("expr") or []:
        if not isinstance(expr, dict):
            continue
        for key, value in expr.items():
            if key in _VERDICTS_BLOCK or key == "accept":
                verdict = key
            elif key in ("jump", "goto") and isinstance(value, dict):
                target = value.get("target")
            elif key not in _NEUTRAL_EXPRS:
                unconditional = False
    return verdict, unconditional, target


def parse_nft_ruleset(data: Any) -> dict[str, Any]:
    """Inbound filtering state from ``nft -j list ruleset``.

    ``filters``: some input-hook chain (or a chain it jumps to) drops or
    rejects packets. ``default_inbound``: "block" when an input base chain's
    policy is drop or it ends with an unconditional drop/reject.
    """
    items = data.get("nftables") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise CollectorError("nft printed no nftables list")
    chains: dict[tuple, dict[str, Any]] = {}
    rules: dict[tuple, list[dict[str, Any]]] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("chain"), dict):
            c = item["chain"]
            chains[(c.get("family"), c.get("table"), c.get("name"))] = c
        elif isinstance(item.get("rule"), dict):
            r = item["rule"]
            rules.setdefault((r.get("family"), r.get("table"), r.get("chain")), []).append(r)
    base = [k for k, c in chains.items() if c.get("hook") == "input" and c.get("type") == "filter"]
    filters, block = False, False
    for key in base:
        chain_rules = rules.get(key, [])
        if chains[key].get("policy") == "drop":
            filters = block = True
        if chain_rules:
            verdict, unconditional, _ = _rule_verdict(chain_rules[-1])
            if verdict in _VERDICTS_BLOCK and unconditional:
                block = True
        seen, todo = set(), [key]
        while todo and not filters:
            current = todo.pop()
            if current in seen or len(seen) > 256:
                continue
            seen.add(current)
            for rule in rules.get(current, []):
                verdict, _, target = _rule_verdict(rule)
                if verdict in _VERDICTS_BLOCK:
                    filters = True
                if target:
                    todo.append((current[0], current[1], target))
    return {
        "filters": filters or block,
        "default_inbound": "block" if block else "allow",
        "base_chains": len(base),
    }


def parse_iptables_input(text: str) -> dict[str, Any]:
    """Inbound filtering state from ``iptables -S INPUT``."""
    block = bool(re.search(r"^-P INPUT (DROP|REJECT)", text, re.M))
    filters = block or bool(re.search(r"^-A INPUT .*-j (DROP|REJECT)", text, re.M))
    return {"filters": filters, "default_inbound": "block" if block else "allow"}


def collect_firewall(host: Host) -> dict[str, Any]:
    """nftables (or iptables) ruleset as root; ufw and firewalld state either way."""
    products: list[dict[str, Any]] = []
    seen_rules = False
    try:
        result = host.runner.run(["nft", "-j", "list", "ruleset"])
        if result.ok:
            state = parse_nft_ruleset(json.loads(result.stdout or '{"nftables": []}'))
            products.append(
                {
                    "name": "nftables",
                    "enabled": state["filters"],
                    "default_inbound": state["default_inbound"],
                }
            )
            seen_rules = True
    except CommandNotFound:
        try:
            result = host.runner.run(["iptables", "-S", "INPUT"])
            if result.ok:
                state = parse_iptables_input(result.stdout)
                products.append(
                    {
                        "name": "iptables",
                        "enabled": state["filters"],
                        "default_inbound": state["default_inbound"],
                    }
                )
                seen_rules = True
        except CommandNotFound:
            pass
    except ValueError as exc:
        raise CollectorError("nft printed invalid JSON") from exc
    ufw_conf = host.files.read_text("/etc/ufw/ufw.conf", 65536)
    if ufw_conf is not None:
        enabled = bool(re.search(r"^\s*ENABLED\s*=\s*yes\s*$", ufw_conf, re.M | re.I))
        products.append({"name": "ufw", "enabled": enabled, "default_inbound": None})
    names = {n.lower() for n in host.process_names()}
    if "firewalld" in names or host.files.exists("/usr/sbin/firewalld"):
        running = "firewalld" in names
        products.append({"name": "firewalld", "enabled": running, "default_inbound": None})
    enabled_flags = [p["enabled"] for p in products]
    if any(enabled_flags):
        enabled: bool | None = True
    elif seen_rules:
        enabled = False
    else:
        enabled = None  # could not read the ruleset (not root) and no manager says yes
    inbound = [p["default_inbound"] for p in products if p["default_inbound"]]
    default = "block" if "block" in inbound else ("allow" if inbound and seen_rules else None)
    return {"enabled": enabled, "default_inbound": default, "products": products}


# --- screen lock -------------------------------------------------------------------

GNOME_SCHEMAS = (
    "org.gnome.desktop.screensaver",
    "org.gnome.desktop.session",
    "org.gnome.desktop.lockdown",
)
_GSETTINGS_SCRIPT = 'for s in "$@"; do gsettings list-recursively "$s"; done'


def parse_gsettings(text: str) -> dict[str, Any]:
    """``schema key value`` lines of ``gsettings list-recursively`` into Python values."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        schema, key, raw = parts
        raw = raw.strip()
        value: Any = raw
        if raw in ("true", "false"):
            value = raw == "true"
        else:
            number = re.fullmatch(r"(?:u?int(?:32|64)|uint16|int16|byte)?\s*(-?\d+)", raw)
            if number:
                value = int(number.group(1))
        out[f"{schema}.{key}"] = value
    return out


def gnome_screen_lock(values: dict[str, Any]) -> dict[str, Any]:
    """Effective GNOME lock settings: locks ``idle-delay + lock-delay`` after idle."""
    enabled = values.get("org.gnome.desktop.screensaver.lock-enabled")
    if values.get("org.gnome.desktop.lockdown.disable-lock-screen") is True:
        enabled = False
    idle = values.get("org.gnome.desktop.session.idle-delay")
    delay = values.get("org.gnome.desktop.screensaver.lock-delay")
    idle = idle if isinstance(idle, int) else None
    delay = delay if isinstance(delay, int) else None
    if idle == 0:  # never goes idle, so never locks on its own
        enabled = False
    timeout = idle + (delay or 0) if enabled and idle else None
    return {
        "source": "gsettings",
        "enabled": enabled if isinstance(enabled, bool) else None,
        "timeout_seconds": timeout,
        "idle_seconds": idle,
        "delay_seconds": delay,
    }


def kde_screen_lock(text: str | None) -> dict[str, Any]:
    """KDE ``kscreenlockerrc`` ``[Daemon]``: Autolock (on), Timeout min (5), LockGrace s (5)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text or "")
    except configparser.Error:
        pass
    daemon = parser["Daemon"] if parser.has_section("Daemon") else {}

    def number(key: str, default: int) -> int | None:
        raw = daemon.get(key)
        if raw is None:
            return default
        return int(raw) if raw.strip().lstrip("-").isdigit() else None

    enabled = str(daemon.get("Autolock", "true")).strip().lower() != "false"
    minutes = number("Timeout", 5)
    grace = number("LockGrace", 5)
    idle = minutes * 60 if minutes is not None else None
    if idle == 0:
        enabled = False
    return {
        "source": "kscreenlockerrc",
        "enabled": enabled,
        "timeout_seconds": idle + (grace or 0) if enabled and idle else None,
        "idle_seconds": idle,
        "delay_seconds": grace,
    }


def _user_screen_lock(host: Host, user: LocalUser) -> dict[str, Any]:
    desktop = user.desktop.upper()
    kde_file = f"{user.home}/.config/kscreenlockerrc" if user.home else None
    if (
        "KDE" in desktop
        or "PLASMA" in desktop
        or (not desktop and kde_file and host.files.exists(kde_file))
    ):
        text = (
            host.files.read_bytes(kde_file, 65536, nofollow=True, owner=user.uid)
            if kde_file
            else None
        )
        if text is None:
            text = host.files.read_bytes("/etc/xdg/kscreenlockerrc", 65536)
        return {"user": user.name, **kde_screen_lock((text or b"").decode("utf-8", "replace"))}
    if "GNOME" in desktop or "UNITY" in desktop or "BUDGIE" in desktop or not desktop:
        if user.uid is None:
            raise CollectorError(f"no uid for {user.name}")
        cmd = ["sh", "-c", _GSETTINGS_SCRIPT, "sh", *GNOME_SCHEMAS]
        env = ["env", f"XDG_RUNTIME_DIR=/run/user/{user.uid}"]
        if host.euid == user.uid:
            argv = [*env, *cmd]
        elif host.is_root:
            argv = ["runuser", "-u", user.name, "--", *env, *cmd]
        else:
            raise CollectorError(f"cannot read {user.name}'s settings without root")
        values = parse_gsettings(host.runner.run(argv).check())
        if "org.gnome.desktop.screensaver.lock-enabled" not in values:
            raise CollectorError("gsettings has no org.gnome.desktop.screensaver schema")
        return {"user": user.name, **gnome_screen_lock(values)}
    return {
        "user": user.name,
        "source": None,
        "enabled": None,
        "timeout_seconds": None,
        "idle_seconds": None,
        "delay_seconds": None,
    }


def summarize_screen_lock(users: list[dict[str, Any]]) -> dict[str, Any]:
    """all_enabled / max_timeout_seconds over the console users (None if any is unknown)."""
    flags = [u["enabled"] for u in users]
    if not users or any(f is None for f in flags):
        all_enabled = False if any(f is False for f in flags) else None
    else:
        all_enabled = all(flags)
    timeouts = [u["timeout_seconds"] for u in users]
    known = users and all_enabled and all(t is not None for t in timeouts)
    return {
        "all_enabled": all_enabled,
        "max_timeout_seconds": max(timeouts) if known else None,
        "users": users,
    }


def collect_screen_lock(host: Host) -> dict[str, Any]:
    """Screen lock of each graphical console user, read in that user's context."""
    users = []
    for user in local_users(host):
        if not user.graphical:
            continue
        reported = host.user_reports(user.uid) if host.user_reports and user.uid else None
        if reported is not None:  # read in the user's own session by their helper
            users.append({"user": user.name, **reported})
            continue
        try:
            users.append(_user_screen_lock(host, user))
        except CollectorError:
            users.append(
                {
                    "user": user.name,
                    "source": None,
                    "enabled": None,
                    "timeout_seconds": None,
                    "idle_seconds": None,
                    "delay_seconds": None,
                }
            )
    return summarize_screen_lock(users)


# --- automatic updates ---------------------------------------------------------------


def parse_apt_config(text: str) -> dict[str, str]:
    """``Key "value";`` lines of ``apt-config dump``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r'^(\S+)\s+"(.*)";$', line.strip())
        if match:
            out[match.group(1)] = match.group(2)
    return out


def _timer_enabled(host: Host, name: str) -> bool:
    return any(
        host.files.lexists(f"{d}/timers.target.wants/{name}")
        for d in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
    )


def _periodic_on(value: str | None) -> bool:
    return value is not None and value.strip() not in ("", "0", "false", "never")


def collect_auto_updates(host: Host) -> dict[str, Any]:
    """unattended-upgrades (Debian, Ubuntu) or dnf-automatic (Fedora, RHEL)."""
    if host.which("apt-config"):
        conf = parse_apt_config(host.runner.run(["apt-config", "dump"]).check())
        installed = host.files.exists("/usr/bin/unattended-upgrade")
        check = _periodic_on(conf.get("APT::Periodic::Update-Package-Lists"))
        install = (
            installed
            and _periodic_on(conf.get("APT::Periodic::Unattended-Upgrade"))
            and _timer_enabled(host, "apt-daily-upgrade.timer")
        )
        return {
            "enabled": install,
            "mechanism": "unattended-upgrades" if installed else None,
            "check_enabled": check and _timer_enabled(host, "apt-daily.timer"),
            "install_enabled": install,
        }
    if host.which("dnf") or host.files.exists("/etc/dnf"):
        conf = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            conf.read_string(host.files.read_text("/etc/dnf/automatic.conf", 65536) or "")
        except configparser.Error:
            pass
        apply = conf.get("commands", "apply_updates", fallback="no").strip().lower() == "yes"
        timers = {
            t: _timer_enabled(host, t)
            for t in (
                "dnf-automatic.timer",
                "dnf-automatic-install.timer",
                "dnf5-automatic.timer",
            )
        }
        check = any(timers.values())
        install = timers["dnf-automatic-install.timer"] or (check and apply)
        return {
            "enabled": install,
            "mechanism": "dnf-automatic"
            if check or host.files.exists("/etc/dnf/automatic.conf")
            else None,
            "check_enabled": check,
            "install_enabled": install,
        }
    return {"enabled": None, "mechanism": None, "check_enabled": None, "install_enabled": None}


# --- secure boot, integrity, management ----------------------------------------------

EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def collect_secure_boot(host: Host) -> dict[str, Any]:
    """UEFI SecureBoot variable (efivarfs), with ``mokutil --sb-state`` as a fallback."""
    if not host.files.is_dir("/sys/firmware/efi"):
        return {"supported": False, "enabled": False}  # legacy BIOS boot
    data = host.files.read_bytes(f"/sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL}", 64)
    if data is not None and len(data) >= 5:
        return {"supported": True, "enabled": data[4] == 1}
    try:
        out = host.runner.run(["mokutil", "--sb-state"])
        text = (out.stdout + out.stderr).lower()
        if "secureboot enabled" in text:
            return {"supported": True, "enabled": True}
        if "secureboot disabled" in text:
            return {"supported": True, "enabled": False}
    except CollectorError:
        pass
    if host.files.is_dir("/sys/firmware/efi/efivars") and host.files.listdir(
        "/sys/firmware/efi/efivars"
    ):
        return {"supported": False, "enabled": False}  # UEFI without Secure Boot
    return {"supported": True, "enabled": None}


def collect_system_integrity(host: Host) -> dict[str, Any]:
    """SIP and Gatekeeper are macOS features: null on Linux."""
    return {"sip_enabled": None, "gatekeeper_enabled": None}


def collect_management(host: Host) -> dict[str, Any]:
    """Domain join through sssd (AD/IPA) or winbind; Linux has no standard MDM."""
    domain, joined = None, False
    sssd = host.files.read_text("/etc/sssd/sssd.conf", 262144)
    if sssd is not None:
        conf = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            conf.read_string(sssd)
            domains = [d.strip() for d in conf.get("sssd", "domains", fallback="").split(",")]
            for name in filter(None, domains):
                provider = conf.get(f"domain/{name}", "id_provider", fallback="")
                if provider in ("ad", "ipa", "ldap"):
                    domain, joined = name, True
                    break
        except configparser.Error:
            pass
    elif host.files.exists("/etc/sssd/sssd.conf"):
        joined = None  # exists but unreadable without root
    if not joined and "winbindd" in {n.lower() for n in host.process_names()}:
        smb = host.files.read_text("/etc/samba/smb.conf", 262144) or ""
        realm = re.search(r"^\s*realm\s*=\s*(\S+)", smb, re.M | re.I)
        if re.search(r"^\s*security\s*=\s*ads", smb, re.M | re.I):
            joined, domain = True, realm.group(1).lower() if realm else None
    return {
        "mdm_enrolled": None,
        "mdm_provider": None,
        "domain_joined": joined,
        "domain": domain,
        "azure_ad_joined": None,
    }


# --- packages --------------------------------------------------------------------------

MAX_PACKAGES = 5000


def parse_dpkg(text: str) -> Iterable[tuple[str, str]]:
    """Installed (``ii``) packages from dpkg-query's ``status\\tname\\tversion`` lines."""
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].strip() in ("ii", "hi"):
            yield parts[1], parts[2]


def parse_tab_pairs(text: str) -> Iterable[tuple[str, str]]:
    """``name<TAB>version`` (rpm) or ``name version`` (pacman) lines."""
    for line in text.splitlines():
        parts = line.split("\t") if "\t" in line else line.split(" ", 1)
        if len(parts) == 2:
            yield parts[0], parts[1]


def _snaps(host: Host) -> Iterable[tuple[str, str]]:
    for name in host.files.listdir("/snap")[:500]:
        meta = host.files.read_text(f"/snap/{name}/current/meta/snap.yaml", 65536)
        if meta:
            version = re.search(r"^version:\s*'?\"?([^'\"\n]+)", meta, re.M)
            if version:
                yield f"snap:{name}", version.group(1).strip()


def collect_packages(host: Host) -> dict[str, Any]:
    """Installed packages from dpkg, rpm or pacman, plus snaps; at most 5000 entries."""
    for manager, argv, parse in (
        ("dpkg", ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"],
         parse_dpkg),
        ("rpm", ["rpm", "-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"], parse_tab_pairs),
        ("pacman", ["pacman", "-Q"], parse_tab_pairs),
    ):  # fmt: skip
        if host.which(argv[0]):
            items = list(parse(host.runner.run(argv, timeout=5.0).check()))
            return bounded_packages(manager, [*items, *_snaps(host)], MAX_PACKAGES)
    snaps = list(_snaps(host))
    if snaps:
        return bounded_packages("snap", snaps, MAX_PACKAGES)
    raise CollectorError("no dpkg, rpm or pacman")


def collect_ssh_keys(host: Host) -> dict[str, Any]:
    """Private keys without a passphrase in local users' ~/.ssh."""
    return scan_ssh_keys(host, local_users(host))


def collectors() -> list[Collector]:
    """The Linux collectors, in fact-document order."""
    return [
        Collector("os", collect_os),
        Collector("hardware", collect_hardware),
        Collector("security_chip", collect_security_chip),
        Collector("console_users", collect_console_users),
        Collector("disk_encryption", collect_disk_encryption),
        Collector("firewall", collect_firewall),
        Collector("screen_lock", collect_screen_lock),
        Collector("auto_updates", collect_auto_updates),
        Collector("secure_boot", collect_secure_boot),
        Collector("system_integrity", collect_system_integrity),
        Collector("management", collect_management),
        Collector("security_software", collect_security_software),
        Collector("packages", collect_packages),
        Collector("ssh_keys", collect_ssh_keys),
        Collector("uptime_seconds", collect_uptime),
    ]
