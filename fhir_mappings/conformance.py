"""The project's conformance resources: CodeSystems, ValueSets, StructureDefinitions and
the Questionnaires of its rating scales.

All are generated from ``terminology`` and ``service.codes`` and are the same on every
call, so they can be served as they are.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from fhir_mappings.conformance_profiles import structure_definitions
from fhir_mappings.conformance_questionnaires import questionnaires
from fhir_mappings.conformance_terminology import code_systems, value_sets

__all__ = [
    "all_resources",
    "code_systems",
    "find",
    "questionnaires",
    "structure_definitions",
    "value_sets",
]


def all_resources() -> list[dict[str, Any]]:
    """Every conformance resource: CodeSystems, ValueSets, StructureDefinitions, then the
    Questionnaires."""
    return [*code_systems(), *value_sets(), *structure_definitions(), *questionnaires()]


@cache
def _index() -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["resourceType"], r["id"]): r for r in all_resources()}


def find(resource_type: str, resource_id: str) -> dict[str, Any] | None:
    """The conformance resource of that type and id, or None."""
    resource = _index().get((resource_type, resource_id))
    # A copy, so that a caller changing the result cannot change what is served next.
    return copy.deepcopy(resource) if resource is not None else None
