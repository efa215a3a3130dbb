"""Health probes, the command line, configuration, migrations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import ROOT, Client, run_cli

from api.config import ConfigError, load
from service.db import Database
from service.models import Base


def test_health_and_readiness(client: Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "reachable"


def test_readiness_fails_while_migrations_are_missing(tmp_path: Path) -> None:
    from api.app import create_app
    from api.config import Settings

    url = f"sqlite:///{tmp_path / 'new.db'}"
    app = create_app(Settings(database_url=url, auto_migrate=False, log_level="ERROR"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "db upgrade" in response.get_json()["schema"]


def test_migrations_match_the_models(database: Database) -> None:
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_every_request_gets_a_request_id_and_safe_headers(client: Client) -> None:
    response = client.get("/api/v1/care-plans", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"IPT_MAX_BODY_BYTES": "lots"}, "IPT_MAX_BODY_BYTES"),
        ({"IPT_MAX_BODY_BYTES": "0"}, "IPT_MAX_BODY_BYTES"),
        ({"IPT_AUTO_MIGRATE": "maybe"}, "IPT_AUTO_MIGRATE"),
        ({"IPT_LOG_LEVEL": "LOUD"}, "IPT_LOG_LEVEL"),
        ({"IPT_DATABASE_URL": "careplans.db"}, "IPT_DATABASE_URL"),
    ],
)
def test_invalid_settings_are_refused_by_name(environ: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(environ)


@pytest.mark.slow
def test_cli_upgrades_reports_the_schema_and_migrates_down_to_nothing_and_up_again(
    tmp_path: Path,
) -> None:
    env = {"IPT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    before = run_cli("db", "current", env=env)
    assert before.returncode == 1
    assert "current: none" in before.stdout
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    after = run_cli("db", "current", env=env)
    assert after.returncode == 0
    newest = Database(env["IPT_DATABASE_URL"]).head_revision()
    assert newest is not None and f"current: {newest}\nnewest:  {newest}" in after.stdout
    down = run_cli("db", "downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert "revision None" in down.stdout
    assert run_cli("db", "upgrade", env=env).returncode == 0
    assert run_cli("db", "current", env=env).returncode == 0


@pytest.mark.slow
def test_cli_refuses_an_invalid_configuration(tmp_path: Path) -> None:
    result = run_cli("check-config", env={"IPT_MAX_BODY_BYTES": "lots"})
    assert result.returncode != 0
    assert "IPT_MAX_BODY_BYTES" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("IPT_WORKERS", "many", "whole number"),
        ("IPT_WORKERS", "0", "between 1 and 256"),
        ("IPT_THREADS", "-2", "between 1 and 256"),
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics", "existing directory"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_server_options_are_checked_before_start(
    tmp_path: Path, command: str, name: str, value: str, says: str
) -> None:
    database = f"sqlite:///{tmp_path / 'never.db'}"
    result = run_cli(command, env={"IPT_DATABASE_URL": database, name: value})
    assert result.returncode == 2, result.stderr
    assert name in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never.db").exists()


def test_server_options_from_the_environment(tmp_path: Path) -> None:
    from api.config import ServerOptions, server_options

    assert server_options({}) == ServerOptions(workers=None, threads=4, metrics_dir=None)
    given = {"IPT_WORKERS": "3", "IPT_THREADS": "8", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    assert server_options(given) == ServerOptions(3, 8, str(tmp_path))
    a_file = tmp_path / "metrics.txt"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="existing directory"):
        server_options({"PROMETHEUS_MULTIPROC_DIR": str(a_file)})
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root may write anywhere
        with pytest.raises(ConfigError, match="not writable"):
            server_options({"PROMETHEUS_MULTIPROC_DIR": str(read_only)})


@pytest.mark.slow
def test_cli_openapi_check_detects_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    assert run_cli("openapi", "check", str(stale), env={}).returncode == 1
    assert run_cli("openapi", "write", str(stale), env={}).returncode == 0
    assert run_cli("openapi", "check", str(stale), env={}).returncode == 0


def test_readme_documents_every_setting() -> None:
    from api.config import VARIABLES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in VARIABLES:
        assert f"| `{name}` |" in readme, name


def test_security_headers(client: Client) -> None:
    docs = client.get("/docs")
    policy = docs.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-eval" not in policy
    assert docs.headers["X-Frame-Options"] == "DENY"
    fhir = client.get("/fhir/metadata")
    assert fhir.headers["Cache-Control"] == "no-store"
    assert fhir.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert fhir.headers["Referrer-Policy"] == "no-referrer"
    assert fhir.headers["X-Content-Type-Options"] == "nosniff"
