"""FHIR writes applied to the domain: create, update (also create-on-update), delete.

Each write runs in one database transaction that first locks the plan, then compares the
client's ``If-Match`` version with the stored resource's, then goes through the domain's
own functions and rules. The plan's resources are published once, at the end, with the
elements the domain does not model kept verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.parse import episode_from_fhir, goal_from_fhir, phase_from_fhir
from fhir_mappings.parse_common import MappingError
from fhir_mappings.render import HOMEWORK_ACTIVITY_PREFIX, SESSION_ACTIVITY_PREFIX
from service import goals, homework, phase_changes, plans, resource_store, sessions
from service.db import Database
from service.editing import PlanEdit, load_plan
from service.errors import Gone, NotFound, RuleViolation, VersionMismatch
from service.models import CarePlan, StoredResource, new_id

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# Where each domain field lives in the FHIR resources, to name it in errors.
_EPISODE_PATHS = {
    "patient": "CarePlan.subject",
    "status": "CarePlan.status",
    "start_date": "CarePlan.period.start",
    "end_date": "CarePlan.period.end",
    "problem_areas": f"CarePlan.extension('{t.EXT_PROBLEM_AREA}')",
    "dispute_stage": f"CarePlan.extension('{t.EXT_PROBLEM_AREA}')",
    "variant": f"CarePlan.extension('{t.EXT_VARIANT}')",
    "planned_sessions": f"CarePlan.extension('{t.EXT_PLANNED_SESSIONS}')",
    "session_frequency": f"CarePlan.extension('{t.EXT_SESSION_FREQUENCY}')",
    "condition": "CarePlan.addresses",
    "therapist": "CarePlan.author",
    "formulation": "CarePlan.description",
    "notes": "CarePlan.note",
    "identifiers": "CarePlan.identifier",
    "relapse_prevention": f"CarePlan.extension('{t.EXT_RELAPSE_PREVENTION}')",
    # A plan completed with goals still open: the status that cannot be set yet.
    "open_goals": "CarePlan.status",
}
_PHASE_PATHS = {
    "start_session": f"CarePlan.extension('{t.EXT_SESSION_RANGE}')",
    "end_session": f"CarePlan.extension('{t.EXT_SESSION_RANGE}')",
    "status": "CarePlan.status",
    "start_date": "CarePlan.period.start",
    "end_date": "CarePlan.period.end",
    "description": "CarePlan.description",
}
_GOAL_PATHS = {
    "kind": "Goal.category",
    "problem_area": "Goal.category",
    "description": "Goal.description",
    "lifecycle_status": "Goal.lifecycleStatus",
    "achievement_status": "Goal.achievementStatus",
    "priority": "Goal.priority",
    "start_date": "Goal.startDate",
    "target": "Goal.target",
    "phase": f"Goal.extension('{t.EXT_GOAL_PHASE}')",
    "notes": "Goal.note",
}


@dataclass(frozen=True)
class Written:
    """What a write did: the resource it wrote and whether it created it."""

    resource_type: str
    id: str
    created: bool


@contextmanager
def _as_fhir(paths: Mapping[str, str], prefix: str = "") -> Iterator[None]:
    """Name the FHIR element of a domain rule's field in the error."""
    try:
        yield
    except RuleViolation as violation:
        problems = [
            (paths.get(p.field.split(".")[0], prefix or "CarePlan"), f"{p.field}: {p.message}")
            for p in violation.problems
        ] or [(prefix or "CarePlan", violation.message)]
        raise MappingError(problems) from violation


def check_id(resource_type: str, resource_id: str) -> None:
    if not FHIR_ID.match(resource_id):
        raise MappingError(
            [(f"{resource_type}.id", f"{resource_id!r} is not a FHIR id ([A-Za-z0-9-.]{{1,64}})")]
        )


def _kind(resource: Mapping[str, Any]) -> str | None:
    """episode or phase, from the ipt-careplan-kind category."""
    kinds = t.local("ipt-careplan-kind").url
    for concept in resource.get("category", []):
        for coding in concept.get("coding", []):
            if coding.get("system") == kinds:
                return str(coding.get("code"))
    return None


def _stored(session: Any, resource_type: str, resource_id: str) -> StoredResource | None:
    return resource_store.current(session, resource_type, resource_id)


def _lock_and_check(
    database: Database, session: Any, stored: StoredResource, expected_version: int | None
) -> CarePlan:
    """Lock the plan, then compare versions: the check and the write are one transaction."""
    plan = load_plan(session, stored.plan_id, lock=True)
    if database.supports_row_locks:
        # Read again under the plan's lock (on SQLite the whole transaction holds the
        # database's write lock, so what was read is current).
        session.refresh(stored)
    if stored.deleted:
        raise Gone(f"{stored.resource_type}/{stored.id} was deleted")
    if expected_version is not None and expected_version != stored.version_id:
        raise VersionMismatch(
            f"{stored.resource_type}/{stored.id} is at version {stored.version_id}, "
            f"not {expected_version}",
            stored.version_id,
        )
    return plan


def create(
    database: Database, resource: dict[str, Any], actor: str, resource_id: str | None = None
) -> Written:
    """POST: the server picks the id (any id in the body is ignored).

    A transaction Bundle hands over the ids it assigned to rewrite its references.
    """
    return _create(database, resource, actor, resource_id or new_id())


# A Goal as read from its resource: (its episode's id, goal data, extras).
ReadGoal = tuple[str, dict[str, Any], dict[str, Any]]


def _create(
    database: Database,
    resource: dict[str, Any],
    actor: str,
    resource_id: str,
    read: ReadGoal | None = None,
) -> Written:
    resource_type = resource.get("resourceType")
    if resource_type == "Goal" and read is None:
        read = goal_from_fhir(resource)
    with database.transaction():
        if read is not None:
            plan_id, data, extras = read
            _check_goal_plan(database, plan_id, data)
            with _as_fhir(_GOAL_PATHS, "Goal"):
                goals.add_goal(database, plan_id, data, actor, goal_id=resource_id)
            database.attach(plan_id, ("Goal", resource_id), extras)
            return Written("Goal", resource_id, True)
        if _kind(resource) == "phase":
            raise MappingError(
                [
                    (
                        "CarePlan.category",
                        "the phases of a plan are created with its "
                        "episode; change a phase with PUT",
                    )
                ]
            )
        data, extras = episode_from_fhir(resource)
        with _as_fhir(_EPISODE_PATHS):
            plans.create_plan(
                database, {**data, "default_goals": False}, actor, plan_id=resource_id
            )
        database.attach(resource_id, ("CarePlan", resource_id), extras)
        return Written("CarePlan", resource_id, True)


def _check_goal_plan(database: Database, plan_id: str, data: Mapping[str, Any]) -> None:
    """The goal's plan exists and is the subject's; it is locked for the write that follows
    (which finds it loaded).

    A plan of another patient is refused exactly as a plan that does not exist: the
    answer must not tell whose a plan is.
    """
    subject = data.get("patient")
    with database.writing() as session:
        try:
            patient: str | None = load_plan(session, plan_id, lock=True).patient
        except (NotFound, Gone):
            patient = None
    if patient is None or subject not in (None, patient):
        path = f"Goal.extension('{t.EXT_GOAL_EPISODE}')"
        if not subject:
            raise MappingError([(path, f"there is no care plan {plan_id!r}")])
        # The pair is what is missing: the plan named, for the subject named.
        message = f"there is no care plan {plan_id!r} of {subject}"
        raise MappingError([(path, message), ("Goal.subject", message)])


def update(
    database: Database,
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any],
    actor: str,
    expected_version: int | None = None,
) -> Written:
    """PUT: replace a resource's content; create it with this id when it does not exist."""
    check_id(resource_type, resource_id)
    # A Goal is read before the transaction: on SQLite a writer holds the database's write
    # lock for the whole of it, and reading the body needs none.
    read = goal_from_fhir(resource) if resource_type == "Goal" else None
    with database.transaction() as session:
        stored = _stored(session, resource_type, resource_id)
        if stored is None:
            if expected_version is not None:
                raise NotFound(f"{resource_type}/{resource_id} does not exist (If-Match was sent)")
            return _create(database, resource, actor, resource_id, read)
        plan = _lock_and_check(database, session, stored, expected_version)
        # Publish even when the domain has nothing to change: the elements it does not
        # model may be all the client changed. A change the domain makes replaces this one.
        database.notify(PlanEdit(session, plan, actor))
        if read is not None:
            _update_goal(database, stored, read, actor)
        elif stored.id == stored.plan_id:
            _update_episode(database, stored, resource, actor)
        else:
            _update_phase(database, session, stored, resource, actor)
        return Written(resource_type, resource_id, False)


def _update_episode(database: Database, stored: StoredResource, resource: dict, actor: str) -> None:
    if _kind(resource) == "phase":
        raise MappingError([("CarePlan.category", f"CarePlan/{stored.id} is an episode")])
    data, extras = episode_from_fhir(resource)
    with _as_fhir(_EPISODE_PATHS):
        plans.update_plan(database, stored.plan_id, data, actor)
    database.attach(stored.plan_id, ("CarePlan", stored.id), extras)


def _update_goal(database: Database, stored: StoredResource, read: ReadGoal, actor: str) -> None:
    plan_id, data, extras = read
    if plan_id != stored.plan_id:
        raise MappingError(
            [
                (
                    f"Goal.extension('{t.EXT_GOAL_EPISODE}')",
                    f"the goal belongs to CarePlan/{stored.plan_id}; it cannot move",
                )
            ]
        )
    _check_goal_plan(database, plan_id, data)
    data = {k: v for k, v in data.items() if k != "patient"}
    with _as_fhir(_GOAL_PATHS, "Goal"):
        goals.update_goal(database, plan_id, stored.id, data, actor)
    database.attach(plan_id, ("Goal", stored.id), extras)


def _update_phase(
    database: Database, session: Any, stored: StoredResource, resource: dict, actor: str
) -> None:
    phase_data, session_entries, homework_entries, extras = phase_from_fhir(resource)
    plan = load_plan(session, stored.plan_id)
    phase = next(p for p in plan.phases if p.id == stored.id)
    problems = []
    if phase_data.get("code") not in (None, phase.code):
        problems.append(("CarePlan.category", f"CarePlan/{stored.id} is the {phase.code} phase"))
    if phase_data.get("plan_id") not in (None, plan.id):
        problems.append(("CarePlan.partOf", f"the phase is part of CarePlan/{plan.id}"))
    if phase_data.get("patient") not in (None, plan.patient):
        problems.append(("CarePlan.subject", f"the plan is for {plan.patient}"))
    if problems:
        raise MappingError(problems)
    changes = {
        k: v
        for k, v in phase_data.items()
        if k in _PHASE_PATHS and (v is not None or k not in ("start_session", "end_session"))
    }
    with _as_fhir(_PHASE_PATHS):
        phase_changes.update_phase(database, plan.id, phase.code, changes, actor)
    kinds = [(a.get("detail") or {}).get("kind") for a in resource.get("activity") or []]
    at_sessions = [i for i, kind in enumerate(kinds) if kind == "Appointment"]
    at_homework = [i for i, kind in enumerate(kinds) if kind == "Task"]
    new_sessions = _apply_sessions(
        database, plan.id, phase.code, session_entries, at_sessions, actor
    )
    new_homework = _apply_homework(
        database, plan.id, phase.code, homework_entries, at_homework, actor
    )
    written = (extras.get("written") or {}).get("activity")
    if written:
        # The activities the write created are kept as written, with the ids they were given.
        named = {at_sessions[i]: f"{SESSION_ACTIVITY_PREFIX}{row}" for i, row in new_sessions}
        named |= {at_homework[i]: f"{HOMEWORK_ACTIVITY_PREFIX}{row}" for i, row in new_homework}
        extras["written"]["activity"] = [
            {"id": named[i], **entry} if i in named else entry for i, entry in enumerate(written)
        ]
    database.attach(plan.id, ("CarePlan", stored.id), extras)


def _activity_path(index: int) -> str:
    return f"CarePlan.activity[{index}].detail"


def _apply_sessions(
    database: Database,
    plan_id: str,
    code: str,
    entries: list[dict[str, Any]],
    at: list[int],
    actor: str,
) -> list[tuple[int, str]]:
    """Make the phase's sessions those listed: update by activity id, add new, drop absent.

    ``at`` gives each entry's place among the activities; the result, the (entry, row id)
    of each session added.
    """
    added = []
    phase = phase_changes.get_phase(database, plan_id, code)
    current = {
        s.id: s
        for s in sessions.list_sessions(database, plan_id)
        if phase.start_session <= s.number <= phase.end_session
    }
    listed = {e["id"] for e in entries if e.get("id")}
    for row_id, record in current.items():
        if row_id not in listed:
            sessions.delete_session(database, plan_id, record.number, actor)
    for entry_index, entry in enumerate(entries):
        index = at[entry_index]
        path = _activity_path(index)
        number = entry.get("number")
        if number is None or not phase.start_session <= number <= phase.end_session:
            raise MappingError(
                [
                    (
                        f"{path}.extension('{t.EXT_SESSION_NUMBER}')",
                        f"session {number} is not in the {code} phase "
                        f"(sessions {phase.start_session}-{phase.end_session})",
                    )
                ]
            )
        fields = {k: entry.get(k) for k in ("date", "status", "phq9_total", "note")}
        fields["techniques"] = entry.get("techniques") or []
        with _as_fhir({k: path for k in fields} | {"number": path}, path):
            if entry.get("id") in current:
                record = current[entry["id"]]
                if record.number != number:
                    raise MappingError(
                        [
                            (
                                path,
                                f"{SESSION_ACTIVITY_PREFIX}{record.id} is session "
                                f"{record.number}; a session's number does not change",
                            )
                        ]
                    )
                sessions.update_session(database, plan_id, number, fields, actor)
            elif entry.get("id"):
                raise MappingError(
                    [(f"CarePlan.activity[{index}].id", f"no session {entry['id']} in this phase")]
                )
            else:
                record = sessions.record_session(
                    database, plan_id, {**fields, "number": number}, actor
                )
                added.append((entry_index, record.id))
    return added


def _apply_homework(
    database: Database,
    plan_id: str,
    code: str,
    entries: list[dict[str, Any]],
    at: list[int],
    actor: str,
) -> list[tuple[int, str]]:
    """Make the phase's homework that listed, matched by activity id (``at`` and the
    result as for ``_apply_sessions``)."""
    added = []
    current = {h.id: h for h in homework.list_homework(database, plan_id) if h.phase == code}
    listed = {e["id"] for e in entries if e.get("id")}
    for row_id in current:
        if row_id not in listed:
            homework.delete_homework(database, plan_id, row_id, actor)
    names = ("goal_id", "kind", "description", "assigned_on", "due_on", "status", "patient_report")
    for entry_index, entry in enumerate(entries):
        index = at[entry_index]
        path = _activity_path(index)
        fields = {k: entry.get(k) for k in names} | {"phase": code}
        with _as_fhir(dict.fromkeys(names, path), path):
            if entry.get("id") in current:
                homework.update_homework(database, plan_id, entry["id"], fields, actor)
            elif entry.get("id"):
                raise MappingError(
                    [
                        (
                            f"CarePlan.activity[{index}].id",
                            f"no {HOMEWORK_ACTIVITY_PREFIX}{entry['id']} in this phase",
                        )
                    ]
                )
            else:
                added.append(
                    (entry_index, homework.assign_homework(database, plan_id, fields, actor).id)
                )
    return added


def delete(
    database: Database,
    resource_type: str,
    resource_id: str,
    actor: str,
    expected_version: int | None = None,
) -> None:
    """DELETE: a Goal, or an episode with everything in it; phases go with their episode."""
    with database.transaction() as session:
        stored = _stored(session, resource_type, resource_id)
        if stored is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist")
        if stored.deleted:
            return
        _lock_and_check(database, session, stored, expected_version)
        if resource_type == "Goal":
            goals.delete_goal(database, stored.plan_id, resource_id, actor)
        elif stored.id == stored.plan_id:
            plans.delete_plan(database, stored.plan_id, actor)
        else:
            raise RuleViolation(
                f"CarePlan/{resource_id} is a phase: it is deleted with its episode "
                f"CarePlan/{stored.plan_id}"
            )
