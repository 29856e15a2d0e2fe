"""The ``devicetrust`` command: run, migrate and administer the service.

Every command that prints data takes ``--json``. Each surface's own command
group (``sp``, ``keys``, ``checks``, ``api-token``, ``scim-token``, ``policy``,
``webhook``) is added below ``cli``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator

import click

from idp_service.devices import queries as device_queries
from idp_service.devices.policy_cli import policy
from idp_service.oidc.cli import oidc_client, oidc_key
from idp_service.platform.cli_support import database as _db
from idp_service.platform.cli_support import settings as _settings
from idp_service.saml.cli import keys_group, sp_group
from idp_service.tokens_cli import api_token, scim_token
from idp_service.webhooks.cli import webhook
from posture_checks.cli import checks
from trust_protocol.cli_output import emit as _emit
from trust_protocol.durations import format_duration


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="devicetrust", message="devicetrust %(version)s")
def cli() -> None:
    """devicetrust: a SAML identity provider that trusts devices, not just passwords.

    Configuration comes from DEVICETRUST_* environment variables, and the TOML file that
    DEVICETRUST_CONFIG (or serve --config) names (see docs/deploy.md); by default the
    database is SQLite in your per-user data directory.
    """
    from idp_service.webhooks import outbox

    outbox.subscribe_to_audit()  # every command's audited decisions enqueue webhook events


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A TOML settings file (DEVICETRUST_CONFIG); environment variables override it.",
)
def migrate(config_file: str | None) -> None:
    """Create or upgrade the database schema to the newest version."""
    from idp_service.platform.migrate import upgrade

    if config_file:
        os.environ["DEVICETRUST_CONFIG"] = config_file
    settings = _settings()
    if settings.database_url.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade(settings.database_url)
    click.echo(f"database is up to date ({_redact(settings.database_url)})")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _use_config(path: str | None) -> None:
    """``--config FILE``: the TOML file to read (the environment still overrides it)."""
    if path:
        os.environ["DEVICETRUST_CONFIG"] = path


CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A TOML settings file (DEVICETRUST_CONFIG); environment variables override it.",
)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to bind.")
@click.option("--workers", default=1, show_default=True, type=int, help="gunicorn workers.")
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=int,
    envvar="DEVICETRUST_THREADS",
    help="Threads per gunicorn worker (gthread).",
)
@click.option("--dev", is_flag=True, help="Use the single-process development server.")
@CONFIG_OPTION
def serve(
    host: str, port: int, workers: int, threads: int, dev: bool, config_file: str | None
) -> None:
    """Run the HTTP service (gunicorn; --dev for Werkzeug's server)."""
    from idp_service.app import create_app
    from idp_service.platform import metrics

    _use_config(config_file)
    settings = _settings()  # refuse a bad configuration before binding, with a clear message

    if dev:
        if settings.metrics_listen:
            _metrics_listener(settings.metrics_listen)
        app = create_app(background=True)
        app.run(host=host, port=port, threaded=True, use_reloader=False)
        return
    from gunicorn.app.base import BaseApplication

    from idp_service.web import bodies

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 5)
            self.cfg.set("accesslog", None)
            # gunicorn's control socket is one fixed path per user: a second
            # service on the host (a replica, a test) would fight over it.
            self.cfg.set("control_socket_disable", True)
            # Lets a refused, unread request body close its connection (idp_service/web/bodies.py).
            self.cfg.set("pre_request", bodies.gunicorn_pre_request)
            self.cfg.set("child_exit", lambda _arbiter, worker: metrics.process_exited(worker.pid))
            if settings.metrics_listen:
                self.cfg.set(
                    "when_ready", lambda _arbiter: _metrics_listener(settings.metrics_listen)
                )

        def load(self):  # noqa: ANN202
            return create_app(background=True)

    with _worker_metrics():
        _Server().run()


@contextlib.contextmanager
def _worker_metrics() -> Iterator[None]:
    """Every worker process writes its metrics to files in one directory; /metrics merges
    them (idp_service/platform/metrics.py). A fresh directory per start (unless
    ``PROMETHEUS_MULTIPROC_DIR`` names one), removed at exit."""
    import shutil
    import tempfile

    from idp_service.platform import metrics

    own_dir = metrics.multiprocess_dir() is None
    if own_dir:
        metrics.use_multiprocess(tempfile.mkdtemp(prefix="devicetrust-metrics-"))
    try:
        yield
    finally:
        directory = metrics.multiprocess_dir()
        if own_dir and directory:
            shutil.rmtree(directory, ignore_errors=True)


@cli.command("serve-ingest")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8001, show_default=True, type=int, help="Port to bind.")
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option(
    "--threads",
    default=None,
    type=int,
    envvar="DEVICETRUST_THREADS",
    help="Threads per worker that run requests [default: 2 x cores + 1, at most 8].",
)
@CONFIG_OPTION
def serve_ingest(
    host: str, port: int, workers: int, threads: int | None, config_file: str | None
) -> None:
    """Run the report ingest tier: the same service, on granian, for agents' reports.

    Put it behind your proxy for POST /agent/v2/report (docs/deploy.md, "The ingest
    tier"); `devicetrust serve` keeps every other route and runs the periodic jobs.
    It answers any route the same way, so a misrouted request is still served.
    """
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    _use_config(config_file)
    settings = _settings()  # refuse a bad configuration before binding, with a clear message
    with _worker_metrics():
        if settings.metrics_listen:
            _metrics_listener(settings.metrics_listen)
        Granian(
            "idp_service.app:create_ingest_app",
            address=host,
            port=port,
            interface=Interfaces.WSGI,
            workers=workers,
            blocking_threads=threads or min(8, 2 * (os.cpu_count() or 1) + 1),
            factory=True,
            log_level=LogLevels.warning,
            respawn_failed_workers=True,
            process_name="devicetrust-ingest",
        ).serve()


def _metrics_listener(listen: str) -> None:
    """Serve /metrics on ``host:port`` from this process (gunicorn's master), in a thread."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from idp_service.platform import metrics

    host, _, port = listen.rpartition(":")
    directory = metrics.multiprocess_dir()
    if directory is None:
        start_http_server(int(port), addr=host.strip("[]"))
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    start_http_server(int(port), addr=host.strip("[]"), registry=registry)


@cli.group()
def users() -> None:
    """Users (normally provisioned by SCIM; these commands are for small set-ups)."""


@users.command("add")
@click.argument("email")
@click.option("--name", "display_name", help="Display name.")
@click.option("--json", "as_json", is_flag=True, help="Print the user as JSON.")
def users_add(email: str, display_name: str | None, as_json: bool) -> None:
    """Create a user whose userName is EMAIL."""
    from idp_service.directory import users as users_mod

    with _db().session() as session:
        user = users_mod.create(session, email, display_name=display_name, actor="cli")
        data = users_mod.to_json(user)
    _emit(data, as_json, f"created user {data['user_name']} ({data['id']})")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_list(as_json: bool) -> None:
    """List users."""
    from sqlalchemy import select

    from idp_service.directory import users as users_mod
    from idp_service.platform.models import User

    with _db().session() as session:
        rows = [
            users_mod.to_json(u) for u in session.scalars(select(User).order_by(User.user_name))
        ]
    lines = [
        f"{u['user_name']:40} {'active' if u['active'] else 'inactive':8} {u['id']}" for u in rows
    ]
    _emit(rows, as_json, "\n".join(lines) or "no users")


@cli.group("enroll-code")
def enroll_code() -> None:
    """One-time codes that bind a new device to a user."""


@enroll_code.command("create")
@click.option("--user", "email", required=True, help="The user the device will belong to.")
@click.option("--create-user", is_flag=True, help="Create the user first if it does not exist yet.")
@click.option("--ttl", default=None, type=int, help="Lifetime in seconds (default 24 h).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def enroll_code_create(email: str, create_user: bool, ttl: int | None, as_json: bool) -> None:
    """Make a one-time enrollment code for USER (shown once; it is stored hashed)."""
    from idp_service.devices import enroll
    from idp_service.directory import users as users_mod
    from idp_service.platform.errors import ServiceError

    settings = _settings()
    with _db().session() as session:
        user = users_mod.find(session, email)
        if user is not None and create_user and user.user_name != email.strip():
            # Another spelling of an existing name (Unicode form, case, look-alike letters):
            # never a second account, and no silent switch to the existing one either.
            raise click.ClickException(
                f"{email!r} is the same name as existing user {user.user_name!r}"
                f"{' (managed by SCIM)' if user.scim_resource is not None else ''}: names are"
                " compared after Unicode normalisation and case folding. Pass --user with the"
                " existing user's name, without --create-user."
            )
        if user is None:
            if not create_user:
                raise click.ClickException(
                    f"no user {email!r}. Provision it by SCIM, or pass --create-user."
                )
            try:
                user = users_mod.create(session, email, actor="cli")
            except ServiceError as exc:
                raise click.ClickException(f"{exc.code}: {exc.message}") from None
        code, row = enroll.create_code(
            session, user, ttl_seconds=ttl or settings.enroll_code_ttl, created_by="cli"
        )
        data = {"code": code, "user": user.user_name, "expires_at": row.expires_at.isoformat()}
    _emit(
        data,
        as_json,
        f"enrollment code for {data['user']}: {code}\n"
        f"expires {data['expires_at']} (in {format_duration(ttl or settings.enroll_code_ttl)});"
        " on the device run:\n"
        f"  devicetrust-agent enroll {settings.public_url} {code}",
    )


@cli.group()
def devices() -> None:
    """The device registry."""


@devices.command("list")
@click.option("--user", "email", help="Only this user's devices.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices_list(email: str | None, as_json: bool) -> None:
    """List devices with their state and owner."""

    with _db().session() as session:
        rows = device_queries.list_devices(session, user_name=email)
    lines = [
        f"{d['id']:38} {d['state']:8} {d['user']:30} {d['hostname'] or '-':20} {d['last_seen']}"
        for d in rows
    ]
    _emit(rows, as_json, "\n".join(lines) or "no devices")


def _device_action(action: str) -> click.Command:
    @click.argument("device_id")
    @click.option("--reason", required=True, help="Why (kept in the audit log).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def command(device_id: str, reason: str, as_json: bool) -> None:
        from idp_service.devices import registry
        from idp_service.platform.errors import ServiceError

        try:
            with _db().session() as session:
                device = registry.change_state(
                    session, device_id, action, reason=reason, actor="cli"
                )
                data = device_queries.json_of(session, device)
        except ServiceError as exc:
            raise click.ClickException(f"{exc.message} ({exc.code})") from None
        _emit(data, as_json, f"device {device_id} is now {data['state']}")

    command.__doc__ = f"{action.capitalize()} DEVICE_ID (takes effect at the next sign-in)."
    return click.command(action)(command)


for _action in ("approve", "deny", "revoke", "retrust"):
    devices.add_command(_device_action(_action))


@devices.command("sweep-stale")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices_sweep_stale(as_json: bool) -> None:
    """Mark devices not seen for DEVICETRUST_STALE_AFTER stale (denied, by policy), audited.

    The service also sweeps every DEVICETRUST_STALE_SWEEP_INTERVAL in the background.
    """
    from idp_service.devices.detection import sweep_stale

    settings = _settings()
    done = sweep_stale(_db(), settings)
    lines = [
        f"{d['device_id']:38} {d['from']:9} -> {d['to']:9} last seen {d['last_seen']}" for d in done
    ]
    _emit(
        {"policy": settings.stale_policy, "stale_after": settings.stale_after, "devices": done},
        as_json,
        "\n".join(lines) or "no stale devices",
    )


@devices.command("flags")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices_flags(device_id: str, as_json: bool) -> None:
    """Show DEVICE_ID's clone, duplicate and staleness flags, with their evidence."""
    from idp_service.devices.detection import flag_json

    with _db().session() as session:
        flags = [flag_json(f) for f in device_queries.flags(session, device_id)]
    lines = [
        f"#{f['id']} {f['kind']:18} {'open' if f['resolved_at'] is None else 'resolved'}"
        f" {f['created_at']} {f['resolution'] or ''}"
        for f in flags
    ]
    _emit(flags, as_json, "\n".join(lines) or "no flags")


@cli.group()
def exemptions() -> None:
    """Posture-check exemptions for a device, user or group, each with an expiry and a reason."""


@exemptions.command("add")
@click.option("--check", "check_id", required=True, help='Check id, or "*" for every check.')
@click.option("--device", help="Exempt this device id.")
@click.option("--user", help="Exempt this user (userName).")
@click.option("--group", help="Exempt members of this SCIM group (displayName).")
@click.option("--days", type=click.IntRange(1, 365), required=True, help="Lifetime in days.")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exemptions_add(
    check_id: str,
    device: str | None,
    user: str | None,
    group: str | None,
    days: int,
    reason: str,
    as_json: bool,
) -> None:
    """Exempt one device, user or group from a check for some days."""
    import datetime as dt

    from idp_service.platform.errors import ServiceError
    from idp_service.posture import service as posture

    chosen = [(s, v) for s, v in (("device", device), ("user", user), ("group", group)) if v]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --device, --user or --group")
    scope, subject = chosen[0]
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    try:
        with _db().session() as session:
            row = posture.add_exemption(
                session,
                check_id=check_id,
                scope=scope,
                subject=subject,
                expires_at=until,
                reason=reason,
                actor="cli",
            )
            data = posture.exemption_json(row)
    except ServiceError as exc:
        raise click.ClickException(f"{exc.message} ({exc.code})") from None
    _emit(
        data,
        as_json,
        f"exempted {scope} {subject} from {check_id} until {data['expires_at']}"
        f" (for {format_duration(dt.timedelta(days=days))})",
    )


@exemptions.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include expired exemptions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exemptions_list(show_all: bool, as_json: bool) -> None:
    """List exemptions (active ones unless --all)."""
    from sqlalchemy import select

    from idp_service.platform.models import utcnow
    from idp_service.posture import service as posture
    from idp_service.posture.tables import ExemptionRow

    query = select(ExemptionRow).order_by(ExemptionRow.expires_at)
    if not show_all:
        query = query.where(ExemptionRow.expires_at > utcnow())
    with _db().session() as session:
        rows = [posture.exemption_json(r) for r in session.scalars(query)]
    lines = [
        f"{r['id']:>5} {r['check_id']:28} {r['scope']:6} {r['subject']:32} until {r['expires_at']}"
        for r in rows
    ]
    _emit(rows, as_json, "\n".join(lines) or "no exemptions")


@exemptions.command("remove")
@click.argument("exemption_id", type=int)
@click.option("--reason", required=True, help="Why (kept in the audit log).")
def exemptions_remove(exemption_id: int, reason: str) -> None:
    """End an exemption now."""
    from idp_service.platform import audit
    from idp_service.posture.tables import ExemptionRow

    with _db().session() as session:
        row = session.get(ExemptionRow, exemption_id)
        if row is None:
            raise click.ClickException(
                f"no exemption {exemption_id}; see: devicetrust exemptions list"
            )
        session.delete(row)
        audit.record(
            session,
            "exemption.remove",
            "ok",
            actor="cli",
            details={"id": exemption_id, "check_id": row.check_id, "reason": reason},
        )
    click.echo(f"removed exemption {exemption_id}")


@cli.group("admin")
def admin_group() -> None:
    """The admin console (/admin): first-setup access."""


@admin_group.command("bootstrap")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def admin_bootstrap(as_json: bool) -> None:
    """Print a one-time token that opens one console session (valid 1 h, stored hashed)."""
    from idp_service.admin import bootstrap

    settings = _settings()
    with _db().session() as session:
        token, row = bootstrap.issue(session, actor="cli")
        data = {
            "token": token,
            "url": f"{settings.public_url}/admin/bootstrap",
            "expires_at": row.expires_at.isoformat(),
        }
    _emit(
        data,
        as_json,
        f"one-time admin token (shown once, expires {data['expires_at']},"
        f" in {format_duration(bootstrap.TTL)}):\n  {token}\n"
        f"open {data['url']} and paste it.",
    )


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
@click.option(
    "--checkpoints",
    "checkpoint_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A checkpoint file (JSON lines, as appended by the service or received by webhook): "
    "prove nothing before its newest checkpoint was removed or changed.",
)
@click.option(
    "--public-key",
    "public_key",
    help="The checkpoint public key (hex) to check signatures with "
    "(default: this service's; see `devicetrust audit checkpoint --public-key`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit_verify(checkpoint_path: str | None, public_key: str | None, as_json: bool) -> None:
    """Check every audit row's MAC, the keyed chain and the checkpoints; exit 1 if anything
    was tampered with or is missing."""
    from pathlib import Path

    from sqlalchemy import func, select

    from idp_service.platform import audit_chain
    from idp_service.platform.models import AuditEvent

    db = _db()
    verify_key = _verify_key(public_key)
    lines = None
    file_problems: list[str] = []
    if checkpoint_path is not None:
        lines, file_problems = audit_chain.read_checkpoint_file(Path(checkpoint_path))
    audit_chain.seal(db)
    with db.session() as session:
        total = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
        report = audit_chain.verify(
            db, checkpoints=lines, public_key=verify_key, progress=bar.update
        )
    report.problems[:0] = file_problems
    data = report.as_json()
    notes = []
    if report.pruned:
        notes.append(
            f"retained log starts at seq {report.retained_from} (pruned through seq "
            f"{report.pruned['seq']}, before {report.pruned.get('before')})"
        )
    if report.anchored_seq is not None:
        source = "the checkpoint file" if lines is not None else "the database's checkpoints"
        notes.append(
            f"anchored by {source} up to seq {report.anchored_seq}; "
            f"{report.unanchored_rows} newer rows are not anchored yet"
        )
    else:
        notes.append(f"no checkpoint anchors it yet ({report.unanchored_rows} rows)")
    for lost in report.restored:
        notes.append(
            f"restored from a backup at seq {lost['restore']['seq']} ({lost['restore']['at']}):"
            f" rows {lost['lost_rows'][0]}..{lost['lost_rows'][1]} were lost"
        )
    text = (
        f"audit log intact: {report.rows} rows, head seq {report.head_seq} {report.head}"
        if report.ok
        else "audit log TAMPERED or INCOMPLETE:\n" + "\n".join(f"  - {p}" for p in report.problems)
    )
    _emit(data, as_json, "\n".join([text, *(f"  {n}" for n in notes)]))
    if not report.ok:
        sys.exit(1)


def _verify_key(public_key: str | None):  # noqa: ANN202 - VerifyKey | None
    if public_key is None:
        return None
    from nacl.signing import VerifyKey

    try:
        return VerifyKey(bytes.fromhex(public_key.strip()))
    except ValueError:
        raise click.BadParameter(
            "not a 32-byte hex Ed25519 public key", param_hint="--public-key"
        ) from None


@audit_group.command("checkpoint")
@click.option("--export", "export_", is_flag=True, help="Print the newest checkpoint (JSON line).")
@click.option("--all", "show_all", is_flag=True, help="With --export: every checkpoint.")
@click.option(
    "--public-key", "show_key", is_flag=True, help="Print the checkpoint public key (hex)."
)
@click.option(
    "--restore",
    is_flag=True,
    help="After restoring the database from a backup: sign a `restore` checkpoint at its head, "
    "acknowledging that newer checkpoints anchor rows this database lost.",
)
def audit_checkpoint(export_: bool, show_all: bool, show_key: bool, restore: bool) -> None:
    """Seal the log and sign a checkpoint of its head now (appended to the checkpoint file
    and sent as an `audit.checkpoint` event), or print checkpoints or the public key."""

    from idp_service.platform import audit_chain

    db = _db()
    if show_key:
        click.echo(audit_chain.public_key_hex())
        return
    if export_:
        lines = audit_chain.stored_checkpoints(db)
        for line in lines if show_all else lines[-1:]:
            click.echo(json.dumps(line, sort_keys=True, separators=(",", ":")))
        return
    if show_all:
        raise click.UsageError("--all goes with --export")
    try:
        line = audit_chain.checkpoint(db, "restore" if restore else "manual", actor="cli")
    except OSError as exc:  # signed and stored, but the file could not take it
        raise click.ClickException(
            f"checkpoint stored and sent, but not appended to the checkpoint file: {exc}"
        ) from None
    click.echo(json.dumps(line, sort_keys=True, separators=(",", ":")))


@audit_group.command("prune")
@click.option(
    "--before",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Remove rows older than this (UTC), up to the newest checkpoint among them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit_prune(before: object, as_json: bool) -> None:
    """Retention: remove the oldest rows, only up to a checkpoint, and sign a prune checkpoint
    (verification then starts there)."""
    import datetime as dt

    from idp_service.platform import audit_chain

    assert isinstance(before, dt.datetime)
    try:
        result = audit_chain.prune(_db(), before.replace(tzinfo=dt.UTC), actor="cli")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(
        result,
        as_json,
        f"pruned {result['rows']} rows; the retained log starts at seq {result['first_retained']}",
    )


@audit_group.command("export")
@click.option("--since", "since_seq", default=0, type=int, help="Only rows after this chain seq.")
@click.option(
    "--output", "-o", type=click.File("w"), default="-", help="File to write (default stdout)."
)
def audit_export(since_seq: int, output: object) -> None:
    """Write the audit log as JSON lines, in chain order, with each row's MAC and chain hash."""

    from sqlalchemy import func, select

    from idp_service.platform import audit_chain
    from idp_service.platform.models import AuditEvent

    db = _db()
    audit_chain.seal(db)
    with db.session() as session:
        total = session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.chain_seq > since_seq)
        ).scalar_one()
    with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
        for row in audit_chain.export(db, since_seq=since_seq):
            output.write(json.dumps(row, default=str) + "\n")  # type: ignore[attr-defined]
            bar.update(1)


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    envvar="DEVICETRUST_DEMO_PORT",
    help="The service's port (default 8000; `make run PORT=9000`).",
)
@click.option(
    "--sp-port",
    type=click.IntRange(1, 65535),
    help="The demo app's port (default 8001, or the service's port + 1).",
)
@click.option("--verbose", is_flag=True, help="Show every log line of the demo's processes.")
def demo(port: int | None, sp_port: int | None, verbose: bool) -> None:
    """Start the service and a local agent enrolled to it (what `make run` does)."""
    from idp_service.demo import run_demo

    sys.exit(run_demo(port=port, sp_port=sp_port, verbose=verbose))


PASSPHRASE_VARIABLE = "DEVICETRUST_KEYS_PASSPHRASE"  # noqa: S105 - a variable's name


def _passphrase(passphrase_file: str | None, confirm: bool) -> str:
    """From --passphrase-file, else DEVICETRUST_KEYS_PASSPHRASE, else asked (hidden)."""
    if passphrase_file:
        with open(passphrase_file, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    given = os.environ.get(PASSPHRASE_VARIABLE)
    if given:
        return given
    return str(click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm))


@keys_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the passphrase from this file (else DEVICETRUST_KEYS_PASSPHRASE, else asked).",
)
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@CONFIG_OPTION
def keys_export(
    file: str, passphrase_file: str | None, force: bool, config_file: str | None
) -> None:
    """Write all the service's key material to FILE, encrypted under a passphrase.

    The database's secrets and SAML signing keys, and the audit keys (which a
    database backup does not hold). For new hardware and disaster recovery: keep
    FILE and its passphrase apart, and apart from database backups. The passphrase
    comes from --passphrase-file, DEVICETRUST_KEYS_PASSPHRASE, or is asked.
    """
    from idp_service import key_backup
    from idp_service.platform.db import Database
    from idp_service.platform.errors import ServiceError

    _use_config(config_file)
    settings = _settings()
    bundle = key_backup.collect(Database(settings.database_url), settings.data_dir)
    try:
        sealed = key_backup.seal(bundle, _passphrase(passphrase_file, confirm=True))
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(file, flags, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{file} exists; choose another name or add --force") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(sealed)
    counts = (
        f"{len(bundle['server_secrets'])} database secrets, "
        f"{len(bundle['saml_signing_keys'])} SAML signing keys, "
        f"{len(bundle['audit_keys'])} audit keys"
    )
    click.echo(f"wrote {file} (0600): {counts}")


@keys_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the passphrase from this file (else DEVICETRUST_KEYS_PASSPHRASE, else asked).",
)
@click.option("--replace", is_flag=True, help="Overwrite keys that exist here with other values.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@CONFIG_OPTION
def keys_import(
    file: str, passphrase_file: str | None, replace: bool, as_json: bool, config_file: str | None
) -> None:
    """Put the key material of FILE (from `keys export`) in place here.

    Run it after `devicetrust migrate` on the new database. Nothing is written if a
    key exists here with another value, unless --replace.
    """
    from pathlib import Path

    from idp_service import key_backup
    from idp_service.platform.db import Database
    from idp_service.platform.errors import ServiceError

    _use_config(config_file)
    settings = _settings()
    try:
        bundle = key_backup.unseal(Path(file).read_bytes(), _passphrase(passphrase_file, False))
        # Not _db(): that would create an audit key here before the imported one is in place.
        database = Database(settings.database_url)
        changes = key_backup.restore(database, settings.data_dir, bundle, replace=replace)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    rows = [{"what": c.what, "action": c.action} for c in changes]
    _emit(rows, as_json, "\n".join(f"{c.action:10} {c.what}" for c in changes))


# Each surface's command group.
for _group in (
    checks,
    sp_group,
    keys_group,
    oidc_client,
    oidc_key,
    scim_token,
    api_token,
    policy,
    webhook,
):
    cli.add_command(_group)

from idp_service.updates.cli import updates  # noqa: E402
from idp_service.upstream.cli import reauth_group  # noqa: E402

cli.add_command(updates)
cli.add_command(reauth_group)


def main() -> None:
    """Entry point of the ``devicetrust`` console script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()
