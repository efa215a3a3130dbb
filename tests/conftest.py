"""Test fixtures: a real database (SQLite by default, PostgreSQL when IPT_TEST_DATABASE_URL is
set), the app served over real HTTP on a free port, and a small client for it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from flask import Flask
from sqlalchemy import text
from werkzeug.serving import make_server

from api.app import create_app
from api.auth import keys, tokens
from api.config import Settings
from service import clients
from service.db import Database, normalise_url
from service.models import ApiClient, Base, new_id, utcnow
from tests.published import mismatches

TEST_DATABASE_URL = os.environ.get("IPT_TEST_DATABASE_URL")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core. A test spends much of its time waiting (on the
    database, on the server it calls, on child processes starting), during which another
    worker can use the core: on 2 cores, 4 workers ran the suite in 4:44 on SQLite and
    7:32 on PostgreSQL where 2 took about 7 and 10 minutes; 6 were no faster than 4."""
    return (
        2 * len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else 2 * (os.cpu_count() or 1)
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow run first (in their own order), so that with several workers none
    is left running one long test after the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite in a temporary file, or a private schema of the PostgreSQL test database.

    The private schema lets several test runs share one PostgreSQL database.
    """
    if not TEST_DATABASE_URL:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    schema = f"test_{os.getpid()}"
    admin = Database(TEST_DATABASE_URL)
    with admin.engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = normalise_url(TEST_DATABASE_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    # Start from an empty schema so that the migrations themselves are exercised.
    with db.engine.begin() as connection:
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.upgrade()
    yield db
    db.dispose()


# Kept between tests: the token signing key the running server has loaded.
KEPT_TABLES = {"signing_keys"}
ADMIN_SCOPES = ["system/*.cruds", "system/AuditEvent.rs"]


def _emptied_tables() -> list[str]:
    """The tables a test starts without rows, children before their parents."""
    return [
        table.name
        for table in reversed(Base.metadata.sorted_tables)
        if table.name not in KEPT_TABLES
    ]


def _empty(database: Database) -> None:
    """Delete every row of every table but the kept ones, in one transaction.

    On PostgreSQL the deletes go to the server as one message (one round trip instead of
    one per table); SQLite runs in process, where a statement costs no round trip.
    """
    names = _emptied_tables()
    with database.engine.begin() as connection:
        if database.is_sqlite:
            for name in names:
                connection.exec_driver_sql(f"DELETE FROM {name}")
            return
        driver = connection.connection.driver_connection
        assert driver is not None
        # Without parameters psycopg sends the statements as one simple query.
        driver.execute("; ".join(f"DELETE FROM {name}" for name in names))


@pytest.fixture(autouse=True)
def empty_tables(database: Database) -> Iterator[None]:
    """Every test starts with no data, and ends with every plan published as a full render
    of it would publish it (writes publish only the resources a change can alter)."""
    _empty(database)
    yield
    assert mismatches(database) == []


class Client:
    """requests against the live server, with paths relative to its base URL.

    With a token, every request carries it as ``Authorization: Bearer``.
    """

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.client_id: str | None = None
        if token is not None:
            self.http.headers["Authorization"] = f"Bearer {token}"
            claims = jwt.decode(token, options={"verify_signature": False})
            self.client_id = claims["client_id"]

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def create_plan(self, **fields: Any) -> dict[str, Any]:
        """Create a plan (minimal valid body, overridden by ``fields``; None drops a field)."""
        body = {
            "patient": "Patient/123",
            "problem_areas": ["grief"],
            "planned_sessions": 12,
            "start_date": "2026-01-05",
            **fields,
        }
        body = {name: value for name, value in body.items() if value is not None}
        response = self.post("/api/v1/care-plans", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())


@dataclass(frozen=True)
class Server:
    url: str
    app: Flask
    settings: Settings


@pytest.fixture(scope="session")
def live(database: Database) -> Iterator[Server]:
    settings = Settings(
        database_url=database.url.render_as_string(hide_password=False),
        auto_migrate=False,
        log_level="WARNING",
        max_body_bytes=64 * 1024,
        token_lifetime_seconds=3600,
        # Every test calls from 127.0.0.1: the per-address limit is tested on apps of its
        # own (test_token_rate_limit.py), not on the server all tests share.
        token_attempts_per_address=1_000_000,
    )
    app = create_app(settings, database)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{http.server_port}", app, settings)
    http.shutdown()


@pytest.fixture(scope="session")
def server(live: Server) -> str:
    return live.url


def token_for(
    live: Server,
    database: Database,
    scopes: list[str],
    patient: str | None = None,
    name: str | None = None,
) -> str:
    """A token of a freshly registered client with these scopes (and patient binding)."""
    client = ApiClient(
        id=new_id(),
        name=name or f"test-{uuid.uuid4().hex[:12]}",
        scopes=" ".join(scopes),
        patient=patient,
        created_at=utcnow(),
    )
    with database.writing() as session:
        session.add(client)
    token, _ = tokens.issue(client, scopes, live.settings, key=keys.key_for(live.app))
    return token


def registered_client(database: Database, prefix: str, scopes: list[str]) -> tuple[str, str]:
    """A client registered as `ipt-careplans clients create` registers it, with a name of
    its own starting with ``prefix``: its id and secret."""
    client, secret = clients.register(database, f"{prefix}-{uuid.uuid4().hex[:12]}", scopes)
    assert secret is not None
    return client.id, secret


@pytest.fixture
def admin_token(live: Server, database: Database) -> str:
    """A token allowed everything (system/*.cruds)."""
    return token_for(live, database, ADMIN_SCOPES, name="test-admin")


@pytest.fixture
def client(live: Server, admin_token: str) -> Client:
    """The live server, called with an all-powerful token."""
    return Client(live.url, admin_token)


@pytest.fixture
def anonymous(live: Server) -> Client:
    """The live server, called with no token."""
    return Client(live.url)


@pytest.fixture
def plan(client: Client) -> dict[str, Any]:
    """A standard 12-session grief plan with its template goals."""
    return client.create_plan()


def plan_url(plan: dict[str, Any], *parts: object) -> str:
    return "/".join([f"/api/v1/care-plans/{plan['id']}", *map(str, parts)])


def problem_fields(response: requests.Response) -> list[str]:
    """The invalid fields a problem+json response names."""
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.text
    return [error["field"] for error in response.json().get("errors", [])]


def count_rows(database: Database, table: str) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ipt-careplans ARGS`` in a child process, with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=120,
    )
