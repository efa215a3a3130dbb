"""The ``ipt-careplans`` command: serve, database migrations, clients and tokens, the OpenAPI
document, demonstration plans.

Help texts are what an administrator reads in a terminal: plain sentences, no markup.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy.engine import URL, make_url

from api.config import ConfigError, ServerOptions, Settings, load, server_options
from service import clients as client_store
from service import codes
from service.db import Database
from service.errors import DomainError, RuleViolation

OPENAPI_PATH = Path("openapi") / "openapi.json"


def _settings() -> Settings:
    try:
        return load()
    except ConfigError as error:
        raise click.UsageError(f"invalid configuration: {error}") from error


def _server_options() -> ServerOptions:
    try:
        return server_options()
    except ConfigError as error:
        raise click.UsageError(f"invalid configuration: {error}") from error


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database URL, made absolute; None for other databases and memory."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser().resolve()


def shown_url(database_url: str) -> str:
    """The database's URL as it may be printed: the file of SQLite, no password or query."""
    file = sqlite_file(database_url)
    if file is not None:
        return f"sqlite:///{file}"
    url = make_url(database_url)
    safe = URL.create(url.drivername, url.username, None, url.host, url.port, url.database)
    return safe.render_as_string(hide_password=True)


def _open_database(settings: Settings, *, create: bool) -> Database:
    """The configured database, named on standard error so that the administrator sees which
    one a command uses.

    A command that only reads (``create`` false) never creates a SQLite file: run from the
    wrong directory, it would otherwise find an empty new database there and report that
    nothing exists.
    """
    click.echo(f"database: {shown_url(settings.database_url)}", err=True)
    file = sqlite_file(settings.database_url)
    if not create and file is not None and not file.exists():
        raise click.ClickException(
            f"no database at {file}: run the command from the directory the service runs "
            f"in, or set IPT_DATABASE_URL to the service's database (e.g. "
            f"IPT_DATABASE_URL=sqlite:////path/to/ipt-careplans.db)"
        )
    return Database(settings.database_url)


def _ready_database(settings: Settings, *, create: bool = False) -> Database:
    """The database, migrated as ``serve`` would (SQLite), or refused with the fix to run."""
    database = _open_database(settings, create=create)
    if settings.migrates_on_start:
        database.upgrade()
    elif not database.schema_is_current():
        raise click.ClickException(
            "the database schema is not current: run `ipt-careplans db upgrade` first"
        )
    return database


def _create_app(settings: Settings, database: Database | None = None) -> Flask:
    """The app, or the configuration error that stops it (a wrong key-encryption key…)."""
    from api.app import create_app  # here: the commands that need no app start faster

    try:
        return create_app(settings, database)
    except ConfigError as error:
        raise click.UsageError(f"invalid configuration: {error}") from error


def _newest_revision() -> str | None:
    """The newest migration the code has, without a database to ask."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from service.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def _version() -> str:
    try:
        return metadata.version("ipt-careplans")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# An AppGroup, not a FlaskGroup: Flask's own options (--app, --env-file, --debug) mean
# nothing here, since the app is always this service's, configured from the environment.
@click.group(cls=AppGroup)
@click.version_option(
    _version(), "--version", prog_name="ipt-careplans", message="%(prog)s %(version)s"
)
def main() -> None:
    """ipt-careplans: IPT care plans for depression, over a native REST API and FHIR R4.

    Every command uses the database named by IPT_DATABASE_URL (default: the file
    ipt-careplans.db in the current directory) and says on standard error which one.
    """


@main.command(with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Worker processes (IPT_WORKERS; default: one per core, at least 2).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    show_default="IPT_THREADS or 4",
    help="Threads per worker.",
)
def serve(host: str, port: int, workers: int | None, threads: int | None) -> None:
    """Run the service with the production server (gunicorn)."""
    from api.server import default_workers, prepare_metrics_dir
    from api.server import serve as run

    settings = _settings()
    options = _server_options()
    # Before the app exists: its metrics count in files that every worker shares.
    prepare_metrics_dir(options.metrics_dir)
    app = _create_app(settings)
    db: Database = app.extensions["ipt_database"]
    if not db.schema_is_current():
        raise click.ClickException(
            "the database schema is not current: run `ipt-careplans db upgrade` first"
        )
    click.echo(f"database: {shown_url(settings.database_url)}", err=True)
    click.echo(f"ipt-careplans listening on http://{host}:{port} (docs at /docs)", err=True)
    workers = workers or options.workers or default_workers()
    run(app, host, port, workers, threads or options.threads)


@main.command(with_appcontext=False)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface the health and metrics port listens on.",
)
@click.option(
    "--port",
    default=9100,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of /livez, /readyz and /metrics; 0 for none.",
)
def worker(host: str, port: int) -> None:
    """Deliver subscription notifications until stopped (SIGTERM ends the deliveries under
    way, then exits). Several workers may run against one PostgreSQL database: they share
    the work, and never send one subscription's notifications at the same time."""
    from api.request_log import configure_logging
    from api.worker import pool_size, run

    settings = _settings()
    configure_logging(settings.log_level)
    database = _open_database(settings, create=False)
    database.dispose()
    database = Database(settings.database_url, pool_size=pool_size(settings))
    if settings.migrates_on_start:
        database.upgrade()
    elif not database.schema_is_current():
        raise click.ClickException(
            "the database schema is not current: run `ipt-careplans db upgrade` first"
        )
    where = f"health and metrics on http://{host}:{port}" if port else "no health port"
    click.echo(f"ipt-careplans worker delivering notifications ({where})", err=True)
    try:
        run(settings, database, host=host, port=port)
    finally:
        database.dispose()


@main.group()
def db() -> None:
    """Database schema migrations."""


@db.command(with_appcontext=False)
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    database = _open_database(_settings(), create=True)
    database.upgrade(revision)
    click.echo(f"database at revision {database.current_revision()}")


@db.command(with_appcontext=False)
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ("base" removes every table)."""
    database = _open_database(_settings(), create=False)
    database.downgrade(revision)
    click.echo(f"database at revision {database.current_revision()}")


@db.command(with_appcontext=False)
def current() -> None:
    """Show the database's revision and the newest one; exit 1 when they differ."""
    settings = _settings()
    file = sqlite_file(settings.database_url)
    if file is not None and not file.exists():
        click.echo(f"database: {shown_url(settings.database_url)} (no such file)", err=True)
        click.echo(f"current: none\nnewest:  {_newest_revision()}")
        sys.exit(1)
    database = _open_database(settings, create=False)
    now, head = database.current_revision(), database.head_revision()
    click.echo(f"current: {now or 'none'}\nnewest:  {head}")
    if now != head:
        sys.exit(1)


def openapi_document() -> str:
    """The OpenAPI document as committed: generated from the code, stable formatting."""
    from api.app import create_app

    app = create_app(Settings(database_url="sqlite://", auto_migrate=False, log_level="ERROR"))
    spec = app.extensions["ipt_api"].spec.to_dict()
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


@main.group()
def openapi() -> None:
    """The OpenAPI document."""


@openapi.command("write", with_appcontext=False)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default=OPENAPI_PATH)
def openapi_write(path: Path) -> None:
    """Regenerate the OpenAPI document (default openapi/openapi.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(openapi_document(), encoding="utf-8")
    click.echo(f"wrote {path}")


@openapi.command("check", with_appcontext=False)
@click.argument(
    "path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=OPENAPI_PATH
)
def openapi_check(path: Path) -> None:
    """Exit 1 when PATH differs from what the code generates."""
    if path.read_text(encoding="utf-8") != openapi_document():
        raise click.ClickException(f"{path} is stale: run `ipt-careplans openapi write`")
    click.echo(f"{path} is current")


@main.command("check-config", with_appcontext=False)
def check_config() -> None:
    """Validate the environment's settings and reach the database."""
    settings = _settings()
    _server_options()
    database = _open_database(settings, create=False)
    database.ping()
    current = database.schema_is_current()
    _check_token_protection(settings, database, current)
    click.echo(
        f"settings valid; database reachable; schema {'current' if current else 'NOT current'}"
    )


def _check_token_protection(settings: Settings, database: Database, schema_current: bool) -> None:
    """The signing keys can be read (and decrypted), and the rate-limit storage answers."""
    from api.auth import keys
    from service.rate_counters import CounterStoreError, RedisCounters

    if settings.token_signing_key_file or schema_current:
        try:
            keys.load_ring(settings, database, write=False)
        except ConfigError as error:
            raise click.ClickException(f"invalid configuration: {error}") from error
    if not settings.token_signing_key_file and not settings.key_encryption_key_file:
        click.echo(
            "warning: the token signing key is kept in the database unencrypted; set "
            "IPT_KEY_ENCRYPTION_KEY_FILE (or IPT_TOKEN_SIGNING_KEY_FILE) in production",
            err=True,
        )
    if settings.rate_limit_storage:
        try:
            RedisCounters(settings.rate_limit_storage).ping()
        except CounterStoreError as error:
            raise click.ClickException(
                f"IPT_RATE_LIMIT_STORAGE does not answer ({error})"
            ) from error


@main.group()
def clients() -> None:
    """Machine clients allowed to ask for access tokens."""


def _domain(error: DomainError) -> click.ClickException:
    if isinstance(error, RuleViolation) and error.problems:
        return click.ClickException("; ".join(f"{p.field}: {p.message}" for p in error.problems))
    return click.ClickException(error.message)


def _checked_scopes(text: str) -> list[str]:
    from service import scopes

    requested = text.split()
    unusable = [scope for scope in requested if scopes.parse(scope) is None]
    if unusable:
        raise click.BadParameter(
            f"not SMART resource scopes (context/Resource.permissions, e.g. "
            f"system/CarePlan.rs): {', '.join(unusable)}",
            param_hint="--scopes",
        )
    return requested


@clients.command("create", with_appcontext=False)
@click.option("--name", required=True, help="A unique name for the client.")
@click.option(
    "--scopes", "scope_text", required=True, help='Space-separated, e.g. "system/*.cruds".'
)
@click.option("--patient", help="Bind the client to one patient: Patient/123.")
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The client's public keys (JWKS file): it authenticates with signed assertions.",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "env", "json"]),
    default="text",
    show_default=True,
    help="text: client_id: and client_secret: lines. env: IPT_CLIENT_ID=... and "
    'IPT_CLIENT_SECRET=... lines, shell-quoted, for eval "$(...)". json: one object.',
)
def clients_create(
    name: str, scope_text: str, patient: str | None, jwks_file: Path | None, output: str
) -> None:
    """Register a client; prints its id and, once only, its secret.

    A client registered with --jwks has no secret: it signs assertions with its key.
    """
    requested = _checked_scopes(scope_text)
    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise click.BadParameter(f"not a JSON file: {error}", param_hint="--jwks") from None
    database = _ready_database(_settings(), create=True)
    try:
        client, secret = client_store.register(database, name, requested, patient, jwks)
    except DomainError as error:
        raise _domain(error) from None
    _print_credentials(output, client.id, secret, name=name, scopes=requested, patient=patient)
    if secret is not None:
        click.echo("The secret is shown only now: store it safely.", err=True)


def _print_credentials(
    output: str, client_id: str, secret: str | None, **described: object
) -> None:
    """A client's id and secret as text lines, shell variable assignments or JSON."""
    if output == "json":
        document = {"client_id": client_id, "client_secret": secret, **described}
        click.echo(json.dumps(document, ensure_ascii=False))
    elif output == "env":
        click.echo(f"IPT_CLIENT_ID={shlex.quote(client_id)}")
        if secret is not None:
            click.echo(f"IPT_CLIENT_SECRET={shlex.quote(secret)}")
    else:
        click.echo(f"client_id: {client_id}")
        if secret is not None:
            click.echo(f"client_secret: {secret}")


@clients.command("list", with_appcontext=False)
def clients_list() -> None:
    """List the clients: name, id, scopes, patient, revoked."""
    database = _ready_database(_settings())
    rows = [("NAME", "ID", "SCOPES", "PATIENT", "REVOKED")]
    for client in client_store.list_clients(database):
        revoked = client.revoked_at.isoformat(timespec="seconds") if client.revoked_at else "no"
        rows.append((client.name, client.id, client.scopes, client.patient or "-", revoked))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        click.echo("  ".join([*cells, row[4]]))


@clients.command("revoke", with_appcontext=False)
@click.argument("name")
def clients_revoke(name: str) -> None:
    """Revoke a client: no new tokens, and its tokens stop working."""
    database = _ready_database(_settings())
    try:
        client_store.revoke(database, name)
    except DomainError as error:
        raise _domain(error) from None
    click.echo(f"client {name} revoked")


@clients.command("rotate-secret", with_appcontext=False)
@click.argument("name")
def clients_rotate_secret(name: str) -> None:
    """Give a client a new secret (printed once); the old one stops working."""
    database = _ready_database(_settings())
    try:
        secret = client_store.rotate_secret(database, name)
    except DomainError as error:
        raise _domain(error) from None
    click.echo(f"client_secret: {secret}")
    click.echo("The secret is shown only now: store it safely.", err=True)


@main.group()
def keys() -> None:
    """The keys access tokens are signed with (when kept in the database)."""


@keys.command("rotate", with_appcontext=False)
def keys_rotate() -> None:
    """Sign with a new key from now on; the old public key stays published until its tokens
    have expired."""
    from api.auth import keys as token_keys

    settings = _settings()
    database = _ready_database(settings)
    try:
        rotation = token_keys.rotate(settings, database)
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from error
    until = rotation.published_until.isoformat(timespec="seconds")
    click.echo(f"signing key: {rotation.signing.kid}")
    for kid in rotation.retired:
        click.echo(f"retired: {kid} (published until {until})")
    for row in rotation.dropped:
        click.echo(f"dropped: {row}")


@keys.command("list", with_appcontext=False)
def keys_list() -> None:
    """List the published keys: kid, state, and whether they are encrypted at rest (plain
    keys are encrypted first when a key-encryption key is configured)."""
    from api.auth import keys as token_keys

    settings = _settings()
    database = _ready_database(settings)
    try:
        ring = token_keys.load_ring(settings, database)
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from error
    if ring.from_file:
        click.echo(f"{ring.signing.kid}  signing  IPT_TOKEN_SIGNING_KEY_FILE")
        return
    at_rest = "encrypted" if settings.key_encryption_key_file else "UNENCRYPTED"
    click.echo(f"{ring.signing.kid}  signing  {at_rest}")
    for key, until in ring.retired:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
        click.echo(f"{key.kid}  retired, published until {stamp}  {at_rest}")


@main.command("demo", with_appcontext=False)
@click.option(
    "--force", is_flag=True, help="Add them even when the database already holds care plans."
)
def demo(force: bool) -> None:
    """Load demonstration plans to try the service with: one IPT course per problem area
    (grief, role dispute, role transition, interpersonal deficits), with sessions and their
    PHQ-9 scores, homework, and one renegotiated contract. The patients are invented.

    Refused when the database already holds care plans, unless --force.
    """
    from api import demo as demonstration

    settings = _settings()
    app = _create_app(settings, _ready_database(settings, create=True))
    database: Database = app.extensions["ipt_database"]
    try:
        ids = demonstration.load(database, force=force)
    except demonstration.DemoRefused as error:
        raise click.ClickException(
            f"{error}: demonstration plans would mix with them (--force adds them anyway)"
        ) from None
    except DomainError as error:
        raise _domain(error) from None
    for plan_id, course in zip(ids, demonstration.COURSES, strict=True):
        areas = ", ".join(course.plan["problem_areas"])
        click.echo(f"created {plan_id}  {course.plan['patient']}  {areas}")


@main.group()
def report() -> None:
    """Aggregate reports of the clinic (no patient is named in them)."""


@report.command("outcomes", with_appcontext=False)
@click.option(
    "--from",
    "start",
    required=True,
    type=click.DateTime(["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="The first day of the period (YYYY-MM-DD).",
)
@click.option(
    "--to",
    "end",
    required=True,
    type=click.DateTime(["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="The last day of the period (YYYY-MM-DD), included.",
)
@click.option(
    "--problem-area",
    type=click.Choice(codes.values(codes.ProblemArea)),
    help="Only plans with this primary problem area.",
)
@click.option(
    "--variant", type=click.Choice(codes.values(codes.Variant)), help="Only this variant."
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["csv", "json"]),
    default="csv",
    show_default=True,
    help="csv: one line per figure (breakdown, group, figure, value, suppressed, reason). "
    "json: the document GET /api/v1/reports/outcomes answers.",
)
def report_outcomes(
    start: datetime, end: datetime, problem_area: str | None, variant: str | None, output: str
) -> None:
    """The clinic's outcomes over a period: plans started and closed, courses ended and
    drop-outs, sessions attended, PHQ-9 response and remission at the end of the acute
    course; in total, by primary problem area and by variant.

    A figure computed from fewer than 5 patients is left blank and marked suppressed, and
    so is the figure that would let it be recomputed from the total.
    """
    from service import outcomes

    database = _ready_database(_settings())
    try:
        found = outcomes.outcomes_report(database, start.date(), end.date(), problem_area, variant)
    except DomainError as error:
        raise _domain(error) from None
    if output == "json":
        document = outcomes.report_dict(found)
        click.echo(json.dumps(document, default=str, ensure_ascii=False, indent=2))
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(outcomes.CSV_COLUMNS)
    writer.writerows(outcomes.report_rows(found))
    click.echo(buffer.getvalue(), nl=False)


@main.command("export", with_appcontext=False)
@click.option(
    "--out",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory the NDJSON files are written to (created if missing; files of the "
    "same names are replaced).",
)
@click.option(
    "--type",
    "types",
    multiple=True,
    help="A resource type to export (repeat, or separate with commas). Default: every type.",
)
@click.option(
    "--since",
    help="Only resources whose current version was written at or after this instant, such "
    "as 2026-01-05T10:00:00Z (deleted ones are left out).",
)
@click.option(
    "--type-filter",
    "type_filters",
    multiple=True,
    help="A FHIR search query the resources of its type must match, such as "
    "Goal?lifecycle-status=active (repeat for several: a resource matching one is kept).",
)
@click.option("--patient", help="Only this patient's records: Patient/123.")
def export(
    directory: Path,
    types: tuple[str, ...],
    since: str | None,
    type_filters: tuple[str, ...],
    patient: str | None,
) -> None:
    """Export published resources as NDJSON files, one per type (Goal.ndjson, and
    Goal-2.ndjson... once a file passes IPT_EXPORT_FILE_BYTES), as $export writes them.

    The export holds each resource as it was when the command started: what is written
    meanwhile is left out. It is recorded in the audit trail once per patient exported.
    """
    from api import export_command

    settings = _settings()
    database = _ready_database(settings)
    try:
        request = export_command.checked(types, since, type_filters, patient)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    written = export_command.run(database, settings, request, directory)
    for path, count in written:
        click.echo(f"{path}\t{count}")


def _duration(seconds: int) -> str:
    """Seconds as an administrator says them: "5 minutes", "90 seconds", "1 hour"."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


# The default of the setting, not the environment's value: help describes the command.
DEFAULT_TOKEN_LIFETIME: int = Settings.token_lifetime_seconds


@main.command(
    "token",
    with_appcontext=False,
    help=(
        "Print an access token for a client (for scripts), signed with the service's key. "
        f"It lasts IPT_TOKEN_LIFETIME_SECONDS (default {_duration(DEFAULT_TOKEN_LIFETIME)}): "
        "take a new one when it expires. Scripts that run longer ask POST /auth/token with "
        "the client's id and secret instead, and renew their token themselves."
    ),
)
@click.option("--client", "name", required=True, help="The client's name.")
@click.option(
    "--scopes", "scope_text", help="Space-separated; default: the client's registered scopes."
)
def token(name: str, scope_text: str | None) -> None:
    from api.auth import keys, tokens
    from service import scopes

    settings = _settings()
    database = _ready_database(settings)
    client = client_store.find_by_name(database, name)
    if client is None or client.revoked_at is not None:
        raise click.ClickException(
            f"no active client is named {name!r} in the database at "
            f"{shown_url(settings.database_url)} (see `ipt-careplans clients list`)"
        )
    registered = client_store.registered_scopes(client)
    requested = scope_text.split() if scope_text is not None else registered
    granted = scopes.grant(requested, registered)
    if not granted:
        raise click.ClickException("none of the requested scopes is registered for the client")
    try:
        key = keys.load(settings, database)
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from error
    access_token, lifetime = tokens.issue(client, granted, settings, key=key)
    click.echo(access_token)
    click.echo(f"The token lasts {_duration(lifetime)}.", err=True)


if __name__ == "__main__":
    main()
