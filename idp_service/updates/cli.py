"""``devicetrust updates``: sign, publish, pin and stage agent updates.

Two places, two roles. On an **admin machine** (ideally offline), ``keygen``
makes the update signing key and ``sign`` signs a manifest; neither touches the
service's database. On the **service**, ``trust-key`` stores the public half,
``publish`` checks a signed manifest against it and serves it, ``show`` and
``history`` list what is published, ``add-artifact`` lets the service serve a
build itself. ``pin``, ``unpin`` and ``stage`` re-sign the published manifest
with another rollout, so they need the signing key (``--key``) where they run.
Every change is audited (actor ``cli``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

ACTOR = "cli"

_key_option = click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DEVICETRUST_UPDATE_SIGNING_KEY",
    required=True,
    help="The update signing key file (from `updates keygen`; env DEVICETRUST_UPDATE_SIGNING_KEY).",
)
_expires_option = click.option(
    "--expires",
    "expires",
    default="30d",
    show_default=True,
    help="How long agents accept the manifest (at most 366 days): 30d, 12h, 90 days.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _lifetime(text: str) -> dt.timedelta:
    from trust_protocol.durations import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None
    if not dt.timedelta(0) < value <= dt.timedelta(days=366):
        raise click.BadParameter("between 1 second and 366 days", param_hint="--expires")
    return value


def _fail(exc: Exception) -> click.ClickException:
    code = getattr(exc, "code", "error")
    hint = getattr(exc, "hint", "")
    message = getattr(exc, "message", str(exc))
    return click.ClickException(f"{message} ({code})" + (f"\n{hint}" if hint else ""))


def _with_db(action: Callable[[Any, Any], Any]) -> Any:
    """Run ``action(db, settings)`` against the service's database."""
    from idp_service.platform import audit_chain
    from idp_service.platform.config import Settings
    from idp_service.platform.db import Database
    from idp_service.updates.service import UpdateError

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    audit_chain.configure(audit_chain.load_key(settings.data_dir), data_dir=settings.data_dir)
    db = Database(settings.database_url)
    try:
        return action(db, settings)
    except UpdateError as exc:
        raise _fail(exc) from None
    finally:
        db.dispose()


def _signing_key(path: Path):  # noqa: ANN202 - SigningKey
    from idp_service.updates.service import UpdateError, load_key_file

    try:
        return load_key_file(path)
    except UpdateError as exc:
        raise _fail(exc) from None


def _describe(summary: dict[str, Any]) -> str:
    rollout = "pinned, " if summary["pinned"] else ""
    lines = [
        f"serial {summary['serial']} ({rollout}{summary['percent']} % of devices), "
        f"expires {summary['expires_at']}",
    ]
    for platform, a in summary["artifacts"].items():
        lines.append(f"  {platform:20} {a['version']:12} {a['size']:>10} B  {a['url']}")
    return "\n".join(lines)


@click.group("updates")
def updates() -> None:
    """Signed agent self-update: keys, manifests, pins and staged rollouts (docs/updates.md)."""


@updates.command("keygen")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the new signing key (created 0600; never overwritten).",
)
@_json_option
def keygen(out: Path, as_json: bool) -> None:
    """Create an update signing key on this (admin) machine; prints its public half."""
    from trust_protocol.challenge import key_id
    from trust_protocol.encoding import b64e

    if out.exists():
        raise click.ClickException(f"{out} exists; choose another --out (keys are never replaced)")
    from idp_service.updates.service import generate_key_file

    public = generate_key_file(out)
    data = {"key_file": str(out), "public_key": b64e(bytes(public)), "kid": key_id(public)}
    _emit(
        data,
        as_json,
        f"wrote {out} (keep it offline; back it up)\n"
        f"public key: {data['public_key']}  (kid {data['kid']})\n"
        f"On the service run: devicetrust updates trust-key -- {data['public_key']}\n"
        "Pin it on devices with the agent's update_key setting.",
    )


@updates.command("trust-key")
@click.argument("public_key")
@_json_option
def trust_key(public_key: str, as_json: bool) -> None:
    """Make PUBLIC_KEY the update key this service checks manifests against.

    Put ``--`` before the key: a base64url key may begin with ``-``.
    """
    from idp_service.updates import service

    kid = _with_db(lambda db, _s: service.trust_key(db, public_key, actor=ACTOR))
    _emit({"kid": kid}, as_json, f"the service now trusts update key {kid}")


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise click.BadParameter(f"expected PLATFORM=VALUE, got {value!r}", param_hint=option)
        if name in out:
            raise click.BadParameter(f"{name} given twice", param_hint=option)
        out[name] = rest
    return out


@updates.command("sign")
@_key_option
@click.option("--version", "version", required=True, help="The agent version of these builds.")
@click.option(
    "--artifact",
    "artifacts",
    multiple=True,
    required=True,
    metavar="PLATFORM=FILE",
    help="A build and its platform (repeatable): linux-x86_64-deb=agent_0.2.0_amd64.deb",
)
@click.option(
    "--url",
    "urls",
    multiple=True,
    metavar="PLATFORM=URL",
    help="Where agents download that platform's build (repeatable; else --base-url/FILE-NAME).",
)
@click.option("--base-url", default=None, help="Download base: URL/FILE-NAME per artifact.")
@click.option("--percent", type=click.IntRange(0, 100), default=100, show_default=True)
@click.option("--pin", is_flag=True, help="Install this version even where it is a downgrade.")
@_expires_option
@click.option("--serial", type=click.IntRange(1, 2**53 - 1), default=None, help="Default: now.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the signed manifest (then: devicetrust updates publish FILE).",
)
@_json_option
def sign(
    key_file: Path,
    version: str,
    artifacts: tuple[str, ...],
    urls: tuple[str, ...],
    base_url: str | None,
    percent: int,
    pin: bool,
    expires: str,
    serial: int | None,
    out: Path,
    as_json: bool,
) -> None:
    """Sign a manifest for one version's builds (runs offline: no database)."""
    from idp_service.updates import service
    from trust_protocol import update_manifest as um

    files = _pairs(artifacts, "--artifact")
    given = _pairs(urls, "--url")
    unknown = set(given) - set(files)
    if unknown:
        raise click.BadParameter(f"no --artifact for {sorted(unknown)}", param_hint="--url")
    entries: dict[str, um.Artifact] = {}
    for platform, name in files.items():
        path = Path(name)
        if not path.is_file():
            raise click.BadParameter(f"{path} is not a file", param_hint="--artifact")
        url = given.get(platform)
        if url is None:
            if base_url is None:
                raise click.BadParameter(
                    f"give --url {platform}=URL or --base-url", param_hint="--url"
                )
            url = base_url.rstrip("/") + "/" + path.name
        sha256, size = service.file_digest(path)
        entries[platform] = um.Artifact(version=version, url=url, sha256=sha256, size=size)
    key = _signing_key(key_file)
    now = time.time()
    try:
        signed = service.build_manifest(
            key,
            entries,
            serial=serial or service.new_serial(None, now),
            pinned=pin,
            percent=percent,
            lifetime=_lifetime(expires),
            now=now,
        )
    except service.UpdateError as exc:
        raise _fail(exc) from None
    out.write_bytes(signed.document() + b"\n")
    summary = _summary(signed)
    _emit(summary, as_json, f"wrote {out}\n" + _describe(summary))


def _summary(signed: Any) -> dict[str, Any]:
    m = signed.manifest
    iso = lambda ts: dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()  # noqa: E731
    return {
        "serial": m.serial,
        "kid": m.kid,
        "digest": signed.digest,
        "issued_at": iso(m.issued_at),
        "expires_at": iso(m.expires_at),
        "pinned": m.rollout.pinned,
        "percent": m.rollout.percent,
        "artifacts": {p: a.to_json() for p, a in sorted(m.artifacts.items())},
    }


@updates.command("publish")
@click.argument("manifest_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_json_option
def publish(manifest_file: Path, as_json: bool) -> None:
    """Check a signed manifest against the trusted key and serve it to agents."""
    from idp_service.updates import service

    raw = manifest_file.read_bytes()
    if len(raw) > 64 * 1024:
        raise click.ClickException(f"{manifest_file} is too large to be a manifest")
    published = _with_db(lambda db, _s: service.publish(db, raw.strip(), actor=ACTOR))
    summary = published.summary()
    _emit(summary, as_json, "published " + _describe(summary))


def _republish(change: str, **derive: Any) -> Callable[[Any, Any], Any]:
    from idp_service.updates import service

    key_file: Path = derive.pop("key_file")
    key = _signing_key(key_file)

    def action(db: Any, _settings: Any) -> Any:
        signed = service.derive(db, key, **derive)
        return service.publish(db, signed.document(), actor=ACTOR, change=change)

    return action


@updates.command("pin")
@click.argument("version")
@_key_option
@_expires_option
@_json_option
def pin(version: str, key_file: Path, expires: str, as_json: bool) -> None:
    """Pin every device to VERSION (one published before), downgrading where needed."""
    action = _republish(
        "pin", key_file=key_file, version=version, pinned=True, lifetime=_lifetime(expires)
    )
    summary = _with_db(action).summary()
    _emit(summary, as_json, f"pinned {version}: " + _describe(summary))


@updates.command("unpin")
@_key_option
@_expires_option
@_json_option
def unpin(key_file: Path, expires: str, as_json: bool) -> None:
    """Lift the pin: devices newer than the published version keep theirs."""
    action = _republish("unpin", key_file=key_file, pinned=False, lifetime=_lifetime(expires))
    summary = _with_db(action).summary()
    _emit(summary, as_json, "unpinned: " + _describe(summary))


@updates.command("stage")
@click.argument("percent", type=click.IntRange(0, 100))
@_key_option
@_expires_option
@_json_option
def stage(percent: int, key_file: Path, expires: str, as_json: bool) -> None:
    """Offer the current version to PERCENT % of devices (0 halts a rollout)."""
    action = _republish("stage", key_file=key_file, percent=percent, lifetime=_lifetime(expires))
    summary = _with_db(action).summary()
    _emit(summary, as_json, f"staged to {percent} %: " + _describe(summary))


@updates.command("show")
@click.option("--document", is_flag=True, help="Print the signed document as served.")
@_json_option
def show(document: bool, as_json: bool) -> None:
    """Show the manifest agents get now, and the trusted update key."""
    from idp_service.updates import service
    from trust_protocol.challenge import key_id

    def action(db: Any, _settings: Any) -> Any:
        return service.current(db), service.trusted_key(db)

    published, key = _with_db(action)
    if document:
        if published is None:
            raise click.ClickException("nothing is published yet")
        click.echo(published.document.decode())
        return
    data: dict[str, Any] = {"trusted_kid": key_id(key) if key else None}
    data["current"] = published.summary() if published else None
    text = f"trusted update key: {data['trusted_kid'] or 'none (run updates trust-key)'}\n"
    text += _describe(data["current"]) if published else "nothing is published yet"
    _emit(data, as_json, text)


@updates.command("history")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@_json_option
def history(limit: int, as_json: bool) -> None:
    """List published manifests, newest first."""
    from idp_service.updates import service

    rows = [p.summary() for p in _with_db(lambda db, _s: service.history(db, limit))]
    _emit(rows, as_json, "\n".join(_describe(r) for r in rows) or "nothing is published yet")


@updates.command("add-artifact")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_json_option
def add_artifact(file: Path, as_json: bool) -> None:
    """Let the service serve FILE itself at /agent/v1/update-artifacts/NAME."""
    from idp_service.updates import service

    def action(db: Any, settings: Any) -> dict[str, Any]:
        info = service.add_artifact(db, settings.data_dir, file, actor=ACTOR)
        info["url"] = settings.public_url.rstrip("/") + "/agent/v1/update-artifacts/" + info["name"]
        return info

    info = _with_db(action)
    _emit(info, as_json, f"serving {info['name']} at {info['url']}\nsha256 {info['sha256']}")
