"""No response holding patient data leaves before its audit record is committed.

Reads, searches and refusals are recorded before their response is sent, a group of
concurrent requests per transaction (``api.audit.AuditLog``; under ``serve``, one writer
process for all workers, ``api.audit_writer``). A response whose record cannot be committed
is replaced by a 503, and a server killed at any moment has a record of every read it
answered.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from conftest import Client
from prometheus_client import REGISTRY
from sqlalchemy import text
from test_process import EPISODE, _admin_token, serving

from api.audit import AuditLog
from service.db import Database
from service.models import new_id, utcnow

pytestmark = pytest.mark.slow


def _row(marker: str) -> dict[str, object]:
    now = utcnow()
    return {
        "id": new_id(),
        "recorded": now,
        "started": now,
        "interaction": "read",
        "action": "R",
        "outcome": "0",
        "agent": "durability-test",
        "status": 200,
        "request_id": marker,
        "patient": "Patient/durability",
    }


def _request_ids(database: Database, ids: list[str]) -> set[str]:
    """Which of these request ids have an audit record."""
    found: set[str] = set()
    with database.engine.connect() as connection:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(f":p{i}" for i in range(len(chunk)))
            query = text(f"SELECT request_id FROM audit_events WHERE request_id IN ({marks})")
            parameters = {f"p{i}": value for i, value in enumerate(chunk)}
            found |= {row[0] for row in connection.execute(query, parameters)}
    return found


def _commits() -> float:
    return REGISTRY.get_sample_value("ipt_audit_commits_total", {"outcome": "committed"}) or 0.0


@pytest.fixture
def write_lock(database: Database) -> Iterator[threading.Event]:
    """Holds the database's write lock on the audit table until the event is set."""
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with database.writing() as session:
            if not database.is_sqlite:
                session.execute(text("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE"))
            else:
                # BEGIN IMMEDIATE has taken SQLite's write lock; write so that it is held.
                session.execute(text("DELETE FROM audit_events WHERE id = 'none'"))
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    yield release
    release.set()
    holder.join()


def test_concurrent_requests_share_a_commit_and_each_waits_for_its_own(
    database: Database, write_lock: threading.Event
) -> None:
    audit_log = AuditLog(database)
    before = _commits()
    markers = [f"group-{uuid.uuid4().hex[:12]}" for _ in range(20)]
    returned: list[str] = []

    def commit(marker: str) -> None:
        audit_log.commit([(_row(marker), None)])
        returned.append(marker)

    threads = [threading.Thread(target=commit, args=(marker,)) for marker in markers]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    # The first request's transaction waits for the lock; nobody has returned.
    assert returned == []
    write_lock.set()
    for thread in threads:
        thread.join(10)
    assert sorted(returned) == sorted(markers)
    assert _request_ids(database, markers) == set(markers)
    # One transaction for the first request, and one for all that came while it waited.
    assert _commits() - before == 2


def test_a_request_alone_commits_its_own_records_at_once(database: Database) -> None:
    audit_log = AuditLog(database)
    marker = f"alone-{uuid.uuid4().hex[:12]}"
    audit_log.commit([(_row(marker), None)])
    assert _request_ids(database, [marker]) == {marker}


@contextmanager
def refusing(database: Database) -> Iterator[None]:
    """The audit table refuses every new row (a trigger), until the test ends."""
    with database.engine.begin() as connection:
        if database.is_sqlite:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
                )
            )
    try:
        yield
    finally:
        with database.engine.begin() as connection:
            if database.is_sqlite:
                connection.execute(text("DROP TRIGGER refuse_audit"))
            else:
                connection.execute(text("DROP TRIGGER refuse_audit ON audit_events"))
                connection.execute(text("DROP FUNCTION refuse_audit()"))


def test_a_read_that_cannot_be_recorded_is_not_answered(client: Client, database: Database) -> None:
    plan = client.create_plan(patient="Patient/unrecorded-1")
    cases = [
        (f"/fhir/CarePlan/{plan['id']}", "application/fhir+json"),
        ("/fhir/CarePlan?patient=Patient/unrecorded-1", "application/fhir+json"),
        (f"/api/v1/care-plans/{plan['id']}", "application/problem+json"),
        ("/api/v1/care-plans", "application/problem+json"),
    ]
    with refusing(database):
        for path, media_type in cases:
            response = client.get(path)
            assert response.status_code == 503, path
            assert response.headers["Content-Type"].startswith(media_type), path
            assert response.headers["Retry-After"] == "1"
            # Nothing of the plan: only the error (which names the path asked for).
            assert "unrecorded-1" not in response.text
            assert '"CarePlan"' not in response.text and "phases" not in response.text
            assert "audit" in response.text
    for path, _ in cases:
        assert client.get(path).status_code == 200, path


# --- the server as deployed, killed ------------------------------------------------------


def _read_until_killed(
    url: str, token: str, plan_id: str, stop: threading.Event
) -> tuple[list[str], int]:
    """Read the plan on 8 connections until ``stop``; the request ids answered 200, and
    how many requests failed (refused or cut off)."""
    answered: list[str] = []
    failed = 0
    lock = threading.Lock()

    def reader() -> None:
        nonlocal failed
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        while not stop.is_set():
            request_id = uuid.uuid4().hex
            try:
                response = http.get(
                    f"{url}/fhir/CarePlan/{plan_id}",
                    headers={"X-Request-ID": request_id},
                    timeout=10,
                )
            except requests.RequestException:
                with lock:
                    failed += 1
                continue
            with lock:
                if response.status_code == 200:
                    assert plan_id in response.text
                    answered.append(request_id)
                else:
                    failed += 1

    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(reader)
    return answered, failed


def _serve_env(database: Database) -> dict[str, str]:
    return {
        "IPT_DATABASE_URL": database.url.render_as_string(hide_password=False),
        "IPT_AUTO_MIGRATE": "false",
    }


def _plan(url: str, token: str) -> str:
    episode = {**EPISODE, "subject": {"reference": f"Patient/killed-{uuid.uuid4().hex[:8]}"}}
    episode.pop("identifier", None)
    created = requests.post(
        f"{url}/fhir/CarePlan",
        json=episode,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _writer_pid(server_pid: int) -> int:
    for child in Path(f"/proc/{server_pid}/task").glob("*/children"):
        for pid in child.read_text().split():
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"api.audit_writer" in command:
                return int(pid)
    raise AssertionError("no audit writer process")


def test_every_read_answered_before_a_sigkill_is_recorded(
    database: Database, tmp_path: Path
) -> None:
    env = _serve_env(database)
    token = _admin_token(env)
    with serving(env, workers=2, log=tmp_path / "serve.log") as server:
        plan_id = _plan(server.url, token)
        stop = threading.Event()
        result: list[tuple[list[str], int]] = []
        readers = threading.Thread(
            target=lambda: result.append(_read_until_killed(server.url, token, plan_id, stop))
        )
        readers.start()
        time.sleep(1.5)
        # The master, its workers and the audit writer, all at once and without warning.
        writer = _writer_pid(server.process.pid)
        workers = [int(pid) for pid in _children(server.process.pid)]
        for pid in {server.process.pid, writer, *workers}:
            os.kill(pid, signal.SIGKILL)
        stop.set()
        readers.join(30)
        server.process.wait(10)
    answered, _ = result[0]
    assert len(answered) > 20, "the readers were not answered before the kill"
    assert _request_ids(database, answered) == set(answered)


def test_a_killed_audit_writer_is_restarted_and_no_answered_read_is_unrecorded(
    database: Database, tmp_path: Path
) -> None:
    env = _serve_env(database)
    token = _admin_token(env)
    with serving(env, workers=2, log=tmp_path / "serve.log") as server:
        plan_id = _plan(server.url, token)
        stop = threading.Event()
        result: list[tuple[list[str], int]] = []
        readers = threading.Thread(
            target=lambda: result.append(_read_until_killed(server.url, token, plan_id, stop))
        )
        readers.start()
        time.sleep(1.0)
        first = _writer_pid(server.process.pid)
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(2.5)
        stop.set()
        readers.join(30)
        restarted = _writer_pid(server.process.pid)
        assert restarted != first
        # Reads are answered again once the new writer listens.
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        response = http.get(f"{server.url}/fhir/CarePlan/{plan_id}", timeout=10)
        assert response.status_code == 200
        assert time.monotonic() - killed_at < 30
    answered, _ = result[0]
    assert len(answered) > 20
    assert _request_ids(database, answered) == set(answered)


def _children(pid: int) -> list[str]:
    found: list[str] = []
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        found.extend(child.read_text().split())
    return found


def test_serve_commits_records_in_its_audit_writer(database: Database, tmp_path: Path) -> None:
    """Under serve, the workers hand their records to one writer process."""
    env = _serve_env(database)
    token = _admin_token(env)
    with serving(env, workers=2, log=tmp_path / "serve.log") as server:
        assert _writer_pid(server.process.pid)
        plan_id = _plan(server.url, token)
        request_id = uuid.uuid4().hex
        response = requests.get(
            f"{server.url}/fhir/CarePlan/{plan_id}",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
            timeout=10,
        )
        assert response.status_code == 200
        # Committed before the response was sent: there at once.
        assert _request_ids(database, [request_id]) == {request_id}
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert 'ipt_audit_commits_total{outcome="committed"}' in metrics
