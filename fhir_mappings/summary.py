"""``_summary`` and ``_elements``: the reduced forms of a resource a search may ask for."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

SUMMARY_MODES = ("true", "false", "text", "data", "count")
# Elements a reduced resource keeps whatever was asked (FHIR: mandatory elements stay).
_ALWAYS = ("resourceType", "id", "meta")
MANDATORY: dict[str, tuple[str, ...]] = {
    "CarePlan": ("status", "intent", "subject"),
    "Goal": ("lifecycleStatus", "description", "subject"),
}
# Marks a reduced resource (http://terminology.hl7.org/CodeSystem/v3-ObservationValue).
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """The elements FHIR marks as summary elements for a type (from the R4 definitions)."""
    model = get_fhir_model_class(resource_type)
    return frozenset(
        field.alias or name
        for name, field in model.model_fields.items()
        if (field.json_schema_extra or {}).get("summary_element_property")  # type: ignore[union-attr]
    )


class InvalidShape(ValueError):
    """A ``_summary`` or ``_elements`` value that names no form of the resource."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def summary_mode(value: str | None, allowed: tuple[str, ...] = SUMMARY_MODES) -> str | None:
    """The ``_summary`` asked for (None when not given); refused unless in ``allowed``."""
    if value is not None and value not in allowed:
        raise InvalidShape("_summary", f"takes {', '.join(allowed)}, not {value!r}")
    return value


@cache
def elements_of(resource_type: str) -> frozenset[str]:
    """The names of a type's top-level elements (``_elements`` may name them)."""
    model = get_fhir_model_class(resource_type)
    names = (field.alias or name for name, field in model.model_fields.items())
    return frozenset(name for name in names if name != "fhir_comments")


def element_names(resource_type: str, value: str | None) -> list[str] | None:
    """The elements ``_elements`` asks for (None when not given); an element the type
    does not have is refused."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in elements_of(resource_type)]
    if unknown:
        raise InvalidShape(
            "_elements", f"{resource_type} has no element {', '.join(map(repr, unknown))}"
        )
    return names or None


def _subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    return {**resource, "meta": meta}


def reshape(
    resource: dict[str, Any], summary: str | None, elements: list[str] | None
) -> dict[str, Any]:
    """The resource as ``_summary`` / ``_elements`` ask, tagged SUBSETTED when reduced."""
    resource_type = resource["resourceType"]
    keep: set[str] | None = None
    if summary == "true":
        keep = set(summary_elements(resource_type))
    elif summary == "text":
        keep = {"text"}
    elif summary == "data":
        return _subsetted({k: v for k, v in resource.items() if k != "text"})
    elif elements:
        keep = set(elements)
    if keep is None:
        return resource
    keep |= {*_ALWAYS, *MANDATORY.get(resource_type, ())}
    return _subsetted({k: v for k, v in resource.items() if k in keep})
