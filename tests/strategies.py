"""Hostile values for property tests: one strategy (and one fixed table) per class of input
that must never end in a 500 nor be silently misread.

The fixed tables are the named edges a table-driven test walks through one by one; the
strategies mix them with generated values so that a property test also reaches the
neighbourhood of each edge. Everything here is pure data: no HTTP, no fixtures.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Json = Any

# --- text the database cannot store ---------------------------------------------------------

#: Strings that JSON can carry (``"\ud800"`` is valid JSON text) but UTF-8 storage cannot:
#: lone UTF-16 surrogates, and NUL, which PostgreSQL refuses in any text column.
HOSTILE_TEXTS: list[str] = [
    "\ud800",
    "\udfff",
    "before \ud83d after",  # the high half of an emoji without its low half
    "\udc00\ud800",  # the halves in the wrong order
    "\x00",
    "nul\x00inside",
]


def hostile_text() -> st.SearchStrategy[str]:
    """A string with at least one lone surrogate or NUL somewhere in ordinary text."""
    bad = st.one_of(
        st.sampled_from(["\x00"]),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    )
    ordinary = st.text(max_size=8)
    generated = st.tuples(ordinary, bad, ordinary).map("".join)
    return st.one_of(st.sampled_from(HOSTILE_TEXTS), generated)


#: Query-string encodings of the same: what a client sends when it percent-encodes the
#: bytes of a lone surrogate (WTF-8 / CESU-8) or a NUL.
HOSTILE_QUERY_TEXTS: list[str] = ["%ED%A0%80", "Patient%2F%ED%B0%80", "%00", "Patient%2F1%00"]

#: Header values that HTTP can carry (latin-1 octets) and that are stored (X-Actor).
HOSTILE_HEADER_TEXTS: list[str] = ["dr.\x00rivera", "\x00", "dr.\x7frivera", "dr.\x01rivera"]

# --- integers beyond 64 bits -----------------------------------------------------------------

#: Integers at and past the edges of a signed 64-bit column (and of 32-bit ones).
EDGE_INTEGERS: list[int] = [
    2**63,
    2**63 - 1,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**20,
    -(10**20),
    2**31,
    2**31 - 1,
    -(2**31) - 1,
]


def edge_integer() -> st.SearchStrategy[int]:
    """A 64-bit (or 32-bit) edge, or a value near one of them."""
    near = st.tuples(st.sampled_from(EDGE_INTEGERS), st.integers(-2, 2)).map(sum)
    return st.one_of(st.sampled_from(EDGE_INTEGERS), near)


# --- dates at the edge of the calendar -------------------------------------------------------

#: Instants whose UTC value falls outside years 1..9999 once the offset is applied, and the
#: edges of the calendar in every precision FHIR allows (year, year-month, date).
CALENDAR_EDGE_DATETIMES: list[str] = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999-00:01",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]
CALENDAR_EDGE_PARTIALS: list[str] = [
    "0001",
    "9999",
    "0001-01",
    "9999-12",
    "0001-01-01",
    "9999-12-31",
]
CALENDAR_EDGES: list[str] = CALENDAR_EDGE_DATETIMES + CALENDAR_EDGE_PARTIALS

#: The prefixes of FHIR date search parameters.
DATE_PREFIXES: list[str] = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


def calendar_edge_datetime() -> st.SearchStrategy[str]:
    """A full RFC 3339 date-time at the calendar's edge (valid as ``format: date-time``)."""
    return st.sampled_from(CALENDAR_EDGE_DATETIMES)


def calendar_edge_date() -> st.SearchStrategy[str]:
    """A full date at the calendar's edge (valid as ``format: date``)."""
    return st.sampled_from(["0001-01-01", "9999-12-31"])


def fhir_date_search_value() -> st.SearchStrategy[str]:
    """A FHIR date search value (prefix + any precision) at the calendar's edge."""
    return st.tuples(st.sampled_from(DATE_PREFIXES), st.sampled_from(CALENDAR_EDGES)).map("".join)


#: FHIR date search parameters and the ``_since``/``_at`` of history, per resource type
#: (``None``: the parameter is a history parameter, sent to ``_history``).
FHIR_DATE_PARAMETERS: dict[str, list[str]] = {
    "CarePlan": ["date", "activity-date", "_lastUpdated"],
    "Goal": ["start-date", "target-date", "_lastUpdated"],
}
HISTORY_DATE_PARAMETERS: list[str] = ["_since", "_at"]

# --- deep nesting ---------------------------------------------------------------------------

DEEP = 1000


def nested_json(depth: int = DEEP, kind: str = "array") -> str:
    """JSON text nested ``depth`` levels deep, built as text so that building it does not
    itself recurse (``json.dumps`` of such a value hits Python's recursion limit)."""
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def nested_inside(resource: Json, element: str, depth: int = DEEP, kind: str = "array") -> str:
    """``resource`` as JSON text with ``element`` set to a value nested ``depth`` deep."""
    marker = "__nested__"
    text = json.dumps({**resource, element: marker})
    return text.replace(json.dumps(marker), nested_json(depth, kind), 1)


def deep_body() -> st.SearchStrategy[str]:
    """A body nested about 1,000 levels (arrays or objects), alone or inside an object."""
    depth = st.integers(min_value=DEEP - 10, max_value=DEEP + 1000)
    kind = st.sampled_from(["array", "object"])
    alone = st.builds(nested_json, depth, kind)
    inside = st.builds(
        lambda d, k: nested_inside({"resourceType": "CarePlan"}, "extension", d, k), depth, kind
    )
    return st.one_of(alone, inside)


# --- wrong JSON types for FHIR elements -----------------------------------------------------

#: For each element of an episode/Goal that code reads before validation: values of the
#: wrong JSON type (a Reference as a string, list or number; a list as an object; ...).
WRONG_TYPES: dict[str, list[Json]] = {
    "subject": ["Patient/x", ["Patient/x"], [{"reference": "Patient/x"}], 12, True],
    "category": [{"coding": [{"code": "episode"}]}, "episode", 1],
    "identifier": [{"system": "urn:x", "value": "1"}, "urn:x|1", 5],
    "extension": [{"url": "x"}, "x", 3],
    "period": ["2026-01-05", ["2026-01-05"], 7],
    "meta": ["1", [], 9],
    "partOf": [{"reference": "CarePlan/x"}, "CarePlan/x", 1],
    "goal": [{"reference": "Goal/x"}, "Goal/x", 2],
    "addresses": [{"reference": "Condition/x"}, "Condition/x"],
    "status": [["active"], {"code": "active"}, 1],
    "description": ["text", ["text"], 3],  # Goal.description is a CodeableConcept
    "target": [{"measure": {}}, "5"],
    "contained": [{"resourceType": "Goal"}, "Goal", 1],
}


def wrong_type_mutation(resource: Json) -> st.SearchStrategy[tuple[str, Json]]:
    """An (element, value) pair that puts a wrong JSON type where ``resource`` has FHIR data."""
    candidates = [
        (element, value)
        for element, values in WRONG_TYPES.items()
        for value in values
        if element != "description" or resource.get("resourceType") == "Goal"
    ]
    return st.sampled_from(candidates)


def with_element(resource: Json, element: str, value: Json) -> Json:
    changed = copy.deepcopy(resource)
    changed[element] = value
    return changed


#: Bundle entries whose ``request`` or ``resource`` (or the entry itself) is not an object.
BAD_BUNDLE_ENTRIES: list[Json] = [
    {"request": "POST CarePlan"},
    {"request": ["POST", "CarePlan"]},
    {"request": 1},
    {"request": {"method": "POST", "url": "CarePlan"}, "resource": "CarePlan"},
    {"request": {"method": "POST", "url": "CarePlan"}, "resource": [{"resourceType": "CarePlan"}]},
    {"request": {"method": "POST", "url": "CarePlan"}, "resource": 7},
    {"request": {"method": 1, "url": "CarePlan"}},
    {"request": {"method": "GET", "url": ["CarePlan"]}},
    {"request": {"method": "PUT", "url": {"a": 1}}},
    "CarePlan",
    7,
    [],
]


def json_patch_wrong_types() -> list[list[Json]]:
    """JSON Patches that set elements of a stored resource to the wrong JSON type."""
    patches = [
        [{"op": "replace", "path": f"/{element}", "value": value}]
        for element, values in WRONG_TYPES.items()
        if element not in ("description", "target", "addresses", "goal", "partOf", "contained")
        for value in values
    ]
    patches += [
        [{"op": "add", "path": "/subject/reference", "value": 12}],
        [{"op": "replace", "path": "/category/0", "value": "episode"}],
        [{"op": "add", "path": "/extension/0", "value": "x"}],
        [{"op": "remove", "path": "/subject"}],
        [{"op": "replace", "path": "/resourceType", "value": 1}],
    ]
    return patches


# --- mutations applied to schema-generated cases ---------------------------------------------


def json_leaves(value: Json, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Json]]:
    """Every (path, leaf) of a JSON value."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in json_leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in json_leaves(item, (*path, i))]
    return [(path, value)]


def replaced_at(value: Json, path: tuple[Any, ...], new: Json) -> Json:
    """A copy of ``value`` with the leaf at ``path`` replaced by ``new``."""
    if not path:
        return new
    changed = copy.copy(value)
    changed[path[0]] = replaced_at(value[path[0]], path[1:], new)
    return changed


@dataclass(frozen=True)
class Mutation:
    """One hostile change to a JSON body, drawn before the body is known.

    Everything random is drawn up front so that the draws never depend on the body (which
    may come from the server): Hypothesis needs each draw's bounds to depend on earlier draws
    only. ``pick`` then chooses where in the body the change lands.
    """

    kind: str  # "none", "leaf", "wrong-type" or "deep"
    text: str
    integer: int
    element: str
    wrong: Json
    deep: str
    pick: int

    def apply(self, body: Json) -> tuple[Json, str]:
        """The changed body (a string for deep nesting) and the class it exercises."""
        if self.kind == "leaf":
            return hostile_leaf(body, self.text, self.integer, random.Random(self.pick))
        if self.kind == "wrong-type" and isinstance(body, dict):
            return {**body, self.element: self.wrong}, "wrong-type"
        if self.kind == "deep":
            return self.deep, "deep"
        return body, ""


def mutation(none_weight: int = 6) -> st.SearchStrategy[Mutation]:
    """A Mutation: none most of the time, else one hostile value of a class."""
    wrong = st.sampled_from([(e, v) for e, values in WRONG_TYPES.items() for v in values])
    return st.builds(
        lambda kind, text, integer, wrong_pair, deep, pick: Mutation(
            kind, text, integer, wrong_pair[0], wrong_pair[1], deep, pick
        ),
        st.sampled_from(["none"] * none_weight + ["leaf", "wrong-type", "deep"]),
        hostile_text(),
        edge_integer(),
        wrong,
        deep_body(),
        st.integers(0, 2**32 - 1),
    )


def hostile_leaf(body: Json, text: str, integer: int, pick: random.Random) -> tuple[Json, str]:
    """``body`` with one string leaf replaced by ``text`` or one integer leaf by ``integer``;
    and the class it exercises (``""`` when the body has no such leaf)."""
    leaves = [
        (path, leaf)
        for path, leaf in json_leaves(body)
        if isinstance(leaf, str) or (isinstance(leaf, int) and not isinstance(leaf, bool))
    ]
    if not leaves:
        return body, ""
    path, leaf = pick.choice(leaves)
    if isinstance(leaf, str):
        return replaced_at(body, path, text), "text"
    return replaced_at(body, path, integer), "integer"
