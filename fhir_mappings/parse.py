"""FHIR JSON -> domain data, for writes through the FHIR views.

``validate_structure`` checks a resource against FHIR R4 (with ``fhir.resources.R4B``,
whose CarePlan and Goal are those of R4) and then what that library leaves out: the
required value sets, empty elements and two invariants. ``episode_from_fhir``,
``phase_from_fhir`` and ``goal_from_fhir`` validate, then read the resource into the
data the domain services accept, plus ``extras``: the elements the mapping does not own,
verbatim, for ``apply_extras`` to put back. Every problem found is reported at
once in a MappingError, each named by a FHIRPath expression.

What ``extras`` holds is described in parse_extras.py.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

import pydantic
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from fhir_core.fhirabstractmodel import FHIRAbstractModel

from fhir_mappings.parse_common import MappingError, Problems
from fhir_mappings.parse_episode import read_episode
from fhir_mappings.parse_extras import apply_extras
from fhir_mappings.parse_goal import read_goal
from fhir_mappings.parse_phase import read_phase

__all__ = [
    "REQUIRED_CODES",
    "Checked",
    "MappingError",
    "apply_extras",
    "checked",
    "episode_from_fhir",
    "goal_from_fhir",
    "phase_from_fhir",
    "validate_structure",
]

# FHIR R4's integer, positiveInt and unsignedInt are 32-bit (datatypes.html#integer).
INTEGER_RANGE = (-(2**31), 2**31 - 1)
_TIME_UNITS = frozenset({"s", "min", "h", "d", "wk", "mo", "a"})
# The codes of every required binding the service's resources can carry and
# fhir.resources does not check, by element: ``Resource.path`` for elements of a
# resource, ``Datatype.path`` for elements of a data type wherever it appears.
REQUIRED_CODES: dict[str, frozenset[str]] = {
    "CarePlan.status": frozenset(
        {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
    ),
    "CarePlan.intent": frozenset({"proposal", "plan", "order", "option"}),
    "CarePlan.activity.detail.kind": frozenset(
        {
            "Appointment",
            "CommunicationRequest",
            "DeviceRequest",
            "MedicationRequest",
            "NutritionOrder",
            "Task",
            "ServiceRequest",
            "VisionPrescription",
        }
    ),
    "CarePlan.activity.detail.status": frozenset(
        {
            "not-started",
            "scheduled",
            "in-progress",
            "on-hold",
            "completed",
            "cancelled",
            "stopped",
            "unknown",
            "entered-in-error",
        }
    ),
    "Goal.lifecycleStatus": frozenset(
        {
            "proposed",
            "planned",
            "accepted",
            "active",
            "on-hold",
            "completed",
            "cancelled",
            "entered-in-error",
            "rejected",
        }
    ),
    "Quantity.comparator": frozenset({"<", "<=", ">=", ">"}),
    "Narrative.status": frozenset({"generated", "extensions", "additional", "empty"}),
    "Identifier.use": frozenset({"usual", "official", "temp", "secondary", "old"}),
    "ContactPoint.system": frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"}),
    "ContactPoint.use": frozenset({"home", "work", "temp", "old", "mobile"}),
    "HumanName.use": frozenset(
        {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"}
    ),
    "Address.use": frozenset({"home", "work", "temp", "old", "billing"}),
    "Address.type": frozenset({"postal", "physical", "both"}),
    "Timing.repeat.durationUnit": _TIME_UNITS,
    "Timing.repeat.periodUnit": _TIME_UNITS,
    "Timing.repeat.dayOfWeek": frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"}),
}
# Data types whose elements are looked up as ``Datatype.path``; the Quantity profiles
# (Age, Duration...) are Quantities.
_DATATYPES = {
    "Quantity": "Quantity",
    "Age": "Quantity",
    "Count": "Quantity",
    "Distance": "Quantity",
    "Duration": "Quantity",
    "MoneyQuantity": "Quantity",
    "SimpleQuantity": "Quantity",
    "Narrative": "Narrative",
    "Identifier": "Identifier",
    "ContactPoint": "ContactPoint",
    "HumanName": "HumanName",
    "Address": "Address",
    "Timing": "Timing",
}
_JSON_NAMES = {
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "list": "an array",
    "NoneType": "null",
}
_EXPECTED_INSTANCE = re.compile(r"instance of (\w+), but got type <class '(\w+)'>")
_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9]*$")
# Keys fhir.resources.R4B accepts that FHIR R4 does not have (R4B data types, comments).
_NOT_IN_R4 = frozenset({"valueCodeableReference", "valueRatioRange", "fhir_comments"})
_XHTML_DIV = "{http://www.w3.org/1999/xhtml}div"
# Active content a narrative may not carry (FHIR txt-1, txt-2).
_FORBIDDEN_TAGS = frozenset(
    {"script", "style", "iframe", "object", "embed", "form", "base", "link"}
)


def _expression(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if part == "root":
            continue  # the validator's wrapper of a data type, not an element
        if isinstance(part, int):
            path += f"[{part}]"
        elif _NAME.match(part):
            path += f".{part.lstrip('_')}"
    return path


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind == "extra_forbidden":
        return "is not an element of this resource in FHIR R4"
    if kind.endswith("missing"):
        return "is required"
    if kind in ("json_invalid", "json_type", "model_type", "model_attributes_type", "dict_type"):
        # The validator tries a string as JSON text where an object belongs.
        found = _JSON_NAMES.get(type(error.get("input")).__name__, "another type")
        return f"must be a JSON object, not {found}"
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    expected = _EXPECTED_INSTANCE.search(message)
    if expected:
        found = _JSON_NAMES.get(expected.group(2), "another type")
        return f"must be a {expected.group(1)} (a JSON object), not {found}"
    return message


def _check_raw(problems: Problems, path: str, value: Any, key: str = "") -> None:
    """Nulls, empty strings, lists and objects, and extensions with both or no value."""
    if value is None:
        problems.add(path, "null is not allowed in FHIR; leave the element out")
    elif isinstance(value, str) and value == "":
        problems.add(path, "an empty string is not allowed in FHIR; leave the element out")
    elif isinstance(value, list):
        if not value:
            problems.add(path, "an empty list is not allowed in FHIR; leave the element out")
        for index, item in enumerate(value):
            # A null stands in for a primitive that only has extensions (``_name``).
            if item is not None or not key.startswith("_"):
                _check_raw(problems, f"{path}[{index}]", item, key)
    elif isinstance(value, dict):
        if not value:
            problems.add(path, "an empty object is not allowed in FHIR; leave the element out")
        if key in ("extension", "modifierExtension"):
            has_value = any(k.startswith("value") for k in value)
            if has_value == ("extension" in value):
                problems.add(path, "an extension has a value or sub-extensions (ext-1)")
        if key == "activity" and "reference" in value and "detail" in value:
            problems.add(path, "an activity has a reference or a detail, not both (cpl-3)")
        for name, item in value.items():
            if name == "resourceType":
                continue
            if name in _NOT_IN_R4:
                problems.add(f"{path}.{name}", "is not an element of FHIR R4")
            siblings = value.get(f"_{name}")
            if isinstance(item, list) and isinstance(siblings, list):
                for index, entry in enumerate(item):
                    if entry is not None:
                        _check_raw(problems, f"{path}.{name}[{index}]", entry, name)
                continue
            _check_raw(problems, f"{path}.{name.lstrip('_')}", item, name)


def _check_codes(
    problems: Problems, model: FHIRAbstractModel, path: str, element: str, in_type: str
) -> None:
    """Check the required bindings below ``model``; ``element``/``in_type`` index them."""
    for name, field in type(model).model_fields.items():
        extra = field.json_schema_extra
        if not isinstance(extra, dict) or not extra.get("element_property"):
            continue
        found = getattr(model, name)
        if found is None:
            continue
        alias = field.alias or name
        many = isinstance(found, list)
        for index, item in enumerate(found if many else [found]):
            here = f"{path}.{alias}" + (f"[{index}]" if many else "")
            if isinstance(item, FHIRAbstractModel):
                kind = type(item).__name__
                if isinstance(item, Resource):
                    _check_codes(problems, item, here, kind, kind)
                elif kind in _DATATYPES:
                    _check_codes(problems, item, here, f"{element}.{alias}", _DATATYPES[kind])
                else:
                    _check_codes(problems, item, here, f"{element}.{alias}", f"{in_type}.{alias}")
            elif isinstance(item, int) and not isinstance(item, bool):
                # Decimals are read as Decimal: an int here is an integer element.
                if not INTEGER_RANGE[0] <= item <= INTEGER_RANGE[1]:
                    problems.add(
                        here,
                        f"{item} is outside the range of a FHIR integer "
                        f"({INTEGER_RANGE[0]} to {INTEGER_RANGE[1]})",
                    )
            elif isinstance(item, str):
                allowed = REQUIRED_CODES.get(f"{element}.{alias}") or REQUIRED_CODES.get(
                    f"{in_type}.{alias}"
                )
                if allowed is not None and item not in allowed:
                    problems.add(
                        here,
                        f"{item!r} is not a code of the required value set: "
                        + ", ".join(sorted(allowed)),
                    )


def _check_narrative(problems: Problems, path: str, text: Any) -> None:
    """A narrative's div is XHTML in a div, without active content."""
    div = text.get("div") if isinstance(text, dict) else None
    if not isinstance(div, str):
        return
    try:
        root = ElementTree.fromstring(div)
    except ElementTree.ParseError as error:
        problems.add(f"{path}.div", f"is not well-formed XHTML ({error})")
        return
    if root.tag != _XHTML_DIV:
        problems.add(f"{path}.div", "must be a div in the XHTML namespace")
    for element in root.iter():
        tag = str(element.tag).rpartition("}")[2]
        active = any(
            name.rpartition("}")[2].lower().startswith("on")
            or value.strip().lower().startswith("javascript:")
            for name, value in element.attrib.items()
        )
        if tag in _FORBIDDEN_TAGS or active:
            problems.add(f"{path}.div", f"active content ({tag}) is not allowed in a narrative")
            return


# The JSON type of each kind of FHIR primitive. fhir.resources reads a number where an
# instant or a code belongs (12 becomes 1970-01-01T00:00:12Z) and "1" where an integer
# belongs; FHIR JSON does not, and what reads the element next expects its JSON type.
_TEXT_PRIMITIVES = frozenset(
    {
        "Instant",
        "DateTime",
        "Date",
        "Time",
        "Code",
        "Id",
        "Uri",
        "Url",
        "Canonical",
        "String",
        "Markdown",
        "Base64Binary",
        "Oid",
        "Uuid",
        "Xhtml",
    }
)
_NUMBER_PRIMITIVES = frozenset({"Integer", "PositiveInt", "UnsignedInt", "Decimal", "Integer64"})
_JSON_TYPE_MESSAGE = {
    "text": "must be text (a JSON string)",
    "number": "must be a number (not text)",
    "boolean": "must be true or false",
}


def _json_kind(annotation: Any) -> tuple[str, str | None] | None:
    """What an element's annotation says its JSON holds: ("text"|"number"|"boolean", None)
    for a primitive, ("model", name) for a complex type, None for anything else."""
    stack = [annotation]
    while stack:
        item = stack.pop()
        origin = typing.get_origin(item)
        if origin is typing.Annotated:
            base, *metadata = typing.get_args(item)
            for meta in metadata:
                name = type(meta).__name__
                if name in _TEXT_PRIMITIVES:
                    return ("text", None)
                if name in _NUMBER_PRIMITIVES:
                    return ("number", None)
            stack.append(base)
        elif origin is not None:
            stack.extend(arg for arg in typing.get_args(item) if arg is not type(None))
        elif item is bool:
            return ("boolean", None)
        elif isinstance(item, type) and item.__module__ == "abc" and item.__name__.endswith("Type"):
            return ("model", item.__name__.removesuffix("Type"))
    return None


@functools.cache
def _element_kinds(model_name: str) -> dict[str, tuple[str, str | None] | None]:
    model = get_fhir_model_class(model_name)
    kinds = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("element_property"):
            kinds[field.alias or name] = _json_kind(field.annotation)
    return kinds


def _check_json_types(problems: Problems, path: str, value: Any, model_name: str) -> None:
    """Every primitive below ``value`` (a ``model_name``) holds its FHIR JSON type."""
    if not isinstance(value, dict):
        return
    try:
        kinds = _element_kinds(model_name)
    except (KeyError, ValueError):
        return  # not a type of FHIR R4: the structure check names it
    for key, item in value.items():
        kind = kinds.get(key)
        if kind is None:
            continue
        entries = enumerate(item) if isinstance(item, list) else [(None, item)]
        for index, entry in entries:
            if entry is None:
                continue
            here = f"{path}.{key}" if index is None else f"{path}.{key}[{index}]"
            found, name = kind
            if found == "model":
                if name == "Resource":
                    kind_name = entry.get("resourceType") if isinstance(entry, dict) else None
                    if isinstance(kind_name, str):
                        _check_json_types(problems, here, entry, kind_name)
                else:
                    _check_json_types(problems, here, entry, str(name))
            elif not (
                isinstance(entry, str)
                if found == "text"
                else isinstance(entry, bool)
                if found == "boolean"
                else isinstance(entry, int | float) and not isinstance(entry, bool)
            ) and all(path != here for path, _ in problems.items):
                problems.add(here, _JSON_TYPE_MESSAGE[found])


def validate_structure(resource: dict[str, Any], expected_type: str) -> None:
    """Check ``resource`` is a valid FHIR R4 ``expected_type``; raise MappingError if not."""
    if not isinstance(resource, dict):
        raise MappingError([(expected_type, "a FHIR resource is a JSON object")])
    declared = resource.get("resourceType")
    if declared != expected_type:
        raise MappingError(
            [(expected_type, f"expected a {expected_type} resource, not {declared!r}")]
        )
    problems = Problems()
    model = None
    try:
        model = get_fhir_model_class(expected_type).model_validate(resource)
    except pydantic.ValidationError as error:
        for item in error.errors():
            problems.add(_expression(expected_type, tuple(item["loc"])), _message(item))
    except (TypeError, ValueError) as error:
        problems.add(expected_type, str(error))
    except AttributeError:
        # fhir.resources reads some primitives (url, uri) as text before checking their type.
        problems.add(expected_type, "an element that must be text holds another JSON type")
    _check_raw(problems, expected_type, resource)
    _check_json_types(problems, expected_type, resource, expected_type)
    _check_narrative(problems, f"{expected_type}.text", resource.get("text"))
    if model is not None:
        _check_codes(problems, model, expected_type, expected_type, expected_type)
    problems.raise_if_any()


class Checked(dict[str, Any]):
    """A resource that has passed :func:`validate_structure`: its elements have their FHIR
    shapes, so code may read them. The readers below do not validate it again."""


def checked(resource: Any, expected_type: str) -> Checked:
    """``resource`` validated as a FHIR R4 ``expected_type`` (MappingError if it is not).

    A route calls this before anything else reads the body: authorisation reads the
    subject, the mapping the category, and a string where an object belongs would
    otherwise reach them.
    """
    if isinstance(resource, Checked) and resource.get("resourceType") == expected_type:
        return resource
    validate_structure(resource, expected_type)
    return Checked(resource)


def _validated(resource: dict[str, Any], expected_type: str) -> None:
    if not isinstance(resource, Checked):
        validate_structure(resource, expected_type)


def episode_from_fhir(resource: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read an episode CarePlan: (plan data for create_plan/update_plan, extras).

    The data has the keys patient, status, start_date, end_date, problem_areas (primary
    first), dispute_stage, condition, therapist, formulation, relapse_prevention, notes
    and identifiers, plus variant, planned_sessions and session_frequency when their
    extensions are given. The contract history, ``created`` and ``goal`` are the
    server's and are not read.
    """
    _validated(resource, "CarePlan")
    return read_episode(resource)


def phase_from_fhir(
    resource: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Read a phase CarePlan: (phase data, session entries, homework entries, extras).

    The phase data has start_session and end_session (when the session range is given),
    status (the domain's), start_date, end_date and description, and, to be compared
    with the stored phase, code (from the ipt-phase category), plan_id (from partOf)
    and patient (the subject). A session entry has id (None for a new one), number,
    date, status, phq9_total, techniques and note; a homework entry id, phase, goal_id,
    kind, description, assigned_on, due_on, status and patient_report.
    """
    _validated(resource, "CarePlan")
    return read_phase(resource)


def goal_from_fhir(resource: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Read a Goal: (the id of its episode CarePlan, goal data, extras).

    The goal data has the keys add_goal/update_goal accept (kind, problem_area,
    description, lifecycle_status, achievement_status, priority, start_date, target,
    phase, notes) and patient (the subject), to be compared with the plan's.
    """
    _validated(resource, "Goal")
    return read_goal(resource)
