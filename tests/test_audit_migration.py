"""Migration 0004: audit records keep their facts in columns.

Records written before it keep their stored AuditEvent, and their client is copied into a
column so that the trail is searched by client without reading the stored text.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from test_audit import GOLDEN, GOLDEN_FACTS, columns

from fhir_mappings.audit_event import render_audit_event
from fhir_mappings.projection import serialise
from service.db import Database, normalise_url
from service.models import AuditRecord

TEST_DATABASE_URL = os.environ.get("IPT_TEST_DATABASE_URL")


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Database]:
    """An empty database of its own: a SQLite file, or a private PostgreSQL schema."""
    if not TEST_DATABASE_URL:
        db = Database(f"sqlite:///{tmp_path / 'migrate.db'}")
        yield db
        db.dispose()
        return
    schema = f"migrate_{uuid.uuid4().hex[:12]}"
    admin = Database(TEST_DATABASE_URL)
    with admin.engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = normalise_url(TEST_DATABASE_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    db = Database(url.render_as_string(hide_password=False))
    yield db
    db.dispose()
    with admin.engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


LEGACY_INSERT = text(
    "INSERT INTO audit_events (id, recorded, action, outcome, agent, entity, patient, content) "
    "VALUES (:id, :recorded, :action, :outcome, :agent, :entity, :patient, :content)"
)


def test_records_stored_as_audit_events_keep_them_and_gain_their_client(
    scratch: Database,
) -> None:
    scratch.upgrade("0003")
    with_client, anonymous = GOLDEN_FACTS[0], GOLDEN_FACTS[1]
    stored = {facts.id: serialise(render_audit_event(facts)) for facts in GOLDEN_FACTS[:2]}
    with scratch.engine.begin() as connection:
        for facts in (with_client, anonymous):
            connection.execute(
                LEGACY_INSERT,
                {
                    "id": facts.id,
                    "recorded": facts.recorded.replace(tzinfo=None)
                    if scratch.is_sqlite
                    else facts.recorded,
                    "action": facts.action,
                    "outcome": facts.outcome,
                    "agent": facts.agent,
                    "entity": facts.entity,
                    "patient": facts.patient,
                    "content": stored[facts.id],
                },
            )
    scratch.upgrade()
    with scratch.engine.connect() as connection:
        found = connection.execute(
            text("SELECT id, content, client_id, interaction FROM audit_events ORDER BY id")
        ).all()
    assert [tuple(row) for row in found] == [
        (with_client.id, stored[with_client.id], "client-1", None),
        (anonymous.id, stored[anonymous.id], None, None),
    ]


def test_a_downgrade_stores_the_audit_event_of_every_record(scratch: Database) -> None:
    scratch.upgrade()
    facts = GOLDEN_FACTS[2]
    kept = replace(GOLDEN_FACTS[0], id="0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2e")
    kept_content = serialise(render_audit_event(kept))
    with scratch.engine.begin() as connection:
        connection.execute(insert(AuditRecord), [columns(facts), columns(kept, kept_content)])
    scratch.downgrade("0003")
    with scratch.engine.connect() as connection:
        found = dict(connection.execute(text("SELECT id, content FROM audit_events")).all())
    assert found == {
        facts.id: GOLDEN.read_text(encoding="utf-8").splitlines()[2],
        kept.id: kept_content,
    }
    assert json.loads(found[facts.id])["id"] == facts.id
