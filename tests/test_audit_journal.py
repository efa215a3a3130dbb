"""The audit journal: records committed before their responses leave, moved into the trail.

A request's audit records are committed to ``audit_journal``, a table without secondary
indexes, and move into ``audit_events`` in batches (``service.audit_journal``). A record is
in exactly one of the two at any time, every read of the trail moves the journal first, and
under ``serve`` the audit writer's process moves it in the background.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import requests
from conftest import Client, count_rows
from sqlalchemy import insert, select, text
from test_process import _admin_token, serving

from api.audit import AuditLog
from service import audit_journal
from service.db import Database
from service.models import AuditJournalRecord, AuditRecord, new_id, utcnow

AUDITOR = {"X-Actor": "auditor"}


def _row(patient: str, marker: str | None = None) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id(),
        "recorded": now,
        "started": now,
        "interaction": "read",
        "action": "R",
        "outcome": "0",
        "agent": "journal-test",
        "status": 200,
        "request_id": marker or uuid.uuid4().hex,
        "patient": patient,
    }


def _trail_ids(database: Database) -> list[str]:
    with database.reading() as session:
        return list(session.scalars(select(AuditRecord.id).order_by(AuditRecord.id)))


def test_a_read_is_committed_to_the_journal_and_found_by_a_search_of_the_trail(
    client: Client, database: Database
) -> None:
    plan = client.create_plan(patient="Patient/journal-1")
    read = client.get(f"/fhir/CarePlan/{plan['id']}", headers={"X-Request-ID": "journal-read-1"})
    assert read.status_code == 200
    with database.reading() as session:
        journaled = session.scalars(
            select(AuditJournalRecord.patient).where(
                AuditJournalRecord.request_id == "journal-read-1"
            )
        ).all()
    assert journaled == ["Patient/journal-1"]

    found = client.get(
        "/fhir/AuditEvent", params={"patient": "Patient/journal-1"}, headers=AUDITOR
    ).json()
    reads = [
        e["resource"]
        for e in found.get("entry", [])
        if e["resource"]["action"] == "R"
        and any(
            x.get("what", {}).get("reference") == f"CarePlan/{plan['id']}"
            for x in e["resource"].get("entity", [])
        )
    ]
    assert len(reads) == 1, found
    # The search moved the journal (its own record is journaled after it): the read's
    # record is now in the trail alone.
    with database.reading() as session:
        assert not session.scalars(
            select(AuditJournalRecord.id).where(AuditJournalRecord.request_id == "journal-read-1")
        ).all()
        moved = session.scalars(
            select(AuditRecord.patient).where(AuditRecord.request_id == "journal-read-1")
        ).all()
    assert moved == ["Patient/journal-1"]


def test_a_read_of_one_audit_event_finds_it_while_it_is_in_the_journal(
    client: Client, database: Database
) -> None:
    row = _row("Patient/journal-2")
    AuditLog(database).commit([(row, None)])
    assert count_rows(database, "audit_journal") == 1
    response = client.get(f"/fhir/AuditEvent/{row['id']}", headers=AUDITOR)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == row["id"]


def test_move_takes_every_record_in_batches_and_drops_copies_already_moved(
    database: Database,
) -> None:
    rows = [_row(f"Patient/batch-{i % 3}") for i in range(7)]
    with database.writing() as session:
        session.execute(insert(audit_journal.JOURNAL), rows)
    assert audit_journal.waiting(database) == 7
    assert audit_journal.move(database, batch=3) == 7
    assert audit_journal.waiting(database) == 0
    assert _trail_ids(database) == sorted(r["id"] for r in rows)
    # A record sent again after it moved (a writer that died having committed it): the
    # copy is dropped, and the trail keeps the one it has.
    with database.writing() as session:
        session.execute(insert(audit_journal.JOURNAL), [rows[0]])
    assert audit_journal.move(database) == 1
    assert audit_journal.waiting(database) == 0
    assert _trail_ids(database) == sorted(r["id"] for r in rows)


def test_a_batch_worth_of_records_is_moved_by_the_request_that_completes_it(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_journal, "BATCH", 5)
    audit_log = AuditLog(database)
    for _ in range(4):
        audit_log.commit([(_row("Patient/batch"), None)])
    assert audit_journal.waiting(database) == 4
    assert count_rows(database, "audit_events") == 0
    audit_log.commit([(_row("Patient/batch"), None)])
    assert audit_journal.waiting(database) == 0
    assert count_rows(database, "audit_events") == 5


def test_concurrent_moves_and_commits_leave_every_record_in_the_trail_once(
    database: Database,
) -> None:
    if database.is_sqlite:
        pytest.skip("concurrent moves need PostgreSQL's row locks")
    audit_log = AuditLog(database)
    made: list[str] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def commit() -> None:
        try:
            for _ in range(60):
                row = _row("Patient/concurrent")
                audit_log.commit([(row, None)])
                made.append(row["id"])
        except BaseException as error:
            failures.append(error)

    def keep_moving() -> None:
        try:
            while not stop.is_set():
                audit_journal.move(database, batch=7)
        except BaseException as error:
            failures.append(error)

    committers = [threading.Thread(target=commit) for _ in range(4)]
    movers = [threading.Thread(target=keep_moving) for _ in range(3)]
    for thread in [*committers, *movers]:
        thread.start()
    for thread in committers:
        thread.join(60)
    stop.set()
    for thread in movers:
        thread.join(60)
    assert not failures, failures
    audit_journal.move(database)
    assert audit_journal.waiting(database) == 0
    assert _trail_ids(database) == sorted(made)


@pytest.mark.slow
def test_serve_moves_the_journal_in_the_background(database: Database, tmp_path: Any) -> None:
    env = {
        "IPT_DATABASE_URL": database.url.render_as_string(hide_password=False),
        "IPT_AUTO_MIGRATE": "false",
        "IPT_AUDIT_MOVE_SECONDS": "0.2",
    }
    token = _admin_token(env)
    # A record an earlier server left in the journal moves when the writer starts.
    left = _row("Patient/left-behind")
    with database.writing() as session:
        session.execute(insert(audit_journal.JOURNAL), [left])
    with serving(env, workers=2, log=tmp_path / "serve.log") as server:
        request_id = uuid.uuid4().hex
        response = requests.get(
            f"{server.url}/fhir/metadata",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
            timeout=10,
        )
        assert response.status_code == 200
        missing = requests.get(
            f"{server.url}/fhir/CarePlan/not-there",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
            timeout=10,
        )
        assert missing.status_code == 404
        deadline = time.monotonic() + 20
        while True:
            with database.engine.connect() as connection:
                waiting = connection.execute(text("SELECT count(*) FROM audit_journal")).scalar()
                moved = connection.execute(
                    text("SELECT count(*) FROM audit_events WHERE request_id = :r OR id = :left"),
                    {"r": request_id, "left": left["id"]},
                ).scalar()
            if waiting == 0 and moved == 2:
                break
            assert time.monotonic() < deadline, (waiting, moved)
            time.sleep(0.1)
