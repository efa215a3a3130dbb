"""PostgreSQL connections the server closed are replaced before a request uses them, and
connections in steady use are not checked with an extra round trip each time."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text

from service import db as service_db
from service.db import Database
from tests.conftest import Client


def _pooled_backends(database: Database) -> list[int]:
    """The server process ids of the connections resting in the pool (all of them are
    taken, asked, and given back)."""
    pool: Any = database.engine.pool
    taken = [database.engine.raw_connection() for _ in range(pool.checkedin())]
    try:
        pids = []
        for connection in taken:
            cursor = connection.cursor()
            cursor.execute("SELECT pg_backend_pid()")
            pids.append(cursor.fetchone()[0])
            cursor.close()
        return pids
    finally:
        for connection in taken:
            connection.close()


@pytest.fixture
def pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every round-trip check of a pooled connection, as it happens."""
    if database.is_sqlite:
        pytest.skip("a SQLite connection is a file handle: no server can close it")
    seen: list[int] = []
    dialect = database.engine.dialect
    ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        seen.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return seen


def test_connections_closed_by_the_server_are_replaced(
    database: Database, client: Client, plan: dict[str, Any], pings: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(service_db, "PING_AFTER_IDLE", 0.2)
    assert client.get(f"/fhir/CarePlan/{plan['id']}").status_code == 200
    backends = _pooled_backends(database)
    assert backends
    killer = Database(database.url.render_as_string(hide_password=False))
    try:
        with killer.engine.begin() as connection:
            for pid in backends:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        killer.dispose()
    time.sleep(0.4)  # as after a restart: the closed connections have rested since

    read = client.get(f"/fhir/CarePlan/{plan['id']}")
    assert read.status_code == 200, read.text
    search = client.get("/fhir/Goal", params={"patient": plan["patient"]})
    assert search.status_code == 200, search.text
    written = client.post(
        f"/api/v1/care-plans/{plan['id']}/sessions",
        json={"number": 1, "date": "2026-01-05", "status": "attended"},
    )
    assert written.status_code == 201, written.text
    assert pings  # the closed connections were found out by a check, not by a request
    assert not set(_pooled_backends(database)) & set(backends)


def test_connections_in_steady_use_are_not_checked(
    client: Client, plan: dict[str, Any], pings: list[int]
) -> None:
    # Every pooled connection goes round once (the pool hands out the one back longest);
    # one that rested since an earlier test may be checked then, and only then.
    for _ in range(20):
        assert client.get(f"/fhir/CarePlan/{plan['id']}").status_code == 200
    pings.clear()
    for _ in range(20):
        assert client.get(f"/fhir/CarePlan/{plan['id']}").status_code == 200
    assert pings == []
