"""A realistic population of IPT episodes, loaded fast enough for 100,000 of them.

A few hundred *prototype* episodes are written through the service itself (plans from the
IPT template, attended sessions with PHQ-9 scores, homework), so that their rows, their
published FHIR versions and their search index are exactly what the service writes. The
rest of the population is made of copies of them, inserted in bulk: every id, patient and
identifier is renewed in every copy, including inside the stored FHIR JSON, and each copy's
versions are filed an hour earlier than the next copy's, so that history has a spread.
Each copy is an episode of its own that the service reads, searches and changes like any
other.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import JSON, Connection, Dialect, Table, func, select, text

from fhir_mappings.projection import digest, instant, publish
from service import homework, plans, sessions
from service.db import Database
from service.models import (
    Administration,
    CarePlan,
    Contract,
    Goal,
    Homework,
    Phase,
    PlanChange,
    PlanIdentifier,
    ResourceIdentifier,
    ResourceVersion,
    SafetySignal,
    SearchDate,
    SearchReference,
    SearchToken,
    StoredResource,
    TherapySession,
    new_id,
)

ACTOR = "bench-seed"
IDENTIFIER_SYSTEM = "https://bench.ipt-careplans.org/episode"
PROTOTYPES = 500

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
_INSTANT = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"
# Only the version's own instant moves: other times are the records' and stay as they are.
_RENEWED = re.compile(rf'({_UUID})|bench-p(\d{{6}})|bench-e(\d{{7}})|"lastUpdated":"({_INSTANT})"')

# Tables of a plan, with the integer keys the database assigns (left out of copies) and
# how a row is tied to its plan.
_BY_PLAN = (
    CarePlan,
    PlanIdentifier,
    Contract,
    Phase,
    Goal,
    Homework,
    TherapySession,
    Administration,
    SafetySignal,
    PlanChange,
)
_BY_RESOURCE = (ResourceVersion, SearchToken, SearchReference, SearchDate, ResourceIdentifier)
_GENERATED_KEYS = {
    "plan_identifiers": "id",
    "plan_contracts": "id",
    "plan_changes": "id",
    "resource_versions": "sequence",
    "search_tokens": "row",
    "search_references": "row",
    "search_dates": "row",
}


def patient_reference(number: int) -> str:
    return f"Patient/bench-p{number:06d}"


@dataclass(frozen=True)
class Population:
    episodes: int
    patients: int
    seconds: float


def seed(
    database: Database,
    episodes: int,
    patients: int,
    *,
    prototypes: int = PROTOTYPES,
    random_seed: int = 7,
    progress: Callable[[str], None] = lambda _: None,
) -> Population:
    """Fill an empty, migrated database with ``episodes`` episodes of ``patients`` patients."""
    if episodes < 1 or not 1 <= patients <= episodes:
        raise ValueError("need at least one episode, and between 1 and that many patients")
    with database.reading() as session:
        if session.scalar(select(func.count()).select_from(CarePlan)):
            raise ValueError("the database already holds care plans: seed an empty one")
    started = time.perf_counter()
    prototypes = min(prototypes, episodes)
    # Copies renumber patients by whole blocks, so the prototypes use a matching share.
    copies = -(-episodes // prototypes)
    prototype_patients = max(1, -(-patients // copies))
    if publish not in database.observers:
        database.observers.append(publish)
    _write_prototypes(database, prototypes, prototype_patients, random.Random(random_seed))
    progress(f"{prototypes} prototype episodes written through the service")
    rows = _prototype_rows(database)
    made = prototypes
    for copy in range(1, copies):
        wanted = min(prototypes, episodes - made)
        _insert_copy(database, rows, copy, wanted, prototype_patients, patients, prototypes)
        made += wanted
        if copy % 10 == 0 or made == episodes:
            progress(f"{made} episodes")
    _analyse(database)
    return Population(episodes, patients, time.perf_counter() - started)


# --- prototypes, through the service -------------------------------------------------------

_AREAS: list[tuple[list[str], str | None]] = [
    (["grief"], None),
    (["role-dispute"], "renegotiation"),
    (["role-dispute", "grief"], "impasse"),
    (["role-transition"], None),
    (["role-transition", "role-dispute"], "dissolution"),
    (["interpersonal-deficits"], None),
]
_HOMEWORK = [
    ("reconnect", "Call a friend not seen since the move"),
    ("observe-interaction", "Notice what happens before arguments at home"),
    ("try-new-interaction", "Ask a colleague to lunch"),
    ("assertive-practice", "Say no once to an extra shift"),
    ("reflect-on-conversation", "Write down how the talk with a sister went"),
]


def _write_prototypes(
    database: Database, count: int, patient_count: int, rng: random.Random
) -> None:
    today = datetime.now(UTC).date()
    for start in range(0, count, 50):
        with database.transaction():
            for number in range(start, min(count, start + 50)):
                _write_episode(database, number, number % patient_count, today, rng)


def _write_episode(
    database: Database, number: int, patient: int, today: date, rng: random.Random
) -> None:
    areas, stage = rng.choice(_AREAS)
    draft = rng.random() < 0.08
    begun = today - timedelta(days=rng.randrange(90, 400))
    plan = plans.create_plan(
        database,
        {
            "patient": patient_reference(patient),
            "start_date": begun,
            "problem_areas": areas,
            "dispute_stage": stage,
            "status": "draft" if draft else "active",
            "identifiers": [{"system": IDENTIFIER_SYSTEM, "value": f"bench-e{number:07d}"}],
            "formulation": "Depression began after the loss of a role at work.",
        },
        ACTOR,
    )
    if draft:
        return
    held = rng.randrange(0, min(10, plan.planned_sessions))
    score = rng.randrange(14, 24)
    attended = 0
    for session_number in range(1, held + 1):
        record: dict[str, Any] = {
            "number": session_number,
            "status": "attended",
            "date": begun + timedelta(days=7 * (session_number - 1)),
        }
        if rng.random() < 0.1:
            record["status"] = "no-show"  # and so no PHQ-9 score
        else:
            score = max(0, score - rng.randrange(0, 4))
            record["phq9_total"] = score
            attended += 1
        sessions.record_session(database, plan.id, record, ACTOR)
    for kind, description in rng.sample(_HOMEWORK, rng.randrange(0, 4)):
        task: dict[str, Any] = {
            "kind": kind,
            "description": description,
            "assigned_on": begun + timedelta(days=7 * max(0, held - 1)),
        }
        if not attended:
            task["phase"] = "initial"  # no session attended yet: no phase is under way
        homework.assign_homework(database, plan.id, task, ACTOR)


# --- copies, in bulk ---------------------------------------------------------------------


@dataclass
class _Rows:
    """Every row of the prototypes, grouped by the plan it belongs to."""

    tables: list[Table]
    by_plan: dict[str, dict[str, list[dict[str, Any]]]]
    plan_ids: list[str]
    # The ids of the prototypes' records, in order: a copy's ids keep that order, since
    # records made at the same moment are listed by id.
    record_ids: list[str]


def _prototype_rows(database: Database) -> _Rows:
    by_plan: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    tables: list[Table] = []
    with database.engine.connect() as connection:
        owner = {
            (r.resource_type, r.id): r.plan_id
            for r in connection.execute(
                select(StoredResource.resource_type, StoredResource.id, StoredResource.plan_id)
            )
        }
        for model in (*_BY_PLAN, StoredResource, *_BY_RESOURCE):
            table = cast(Table, model.__table__)
            tables.append(table)
            generated = _GENERATED_KEYS.get(table.name)
            for row in connection.execute(select(table)).mappings():
                values = {k: v for k, v in row.items() if k != generated}
                if model is CarePlan:
                    plan_id = values["id"]
                elif "plan_id" in values and model is not ResourceVersion:
                    plan_id = values["plan_id"]
                else:
                    resource_id = values.get("resource_id", values.get("id"))
                    plan_id = owner[(values["resource_type"], resource_id)]
                by_plan[plan_id][table.name].append(values)
        plan_ids = list(connection.scalars(select(CarePlan.id).order_by(CarePlan.id)))
    record_ids = sorted(
        row["id"]
        for plan_rows in by_plan.values()
        for model in _BY_PLAN
        for row in plan_rows.get(model.__tablename__, [])
        if isinstance(row.get("id"), str)
    )
    return _Rows(tables, by_plan, plan_ids, record_ids)


class _Renewer:
    """Renews every id, patient, identifier and instant of one copy, consistently."""

    def __init__(
        self,
        copy: int,
        prototype_patients: int,
        patients: int,
        prototypes: int,
        shift: timedelta,
        record_ids: list[str],
    ) -> None:
        # New ids are made in the order of the old ones (ids made by a process increase),
        # so records made at the same moment list in the same order in the copy.
        self.ids: dict[str, str] = {old: new_id() for old in record_ids}
        self.patient_offset = copy * prototype_patients
        self.patients = patients
        self.episode_offset = copy * prototypes
        self.shift = shift

    def _swap(self, match: re.Match[str]) -> str:
        uuid, patient, episode, moment = match.groups()
        if uuid is not None:
            if uuid not in self.ids:
                self.ids[uuid] = new_id()
            return self.ids[uuid]
        if patient is not None:
            return f"bench-p{(int(patient) + self.patient_offset) % self.patients:06d}"
        if episode is not None:
            return f"bench-e{int(episode) + self.episode_offset:07d}"
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        return f'"lastUpdated":"{instant(parsed + self.shift)}"'

    def text(self, value: str) -> str:
        return _RENEWED.sub(self._swap, value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            # Codes and names are shorter than anything renewed (13 characters at least).
            return self.text(value) if len(value) >= 13 else value
        if isinstance(value, dict | list):
            return json.loads(self.text(json.dumps(value)))
        return value

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        renewed = {k: self.value(v) for k, v in row.items()}
        if "last_updated" in renewed:
            renewed["last_updated"] += self.shift
        if "digest" in renewed:
            renewed["digest"] = digest(json.loads(renewed["content"]))
        return renewed


def _insert_copy(
    database: Database,
    rows: _Rows,
    copy: int,
    wanted: int,
    prototype_patients: int,
    patients: int,
    prototypes: int,
) -> None:
    # Each copy lies an hour before the one after it, so that history has a real spread.
    renewer = _Renewer(
        copy, prototype_patients, patients, prototypes, timedelta(hours=-copy), rows.record_ids
    )
    chosen = rows.plan_ids[:wanted]
    with database.engine.begin() as connection:
        for table in rows.tables:
            batch = [
                renewer.row(row)
                for plan_id in chosen
                for row in rows.by_plan.get(plan_id, {}).get(table.name, [])
            ]
            if batch:
                _bulk_insert(connection, table, batch)


def _processor(table: Table, name: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    kind = table.c[name].type
    if dialect.name == "postgresql" and isinstance(kind, JSON):
        # COPY takes JSON as text (the driver would send a list as an array); None is JSON
        # null, as the column stores it.
        return json.dumps
    return kind.bind_processor(dialect)


def _bulk_insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows through the driver: COPY on PostgreSQL, executemany on SQLite.

    Values pass through the columns' own bind processors, so they are stored exactly as
    the service stores them.
    """
    columns = list(rows[0])
    dialect = connection.dialect
    processors = [_processor(table, name, dialect) for name in columns]
    values = [
        tuple(
            process(row[name]) if process is not None else row[name]
            for name, process in zip(columns, processors, strict=True)
        )
        for row in rows
    ]
    names = ", ".join(columns)
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        if dialect.name == "postgresql":
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                for row_values in values:
                    copy.write_row(row_values)
        else:
            marks = ", ".join("?" for _ in columns)
            cursor.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", values)
    finally:
        cursor.close()


def _analyse(database: Database) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
