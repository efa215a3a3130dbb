"""Publishing: after every change to a plan, its FHIR resources are rendered and stored.

Runs inside the write transaction of the change (as an observer of ``service.editing``),
so the FHIR view never lags the domain. A resource gets a new version only when its
content changed; elements a client wrote that the domain does not model are merged back
verbatim.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select

from fhir_mappings.parse_extras import apply_extras
from fhir_mappings.render import render_episode, render_goal, render_phase
from fhir_mappings.search_parameters import DateRange, Token, index_values
from service import resource_store
from service.editing import PlanEdit
from service.models import CarePlan, Goal, Homework, StoredResource, TherapySession
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


def _live(session: Any, model: Any, plan_id: str) -> list[Any]:
    return list(
        session.scalars(
            select(model)
            .where(model.plan_id == plan_id, model.deleted_at.is_(None))
            .order_by(model.created_at, model.id)
        )
    )


def render_plan(session: Any, plan: CarePlan) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every FHIR resource of a plan: (type, id, resource)."""
    goals: list[Goal] = _live(session, Goal, plan.id)
    sessions: list[TherapySession] = _live(session, TherapySession, plan.id)
    homework: list[Homework] = _live(session, Homework, plan.id)
    yield "CarePlan", plan.id, render_episode(plan, goals)
    for phase in plan.phases:
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
    for goal in goals:
        yield "Goal", goal.id, render_goal(plan, goal)


def publish(edit: PlanEdit) -> None:
    """Store a new version of every resource of the plan whose content changed.

    ``edit.attachments`` holds, per (type, id), the extras of resources a FHIR client just
    wrote: the elements the domain does not model, kept verbatim.
    """
    written = edit.attachments
    session, plan, now = edit.session, edit.plan, edit.now
    stored = {(s.resource_type, s.id): s for s in resource_store.of_plan(session, plan.id)}
    if not plan.is_deleted:
        for resource_type, resource_id, resource in render_plan(session, plan):
            key = (resource_type, resource_id)
            existing = stored.pop(key, None)
            extras = (written or {}).get(key)
            _publish_one(session, plan.id, resource, existing, extras, now)
    for leftover in stored.values():
        if not leftover.deleted:
            resource_store.mark_deleted(session, leftover, now)


def _publish_one(
    session: Any,
    plan_id: str,
    resource: dict[str, Any],
    existing: StoredResource | None,
    extras: dict[str, Any] | None,
    now: datetime,
) -> None:
    merged_extras = extras if extras is not None else (existing.extras if existing else {})
    resource = apply_extras(resource, merged_extras or {})
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
    resource_store.save(session, plan_id, document, version, now, method, merged_extras)
    resource_store.reindex(
        session,
        document.resource_type,
        document.id,
        index_entries(resource),
        fresh=existing is None,
        previous=previous,
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
