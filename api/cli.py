"""The ``ipt-careplans`` command: serve, database migrations, the OpenAPI document."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import FlaskGroup

from api.app import create_app
from api.config import ConfigError, Settings, load
from service.db import Database

OPENAPI_PATH = Path("openapi") / "openapi.json"


def _settings() -> Settings:
    try:
        return load()
    except ConfigError as error:
        raise click.UsageError(f"invalid configuration: {error}") from error


def _app() -> Flask:
    return create_app(_settings())


@click.group(cls=FlaskGroup, create_app=_app, add_default_commands=False, add_version_option=False)
def main() -> None:
    """ipt-careplans: IPT care plans for depression, over a native REST API."""


@main.command(with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    type=int,
    default=lambda: int(os.environ.get("IPT_WORKERS", "0")) or None,
    help="Worker processes (IPT_WORKERS; default: one per core, at least 2).",
)
@click.option(
    "--threads",
    type=int,
    default=lambda: int(os.environ.get("IPT_THREADS", "4")),
    show_default="IPT_THREADS or 4",
    help="Threads per worker.",
)
def serve(host: str, port: int, workers: int | None, threads: int) -> None:
    """Run the service with the production server (gunicorn)."""
    from api.server import default_workers
    from api.server import serve as run

    settings = _settings()
    app = create_app(settings)
    db: Database = app.extensions["ipt_database"]
    if not db.schema_is_current():
        raise click.ClickException(
            "the database schema is not current: run `ipt-careplans db upgrade` first"
        )
    click.echo(f"ipt-careplans listening on http://{host}:{port} (docs at /docs)", err=True)
    run(app, host, port, workers or default_workers(), threads)


@main.group()
def db() -> None:
    """Database schema migrations."""


@db.command(with_appcontext=False)
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    database = Database(_settings().database_url)
    database.upgrade(revision)
    click.echo(f"database at revision {database.current_revision()}")


@db.command(with_appcontext=False)
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (``base`` removes every table)."""
    database = Database(_settings().database_url)
    database.downgrade(revision)
    click.echo(f"database at revision {database.current_revision()}")


@db.command(with_appcontext=False)
def current() -> None:
    """Show the database's revision and the newest one."""
    database = Database(_settings().database_url)
    now, head = database.current_revision(), database.head_revision()
    click.echo(f"current: {now or 'none'}\nnewest:  {head}")
    if now != head:
        sys.exit(1)


def openapi_document() -> str:
    """The OpenAPI document as committed: generated from the code, stable formatting."""
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
    database = Database(settings.database_url)
    database.ping()
    click.echo(
        f"settings valid; database reachable; schema "
        f"{'current' if database.schema_is_current() else 'NOT current'}"
    )


if __name__ == "__main__":
    main()
