"""A check that every plan's published FHIR resources are what a full render makes.

Writes publish only the resources a change can alter (``projection.affected``); after any
test, each live plan's stored resources must still equal a fresh render of the whole plan
(with the verbatim elements clients wrote), and each resource's search index rows must be
those of its stored content.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from fhir_mappings.parse_extras import apply_extras
from fhir_mappings.projection import digest, index_entries, render_plan
from service import resource_store
from service.db import Database
from service.editing import plan_query
from service.models import (
    ResourceIdentifier,
    SearchDate,
    SearchReference,
    SearchToken,
)


def _index_rows(session: Any, resource_type: str, resource_id: str) -> dict[str, set[Any]]:
    def rows(model: Any, *columns: str) -> set[tuple[Any, ...]]:
        query = select(*(getattr(model, c) for c in columns)).where(
            model.resource_type == resource_type, model.resource_id == resource_id
        )
        return {tuple(row) for row in session.execute(query)}

    return {
        "tokens": rows(SearchToken, "param", "system", "code"),
        "references": rows(SearchReference, "param", "target"),
        "dates": {
            (p, low.replace(tzinfo=None), high.replace(tzinfo=None))
            for p, low, high in rows(SearchDate, "param", "low", "high")
        },
        "identifiers": rows(ResourceIdentifier, "system", "value"),
    }


def _expected_rows(content: str | None) -> dict[str, set[Any]]:
    if content is None:
        return {"tokens": set(), "references": set(), "dates": set(), "identifiers": set()}
    entries = index_entries(json.loads(content))
    return {
        "tokens": set(entries.tokens),
        "references": set(entries.references),
        "dates": {
            (p, low.replace(tzinfo=None), high.replace(tzinfo=None))
            for p, low, high in entries.dates
        },
        "identifiers": {(s or "", c) for p, s, c in entries.tokens if p == "identifier"},
    }


def mismatches(database: Database) -> list[str]:
    """What differs between the published resources and a full render, plan by plan."""
    problems: list[str] = []
    with database.reading() as session:
        for plan in session.scalars(plan_query()):
            stored = {(s.resource_type, s.id): s for s in resource_store.of_plan(session, plan.id)}
            rendered = {}
            if not plan.is_deleted:
                for resource_type, resource_id, resource in render_plan(session, plan):
                    key = (resource_type, resource_id)
                    extras = stored[key].extras if key in stored else {}
                    rendered[key] = digest(apply_extras(resource, extras or {}))
            for key, fingerprint in rendered.items():
                found = stored.get(key)
                if found is None or found.deleted:
                    problems.append(f"{key} is rendered but not published")
                elif found.digest != fingerprint:
                    problems.append(f"{key} is published with stale content")
            for key, found in stored.items():
                if key not in rendered and not found.deleted:
                    problems.append(f"{key} is published but no longer rendered")
                held = _index_rows(session, *key)
                wanted = _expected_rows(None if found.deleted else found.content)
                if held != wanted:
                    problems.append(f"{key} has index rows {held} instead of {wanted}")
    return problems
