"""A check that every plan's published FHIR resources are what a full render makes.

Writes publish only the resources a change can alter (``projection.affected``); after any
test, each live plan's stored resources must still equal a fresh render of the whole plan
(with the verbatim elements clients wrote), and each resource's search index rows must be
those of its stored content.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from fhir_mappings.projection import digest, index_entries, render_plan
from fhir_mappings.verbatim import merged
from service import resource_store
from service.db import Database
from service.editing import plan_query
from service.models import (
    ResourceIdentifier,
    SearchDate,
    SearchReference,
    SearchToken,
)


def _naive_utc(moment: datetime) -> datetime:
    """A moment as the databases give it back: UTC, without a zone (SQLite drops it)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _index_rows(session: Any) -> dict[tuple[str, str], dict[str, set[Any]]]:
    """Every resource's index rows, read with one statement per table."""
    held: dict[tuple[str, str], dict[str, set[Any]]] = defaultdict(
        lambda: {"tokens": set(), "references": set(), "dates": set(), "identifiers": set()}
    )
    tables = (
        ("tokens", SearchToken, ("param", "system", "code")),
        ("references", SearchReference, ("param", "target")),
        ("dates", SearchDate, ("param", "low", "high")),
        ("identifiers", ResourceIdentifier, ("system", "value")),
    )
    for kind, model, columns in tables:
        query = select(
            model.resource_type, model.resource_id, *(getattr(model, c) for c in columns)
        )
        for resource_type, resource_id, *values in session.execute(query):
            if kind == "dates":
                values = [values[0], _naive_utc(values[1]), _naive_utc(values[2])]
            held[(resource_type, resource_id)][kind].add(tuple(values))
    return held


def _expected_rows(content: str | None) -> dict[str, set[Any]]:
    if content is None:
        return {"tokens": set(), "references": set(), "dates": set(), "identifiers": set()}
    entries = index_entries(json.loads(content))
    return {
        "tokens": set(entries.tokens),
        "references": set(entries.references),
        "dates": {(p, _naive_utc(low), _naive_utc(high)) for p, low, high in entries.dates},
        "identifiers": {(s or "", c) for p, s, c in entries.tokens if p == "identifier"},
    }


def mismatches(database: Database) -> list[str]:
    """What differs between the published resources and a full render, plan by plan."""
    problems: list[str] = []
    with database.reading() as session:
        plans = list(session.scalars(plan_query()))
        if not plans:
            return problems  # nothing published: no render to compare, no index to read
        index = _index_rows(session)
        for plan in plans:
            stored = {(s.resource_type, s.id): s for s in resource_store.of_plan(session, plan.id)}
            rendered = {}
            if not plan.is_deleted:
                for resource_type, resource_id, resource in render_plan(session, plan):
                    key = (resource_type, resource_id)
                    extras = stored[key].extras if key in stored else {}
                    rendered[key] = digest(merged(resource, extras or {}))
            for key, fingerprint in rendered.items():
                found = stored.get(key)
                if found is None or found.deleted:
                    problems.append(f"{key} is rendered but not published")
                elif found.digest != fingerprint:
                    problems.append(f"{key} is published with stale content")
            for key, found in stored.items():
                if key not in rendered and not found.deleted:
                    problems.append(f"{key} is published but no longer rendered")
                held = index.get(key) or _expected_rows(None)
                wanted = _expected_rows(None if found.deleted else found.content)
                if held != wanted:
                    problems.append(f"{key} has index rows {held} instead of {wanted}")
    return problems
