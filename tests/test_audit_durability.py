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
            # Committed is enough: in the journal, or moved from it into the trail.
            query = text(
                f"SELECT request_id FROM audit_journal WHERE request_id IN ({marks}) "
                f"UNION SELECT request_id FROM audit_events WHERE request_id IN ({marks})"
            )
            parameters = {f"p{i}": value for i, value in enumerate(chunk)}
            found |= {row[0] for row in connection.execute(query, parameters)}
    return found


def _commits() -> float:
    return REGISTRY.get_sample_value("ipt_audit_commits_total", {"outcome": "committed"}) or 0.0


@pytest.fixture
def write_lock(database: Database) -> Iterator[threading.Event]:
    """Holds the database's write lock on the audit journal until the event is set."""
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with database.writing() as session:
            if not database.is_sqlite:
                session.execute(text("LOCK TABLE audit_journal IN SHARE ROW EXCLUSIVE MODE"))
            else:
                # BEGIN IMMEDIATE has taken SQLite's write lock; write so that it is held.
                session.execute(text("DELETE FROM audit_journal WHERE id = 'none'"))
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
    """Alone, a request's records are committed in one transaction of its own before
    ``commit`` returns: another connection reads them right then."""
    audit_log = AuditLog(database)
    marker = f"alone-{uuid.uuid4().hex[:12]}"
    independent = Database(database.url.render_as_string(hide_password=False))
    try:
        assert _request_ids(independent, [marker]) == set()
        before = _commits()
        audit_log.commit([(_row(marker), None)])
        assert _request_ids(independent, [marker]) == {marker}
        assert _commits() - before == 1
    finally:
        independent.dispose()


@contextmanager
def refusing(database: Database) -> Iterator[None]:
    """The audit journal refuses every new row (a trigger), until the test ends."""
    with database.engine.begin() as connection:
        if database.is_sqlite:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_journal "
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
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_journal "
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
                connection.execute(text("DROP TRIGGER refuse_audit ON audit_journal"))
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


class Readers:
    """8 connections reading one plan over and over, from their own threads."""

    def __init__(self, url: str, token: str, plan_id: str) -> None:
        self.url, self.token, self.plan_id = url, token, plan_id
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered: list[str] = []  # request ids answered 200
        self.failed = 0  # refused or cut off
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._read) for _ in range(8)]

    def _read(self) -> None:
        try:
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {self.token}"
            while not self.stop.is_set():
                request_id = uuid.uuid4().hex
                try:
                    response = http.get(
                        f"{self.url}/fhir/CarePlan/{self.plan_id}",
                        headers={"X-Request-ID": request_id},
                        timeout=10,
                    )
                except requests.RequestException:
                    with self.lock:
                        self.failed += 1
                    continue
                with self.lock:
                    if response.status_code == 200:
                        assert self.plan_id in response.text
                        self.answered.append(request_id)
                    else:
                        self.failed += 1
        except BaseException as error:  # seen by the test, not lost in the thread
            self.errors.append(error)

    def count(self) -> int:
        with self.lock:
            return len(self.answered)

    def wait_for_answers(self, count: int, timeout: float = 60) -> None:
        """Until more than ``count`` reads have been answered."""
        deadline = time.monotonic() + timeout
        while self.count() <= count:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"only {self.count()} reads answered"
            time.sleep(0.05)


@contextmanager
def reading(url: str, token: str, plan_id: str) -> Iterator[Readers]:
    """Readers of the plan, stopped (and their threads ended) when the block ends."""
    readers = Readers(url, token, plan_id)
    for thread in readers.threads:
        thread.start()
    try:
        yield readers
    finally:
        readers.stop.set()
        for thread in readers.threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in readers.threads)
    assert not readers.errors, readers.errors


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
        with reading(server.url, token, plan_id) as readers:
            # Readers answered before the kill, and reading while it comes.
            readers.wait_for_answers(20)
            # The master, its workers and the audit writer, all at once and without warning.
            writer = _writer_pid(server.process.pid)
            workers = [int(pid) for pid in _children(server.process.pid)]
            for pid in {server.process.pid, writer, *workers}:
                os.kill(pid, signal.SIGKILL)
        server.process.wait(10)
    assert len(readers.answered) > 20, "the readers were not answered before the kill"
    assert _request_ids(database, readers.answered) == set(readers.answered)


def _new_writer_pid(server_pid: int, killed: int) -> int | None:
    try:
        found = _writer_pid(server_pid)
    except AssertionError:  # between the old writer's death and the new one's start
        return None
    return found if found != killed else None


def test_a_killed_audit_writer_is_restarted_and_no_answered_read_is_unrecorded(
    database: Database, tmp_path: Path
) -> None:
    env = _serve_env(database)
    token = _admin_token(env)
    with serving(env, workers=2, log=tmp_path / "serve.log") as server:
        plan_id = _plan(server.url, token)
        with reading(server.url, token, plan_id) as readers:
            readers.wait_for_answers(20)
            first = _writer_pid(server.process.pid)
            os.kill(first, signal.SIGKILL)
            killed_at = time.monotonic()
            answered_at_kill = readers.count()
            # The readers go on through the restart, until reads are answered again: more
            # than the 8 that may have been in flight when the writer was killed.
            readers.wait_for_answers(answered_at_kill + 20, timeout=30)
        restarted = _new_writer_pid(server.process.pid, first)
        assert restarted is not None
        # Reads are answered again once the new writer listens.
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        response = http.get(f"{server.url}/fhir/CarePlan/{plan_id}", timeout=10)
        assert response.status_code == 200
        assert time.monotonic() - killed_at < 30
    assert len(readers.answered) > 20
    assert _request_ids(database, readers.answered) == set(readers.answered)


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
