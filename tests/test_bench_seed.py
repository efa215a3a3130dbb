"""The benchmark's population: copies of the prototype episodes are episodes of their own,
consistent in every table and in the stored FHIR documents, served like any other."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import pytest
from conftest import Client
from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from fhir.resources.R4B.goal import Goal as FhirGoal
from sqlalchemy import func, select

from bench.seed import IDENTIFIER_SYSTEM, seed
from bench.workload import _lua, workload
from fhir_mappings.projection import digest, instant
from service.db import Database
from service.models import (
    Administration,
    CarePlan,
    Goal,
    Homework,
    Phase,
    PlanIdentifier,
    ResourceVersion,
    SafetySignal,
    SearchReference,
    StoredResource,
    TherapySession,
)

EPISODES, PATIENTS, PROTOTYPES = 45, 12, 10
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def population(database: Database) -> Database:
    made = seed(database, EPISODES, PATIENTS, prototypes=PROTOTYPES)
    assert (made.episodes, made.patients) == (EPISODES, PATIENTS)
    return database


def test_every_episode_is_its_own(population: Database) -> None:
    with population.reading() as session:
        plans = session.execute(select(CarePlan.id, CarePlan.patient)).all()
        values = list(session.scalars(select(PlanIdentifier.value)))
    assert len(plans) == EPISODES
    assert len({p.id for p in plans}) == EPISODES
    assert len({p.patient for p in plans}) == PATIENTS
    assert len(set(values)) == EPISODES


def test_copies_hold_only_their_own_ids(population: Database) -> None:
    """No id of a prototype survives in a copy: each plan's documents name only its own
    records (plan, phases, goals, sessions, homework, scores and safety signals)."""
    owned: dict[str, set[str]] = defaultdict(set)
    with population.reading() as session:
        for model in (Phase, Goal, TherapySession, Homework, Administration, SafetySignal):
            for plan_id, record_id in session.execute(select(model.plan_id, model.id)):
                owned[plan_id].add(record_id)
        for plan_id in session.scalars(select(CarePlan.id)):
            owned[plan_id].add(plan_id)
        documents = session.execute(select(StoredResource.plan_id, StoredResource.content)).all()
        for plan_id, content in documents:
            assert set(UUID.findall(content)) <= owned[plan_id]
        references = session.execute(
            select(StoredResource.plan_id, SearchReference.target).join(
                StoredResource,
                (StoredResource.resource_type == SearchReference.resource_type)
                & (StoredResource.id == SearchReference.resource_id),
            )
        ).all()
        assert references
        for plan_id, target in references:
            assert set(UUID.findall(target)) <= owned[plan_id]


def test_stored_documents_are_consistent(population: Database) -> None:
    """Digests match the content (no spurious version on the next write), and every
    version's meta.lastUpdated is the instant it is filed under."""
    with population.reading() as session:
        for content, fingerprint in session.execute(
            select(StoredResource.content, StoredResource.digest)
        ):
            assert digest(json.loads(content)) == fingerprint
        for content, moment in session.execute(
            select(ResourceVersion.content, ResourceVersion.last_updated)
        ):
            assert json.loads(content)["meta"]["lastUpdated"] == instant(moment)
        moments = session.scalar(select(func.count(func.distinct(ResourceVersion.last_updated))))
    # One write time per transaction (the prototypes take one), and each copy an hour apart.
    assert moments == -(-EPISODES // PROTOTYPES)


def test_copies_are_served_searched_and_written(population: Database, client: Client) -> None:
    with population.reading() as session:
        plans = session.execute(select(CarePlan.id, CarePlan.patient)).all()
    by_patient: dict[str, set[str]] = defaultdict(set)
    for plan_id, patient in plans:
        by_patient[patient].add(plan_id)
    last = plans[-1]  # made by the last copy
    episode = client.get(f"/fhir/CarePlan/{last.id}").json()
    FhirCarePlan.model_validate(episode)
    assert episode["subject"]["reference"] == last.patient
    assert episode["identifier"][0]["system"] == IDENTIFIER_SYSTEM
    for reference in episode.get("goal", []):
        goal = client.get(f"/fhir/{reference['reference']}").json()
        FhirGoal.model_validate(goal)
        assert goal["subject"]["reference"] == last.patient
    found = client.get("/fhir/CarePlan", params={"patient": last.patient, "_count": 200}).json()
    episodes = {
        e["resource"]["id"] for e in found.get("entry", []) if e["resource"]["id"] in dict(plans)
    }
    assert episodes == by_patient[last.patient]
    # A copy takes writes like any episode, and only what changed gets a new version.
    before = client.get(f"/fhir/CarePlan/{last.id}").json()["meta"]["versionId"]
    response = client.post(
        f"/api/v1/care-plans/{last.id}/homework",
        json={"kind": "reconnect", "phase": "middle", "description": "Call an old friend"},
    )
    assert response.status_code == 201, response.text
    assert client.get(f"/fhir/CarePlan/{last.id}").json()["meta"]["versionId"] == before


def test_workload_and_its_lua_form(population: Database) -> None:
    data = workload(population, "a-token", threads=3)
    assert set(data["episodes"]) <= set(_plan_ids(population))
    assert data["writable"] and all(w["area"] for w in data["writable"])
    assert all(n["next"] <= n["last"] for n in data["native"])
    assert "@@EPISODE@@" in data["goal_create"] and "@@AREA@@" in data["goal_create"]
    assert '"id": "@@ID@@"' in data["goal_update"]
    text = _lua({"a": 'say "hi"\\ now\n', "b": [1, 2.5, True]})
    assert text == '{["a"]="say \\"hi\\"\\\\ now\\n",["b"]={1,2.5,true}}'


def _plan_ids(database: Database) -> list[Any]:
    with database.reading() as session:
        return list(session.scalars(select(CarePlan.id)))
