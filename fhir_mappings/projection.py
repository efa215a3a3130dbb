"""Publishing: after every change to a plan, its FHIR resources are rendered and stored.

Runs inside the write transaction of the change (as an observer of ``service.editing``),
so the FHIR view never lags the domain. A resource gets a new version only when its
content changed; elements a client wrote that the domain does not model are merged back
verbatim, and those it does come back as written while they mean what the domain holds
(verbatim.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from fhir_mappings import outbox
from fhir_mappings.render import render_episode, render_goal, render_phase
from fhir_mappings.render_measures import latest_scores, render_flag, render_response, render_score
from fhir_mappings.search_parameters import DateRange, Token, index_values
from fhir_mappings.verbatim import merged, needed
from service import progress, resource_store
from service.administrations import ENTITY as ADMINISTRATION
from service.administrations import SIGNAL_ENTITY
from service.editing import PlanEdit
from service.instruments import BY_TOTAL_CODE, INSTRUMENTS
from service.models import (
    Administration,
    CarePlan,
    Goal,
    Homework,
    SafetySignal,
    StoredResource,
    TherapySession,
)
from service.resource_store import Document

# Elements of a stored document that change with every version, not with its content.
_VERSION_META = ("versionId", "lastUpdated")


def instant(moment: datetime) -> str:
    """A FHIR instant: UTC with milliseconds."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def serialise(resource: dict[str, Any]) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def digest(resource: dict[str, Any]) -> str:
    meta = {k: v for k, v in resource.get("meta", {}).items() if k not in _VERSION_META}
    body = {**resource, "meta": meta}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _live(session: Any, model: Any, plan_id: str, ids: set[str] | None = None) -> list[Any]:
    """The live rows of a plan (those of ``ids`` only, when given), in the order they were
    created."""
    query = select(model).where(model.plan_id == plan_id, model.deleted_at.is_(None))
    if ids is not None:
        if not ids:
            return []
        query = query.where(model.id.in_(sorted(ids)))
    return list(session.scalars(query.order_by(model.created_at, model.id)))


# What orders each live score of a plan: enough to find the latest of each instrument.
_SCORE_ORDER = select(
    Administration.instrument,
    Administration.administered_on,
    Administration.session_number,
    Administration.created_at,
    Administration.id,
    Administration.total,
).where(Administration.plan_id == bindparam("plan_id"), Administration.deleted_at.is_(None))


def _latest_of_plan(
    session: Any, plan_id: str, goals: list[Goal], known: Mapping[str, list[progress.Score]]
) -> dict[str, str]:
    """:func:`latest_scores` for these goals' measures: from the ``known`` courses (by
    instrument key) when they hold every one, else from the plan's live administrations,
    read as columns."""
    wanted = {
        BY_TOTAL_CODE[g.target_measure].key for g in goals if g.target_measure in BY_TOTAL_CODE
    }
    courses: dict[str, list[progress.Score]] = {}
    if wanted <= known.keys():
        courses = {key: known[key] for key in wanted}
    else:
        for instrument, *order in session.execute(_SCORE_ORDER, {"plan_id": plan_id}):
            courses.setdefault(instrument, []).append(progress.Score(*order))
    return {
        INSTRUMENTS[key].total_code: progress.in_order(course)[-1].id
        for key, course in courses.items()
        if key in INSTRUMENTS and course
    }


Key = tuple[str, str]
# What the episode and its phases render of a goal, besides its being there (created or
# deleted) and its phase: its id and its description (see ``render_episode``).
_SHOWN_BY_PLANS = frozenset({"description"})
# The resources an administration publishes, each with the administration's id.
SCORE_TYPES = ("QuestionnaireResponse", "Observation")


def render_plan(
    session: Any,
    plan: CarePlan,
    only: set[Key] | None = None,
    courses: Mapping[str, list[progress.Score]] | None = None,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The FHIR resources of a plan, (type, id, resource): every one, or ``only`` those
    (of its resources that exist). ``courses``: the courses of scores of instruments, by
    key, as they are now (see ``PlanEdit.courses``), which need not be read again.

    Rendering ``only`` some reads only what they are rendered from: the goals, scores and
    flags among them (every goal for the episode or a phase), a phase's sessions and
    homework, and the latest score of each instrument for a goal (as columns).
    """

    def wanted(resource_type: str) -> set[str] | None:
        return None if only is None else {i for kind, i in only if kind == resource_type}

    episode = only is None or ("CarePlan", plan.id) in only
    phases = [p for p in plan.phases if only is None or ("CarePlan", p.id) in only]
    goal_ids, flag_ids = wanted("Goal"), wanted("Flag")
    response_ids, observation_ids = wanted("QuestionnaireResponse"), wanted("Observation")
    score_ids = None if only is None else {*(response_ids or ()), *(observation_ids or ())}
    goals: list[Goal] = (
        _live(session, Goal, plan.id)
        if episode or phases
        else _live(session, Goal, plan.id, goal_ids)
    )
    sessions: list[TherapySession] = _live(session, TherapySession, plan.id) if phases else []
    homework: list[Homework] = _live(session, Homework, plan.id) if phases else []
    rendered_goals = [g for g in goals if goal_ids is None or g.id in goal_ids]
    scores: list[Administration] = _live(session, Administration, plan.id, score_ids)
    signals: list[SafetySignal] = _live(session, SafetySignal, plan.id, flag_ids)
    latest: dict[str, str] = {}
    if rendered_goals:
        latest = (
            latest_scores(scores)
            if only is None
            else _latest_of_plan(session, plan.id, rendered_goals, courses or {})
        )
    if episode:
        yield "CarePlan", plan.id, render_episode(plan, goals)
    for phase in phases:
        yield (
            "CarePlan",
            phase.id,
            render_phase(
                plan,
                phase,
                sorted(
                    (s for s in sessions if phase.start_session <= s.number <= phase.end_session),
                    key=lambda s: s.number,
                ),
                [h for h in homework if h.phase == phase.code],
                [g for g in goals if g.phase == phase.code],
            ),
        )
    for goal in rendered_goals:
        yield "Goal", goal.id, render_goal(plan, goal, latest)
    for administration in scores:
        if response_ids is None or administration.id in response_ids:
            yield "QuestionnaireResponse", administration.id, render_response(plan, administration)
        if observation_ids is None or administration.id in observation_ids:
            yield "Observation", administration.id, render_score(plan, administration)
    for signal in signals:
        if flag_ids is None or signal.id in flag_ids:
            yield "Flag", signal.id, render_flag(plan, signal)


def _measured_goals(session: Any, plan_id: str, measure: str) -> set[Key]:
    """The goals whose target is the total ``measure``: their outcome is its latest score."""
    ids = session.scalars(
        select(Goal.id).where(
            Goal.plan_id == plan_id, Goal.deleted_at.is_(None), Goal.target_measure == measure
        )
    )
    return {("Goal", goal_id) for goal_id in ids}


def affected(edit: PlanEdit) -> set[Key] | None:
    """The resources an edit's changes can alter; None when it may be any of the plan's.

    What each resource is rendered from (see ``render_plan``): the episode from the plan and
    its goals; a phase from the plan, the phase, and the sessions, homework and goals in it
    (of a goal, both show only its description: a change to its status or target alters
    the Goal alone);
    a goal from the plan, the goal and the latest score of its measure; an administration's
    QuestionnaireResponse and Observation from the plan and the administration; a safety
    signal's Flag from the plan and the signal. A change to the plan or a phase can reach
    them all. Resources a FHIR client wrote are included: their verbatim elements may be all
    it changed.
    """
    plan = edit.plan
    keys: set[Key] = set(edit.attachments or {})
    phase_of = {phase.code: phase.id for phase in plan.phases}

    def phases(code: Any = None, number: Any = None) -> set[Key]:
        return {
            ("CarePlan", phase.id)
            for phase in plan.phases
            if phase.code == code
            or (number is not None and phase.start_session <= number <= phase.end_session)
        }

    for change in edit.changes:
        record = change.record
        if change.entity == "goal":
            if "phase" in change.fields:
                return None  # the goal leaves one phase's list for another's
            keys.add(("Goal", record.id))
            if change.action != "update" or _SHOWN_BY_PLANS.intersection(change.fields):
                keys |= {("CarePlan", plan.id), *phases(code=record.phase)}
        elif change.entity == "session":
            if "number" in change.fields:
                return None
            keys |= phases(number=record.number)
        elif change.entity == "homework":
            if "phase" in change.fields or record.phase not in phase_of:
                return None
            keys |= phases(code=record.phase)
        elif change.entity == ADMINISTRATION:
            keys |= {(kind, record.id) for kind in SCORE_TYPES}
            measure = INSTRUMENTS[record.instrument].total_code
            keys |= _measured_goals(edit.session, plan.id, measure)
        elif change.entity == SIGNAL_ENTITY:
            keys.add(("Flag", record.id))
        else:  # the plan itself, its phases, or anything else
            return None
    return keys


def publish(edit: PlanEdit) -> None:
    """Store a new version of every resource the edit can alter whose content changed.

    ``edit.attachments`` holds, per (type, id), the extras of resources a FHIR client just
    wrote: the elements the domain does not model, kept verbatim.
    """
    written = edit.attachments
    session, plan, now = edit.session, edit.plan, edit.now
    only = None if plan.is_deleted else affected(edit)
    stored = {
        (s.resource_type, s.id): s
        for s in (
            resource_store.of_plan(session, plan.id)
            if only is None
            else resource_store.of_keys(session, plan.id, only)
        )
    }
    appends = resource_store.Appends()
    deleted_content: dict[Key, str] = {}
    if not plan.is_deleted:
        for resource_type, resource_id, resource in render_plan(session, plan, only, edit.courses):
            key = (resource_type, resource_id)
            existing = stored.pop(key, None)
            extras = (written or {}).get(key)
            _publish_one(session, plan.id, resource, existing, extras, now, appends)
    # Resources no longer rendered: their goal or administration (or the whole plan) was
    # deleted.
    for leftover in stored.values():
        if not leftover.deleted:
            deleted_content[(leftover.resource_type, leftover.id)] = leftover.content
            resource_store.mark_deleted(
                session, leftover, now, previous=_indexed_by(leftover), appends=appends
            )
    resource_store.write_appends(session, appends)
    if appends.versions:
        outbox.record(session, appends.versions, deleted_content, _causes(edit), now)


def _causes(edit: PlanEdit) -> dict[Key, frozenset[str]]:
    """The domain changes behind the edit's versions that a topic asks about: a session
    recorded (or changed) is a change of the phase CarePlan whose sessions hold it."""
    causes: dict[Key, set[str]] = {}
    for change in edit.changes:
        if change.entity != "session":
            continue
        for phase in edit.plan.phases:
            if phase.start_session <= change.record.number <= phase.end_session:
                causes.setdefault(("CarePlan", phase.id), set()).add(f"session.{change.action}")
    return {key: frozenset(found) for key, found in causes.items()}


def _publish_one(
    session: Any,
    plan_id: str,
    resource: dict[str, Any],
    existing: StoredResource | None,
    extras: dict[str, Any] | None,
    now: datetime,
    appends: resource_store.Appends,
) -> None:
    kept = extras if extras is not None else (existing.extras if existing else {})
    merged_extras = {k: v for k, v in (kept or {}).items() if k != "checks"}
    if extras is not None and "written" in extras:
        # Only the forms that differ from the rendering are worth keeping.
        merged_extras["written"] = needed(resource, extras["written"])
        if not merged_extras["written"]:
            del merged_extras["written"]
    # Strict when a FHIR write of this resource has just been made: what it wrote is kept.
    resource = merged(resource, kept or {}, strict=extras is not None)
    fingerprint = digest(resource)
    if existing is not None and not existing.deleted and existing.digest == fingerprint:
        return
    version = existing.version_id + 1 if existing is not None else 1
    resource["meta"] = {
        "versionId": str(version),
        "lastUpdated": instant(now),
        **{k: v for k, v in resource.get("meta", {}).items() if k not in _VERSION_META},
    }
    method = "POST" if existing is None else "PUT"
    document = Document(resource["resourceType"], resource["id"], serialise(resource), fingerprint)
    # Read before save() replaces the stored content with the new one.
    previous = _indexed_by(existing)
    resource_store.save(
        session,
        plan_id,
        document,
        version,
        now,
        method,
        merged_extras,
        stored=existing,
        appends=appends,
    )
    resource_store.reindex(
        session,
        document.resource_type,
        document.id,
        index_entries(resource),
        fresh=existing is None,
        previous=previous,
        appends=appends,
    )


def _indexed_by(existing: StoredResource | None) -> resource_store.IndexEntries | None:
    """The entries a live stored resource's index rows were written from: those of its
    content, which every write stores together with them."""
    if existing is None or existing.deleted:
        return None
    return index_entries(json.loads(existing.content))


def index_entries(resource: dict[str, Any]) -> resource_store.IndexEntries:
    """The search index rows of a resource, from the one table of search parameters."""
    entries = resource_store.IndexEntries([], [], [])
    for parameter, value in index_values(resource):
        if isinstance(value, Token):
            entries.tokens.append((parameter.name, value.system, value.code))
        elif isinstance(value, DateRange):
            entries.dates.append((parameter.name, value.low, value.high))
        else:
            entries.references.append((parameter.name, value))
    return entries
