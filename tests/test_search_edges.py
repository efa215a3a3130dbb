"""Dates at the edges of the calendar, and crafted cursors, on every route that reads them.

Every date or instant in a query goes through one reader (``service.instants``): a value
of valid syntax is answered, taken into the range the database holds, and matches what
the FHIR date semantics say; any other value is a 400 naming the parameter (422 with the
field on the native API). A cursor is answered or refused with 400, never a 500.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from conftest import Client, plan_url, problem_fields
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_mappings.search_parameters import DateRange, index_values, parse_date_range
from service.instants import EARLIEST, LATEST
from service.resource_search import widened

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# (type, parameter) for every date search parameter, _lastUpdated included.
DATE_PARAMETERS = [
    ("CarePlan", "_lastUpdated"),
    ("CarePlan", "date"),
    ("CarePlan", "activity-date"),
    ("Goal", "_lastUpdated"),
    ("Goal", "start-date"),
    ("Goal", "target-date"),
]
# Valid values at (and beyond, once converted to UTC) both ends of the calendar.
EDGE_VALUES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00+14:00",
    "0001",
    "0001-01",
    "0001-01-01",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59+14:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59-14:00",
    "9999-12-31T23:59:60Z",
    "9999",
    "9999-12",
    "9999-12-31",
]
INSTANT_EDGES = [v for v in EDGE_VALUES if v.count(":") >= 3 or (v.endswith("Z") and "T" in v)]
INVALID_VALUES = [
    "0000-01-01",
    "2026-13-01",
    "2026-02-30",
    "2026-1-5",
    "2026-01-05T25:00:00Z",
    "2026-01-05T10:00:00+15:00",
    "10000-01-01",
    "yesterday",
    "",
]


@pytest.fixture
def data(client: Client) -> dict[str, Any]:
    """Two plans with their goals, one of them changed (two versions)."""
    first = client.create_plan(patient="Patient/e1")
    second = client.create_plan(patient="Patient/e2", start_date="2026-03-02")
    response = client.patch(plan_url(second), json={"formulation": "changed"})
    assert response.status_code == 200, response.text
    return {"first": first, "second": second}


def everything(client: Client, resource_type: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{resource_type}", params={"_count": 200})
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def ranges(resource: dict[str, Any], param: str) -> list[DateRange]:
    """The ranges a resource is indexed by for a date parameter."""
    if param == "_lastUpdated":
        moment = datetime.fromisoformat(resource["meta"]["lastUpdated"].replace("Z", "+00:00"))
        return [DateRange(moment, moment)]
    return [value for p, value in index_values(resource) if p.name == param]  # type: ignore[misc]


def expected(prefix: str, value: DateRange, found: list[DateRange]) -> bool:
    """FHIR's date prefixes over ranges: does any of a resource's ranges match?"""
    low, high = value.low, value.high
    if prefix == "ap":
        low, high = widened(low, high)
    checks = {
        "eq": lambda r: r.low >= low and r.high <= high,
        "ne": lambda r: not (r.low >= low and r.high <= high),
        "gt": lambda r: r.high > high,
        "lt": lambda r: r.low < low,
        "ge": lambda r: r.high >= low,
        "le": lambda r: r.low <= high,
        "sa": lambda r: r.low > high,
        "eb": lambda r: r.high < low,
        "ap": lambda r: r.low <= high and r.high >= low,
    }
    return any(checks[prefix](r) for r in found)


def assert_search_matches(
    client: Client, resource_type: str, param: str, value: str, resources: list[dict[str, Any]]
) -> None:
    """The search answers 200 with exactly the resources the FHIR semantics select."""
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    query_range = parse_date_range(value[2:] if value[:2] in PREFIXES else value)
    response = client.get(f"/fhir/{resource_type}", params={param: value, "_count": 200})
    assert response.status_code == 200, (param, value, response.text)
    found = sorted(e["resource"]["id"] for e in response.json().get("entry", []))
    want = sorted(r["id"] for r in resources if expected(prefix, query_range, ranges(r, param)))
    assert found == want, (param, value)


def assert_invalid_parameter(response: Any, parameter: str) -> None:
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "invalid"
    assert outcome["issue"][0]["expression"] == [parameter], outcome


def cursor(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


# --- the clamping itself ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("0001-01-01T00:00:00+14:00", EARLIEST, EARLIEST),
        ("9999-12-31T23:59:59-14:00", LATEST, LATEST),
        ("9999-12-31T23:59-14:00", LATEST, LATEST),
        ("9999-12-31", datetime(9999, 12, 31, tzinfo=UTC), LATEST),
        ("9999", datetime(9999, 1, 1, tzinfo=UTC), LATEST),
        ("0001", EARLIEST, datetime(1, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        (
            "2026-01-05T10:00+01:00",
            datetime(2026, 1, 5, 9, tzinfo=UTC),
            datetime(2026, 1, 5, 9, 0, 59, 999000, tzinfo=UTC),
        ),
        (
            "2024-02",
            datetime(2024, 2, 1, tzinfo=UTC),
            datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC),
        ),
    ],
)
def test_values_are_clamped_to_the_instants_the_database_holds(
    value: str, low: datetime, high: datetime
) -> None:
    assert parse_date_range(value) == DateRange(low, high)


# --- search -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("resource_type", "param"), DATE_PARAMETERS)
def test_every_date_parameter_answers_every_edge_value(
    client: Client, data: dict[str, Any], resource_type: str, param: str
) -> None:
    resources = everything(client, resource_type)
    assert resources
    for value in EDGE_VALUES:
        for prefix in PREFIXES:
            assert_search_matches(client, resource_type, param, prefix + value, resources)
    # Chained, the same values reach the same reader.
    chained = client.get("/fhir/CarePlan", params={"part-of.date": "ge9999-12-31T23:59:59-14:00"})
    assert chained.status_code == 200, chained.text


@pytest.mark.parametrize(("resource_type", "param"), DATE_PARAMETERS)
@pytest.mark.parametrize("value", [*INVALID_VALUES, "xx2026", "ge2026-01-05T10:00:00+14:30"])
def test_an_invalid_date_is_a_400_naming_the_parameter(
    client: Client, resource_type: str, param: str, value: str
) -> None:
    response = client.get(f"/fhir/{resource_type}", params={param: value})
    assert_invalid_parameter(response, param)


def test_an_open_period_is_found_at_the_end_of_the_calendar(client: Client, data: Any) -> None:
    """``ge`` the last instant finds what has no end; ``le`` the first, what has no start."""
    goals = everything(client, "Goal")
    plans = everything(client, "CarePlan")
    open_ended = [p["id"] for p in plans if "end" not in p.get("period", {"end": None})]
    response = client.get(
        "/fhir/CarePlan", params={"date": "ge9999-12-31T23:59:59-14:00", "_count": 200}
    )
    assert sorted(e["resource"]["id"] for e in response.json().get("entry", [])) == sorted(
        open_ended
    )
    assert goals
    none = client.get("/fhir/Goal", params={"target-date": "ge9999-12-31T23:59:59-14:00"})
    assert none.json()["total"] == 0


# --- history ----------------------------------------------------------------------------


def history_paths(data: dict[str, Any], client: Client) -> list[str]:
    episode = everything(client, "CarePlan")[0]["id"]
    return ["/fhir/_history", "/fhir/CarePlan/_history", f"/fhir/CarePlan/{episode}/_history"]


@pytest.mark.parametrize("param", ["_since", "_at"])
def test_history_answers_every_edge_instant(client: Client, data: Any, param: str) -> None:
    for path in history_paths(data, client):
        everything_there = client.get(path, params={"_count": 500}).json()
        versions = len(everything_there.get("entry", []))
        assert versions
        for value in INSTANT_EDGES:
            response = client.get(path, params={param: value, "_count": 500})
            assert response.status_code == 200, (path, param, value, response.text)
            found = len(response.json().get("entry", []))
            early = value.startswith("0001")
            if param == "_since":
                # Since the first instant: every version; since the last: none.
                assert found == (versions if early else 0), (path, value)
            else:
                # Current at the first instant: nothing; at the last: each resource's latest.
                latest = {e["fullUrl"] for e in everything_there["entry"]}
                assert found == (0 if early else len(latest)), (path, value)
                assert response.json()["link"][0]["url"]


@pytest.mark.parametrize("param", ["_since", "_at"])
@pytest.mark.parametrize(
    "value", [*INVALID_VALUES, "2026-01-05", "2026-01-05T10:00:00", "2026-01-05T10:00Z"]
)
def test_history_refuses_what_is_not_an_instant(
    client: Client, data: Any, param: str, value: str
) -> None:
    for path in history_paths(data, client):
        assert_invalid_parameter(client.get(path, params={param: value}), param)


def test_a_poll_since_the_end_of_the_calendar_pages_on(client: Client, data: Any) -> None:
    """The horizon of a poll at the end of the calendar is carried by its links."""
    response = client.get("/fhir/_history", params={"_since": "9999-12-31T23:59:59-14:00"})
    assert response.status_code == 200
    assert response.json()["meta"]["lastUpdated"] == "9999-12-31T23:59:59.999Z"


# --- native list ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["updated_since", "updated_before"])
@pytest.mark.parametrize("value", INSTANT_EDGES)
def test_native_list_answers_every_edge_instant(
    client: Client, data: Any, field: str, value: str
) -> None:
    response = client.get("/api/v1/care-plans", params={field: value})
    assert response.status_code == 200, response.text
    body = response.json()
    early = value.startswith("0001")
    # Since the first instant or before the last: every plan; otherwise none.
    everything_listed = (field == "updated_since") == early
    assert body["total"] == (2 if everything_listed else 0), value
    for link in body["links"].values():
        if link:
            assert client.get(link).status_code == 200


@pytest.mark.parametrize("field", ["updated_since", "updated_before"])
@pytest.mark.parametrize(
    "value", [*INVALID_VALUES, "2026-01-05", "2026-01-05T10:00:00", "9999-12-31T23:59:59"]
)
def test_native_list_refuses_what_is_not_an_instant(client: Client, field: str, value: str) -> None:
    response = client.get("/api/v1/care-plans", params={field: value})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [field]
    assert response.json()["errors"][0]["location"] == "query"


# --- AuditEvent -------------------------------------------------------------------------


@pytest.mark.parametrize("value", EDGE_VALUES)
def test_audit_date_answers_every_edge_value(client: Client, data: Any, value: str) -> None:
    recorded = client.get("/fhir/AuditEvent", params={"_count": 200, "_total": "accurate"})
    total = recorded.json()["total"]
    assert total
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
        response = client.get(
            "/fhir/AuditEvent", params={"date": prefix + value, "_total": "accurate"}
        )
        assert response.status_code == 200, (prefix, value, response.text)
        # Every record was written in between the two ends of the calendar.
        after_start_of_calendar = value.startswith("0001")
        matches_all = (
            prefix in ("ne", "gt", "sa", "ge")
            if after_start_of_calendar
            else (prefix in ("ne", "lt", "eb", "le"))
        )
        assert response.json()["total"] >= (total if matches_all else 0)
        if not matches_all:
            assert response.json()["total"] == 0, (prefix, value)


@pytest.mark.parametrize("value", [*INVALID_VALUES, "ap2026-01-05", "xx2026"])
def test_audit_date_refuses_an_invalid_value(client: Client, value: str) -> None:
    assert_invalid_parameter(client.get("/fhir/AuditEvent", params={"date": value}), "date")


# --- cursors ----------------------------------------------------------------------------

CRAFTED_SEARCH_CURSORS = [
    "bogus",
    "!!!",
    cursor([1, 2]),
    cursor("text"),
    cursor(10**30),
    cursor({"v": "a", "i": 5}),
    cursor({"v": "a", "i": ["x"]}),
    cursor({"v": "a", "i": "x" * 65}),
    cursor({"v": "a", "i": "\ud800"}),
    cursor({"v": "\ud800", "i": "a"}),
    cursor({"v": 10**30, "i": "a"}),
    cursor({"v": {"x": 1}, "i": "a"}),
    cursor({"v": "a", "i": "a", "b": "yes"}),
    cursor({"v": "a", "i": "a", "z": 1}),
    cursor({"v": "0001-01-01T00:00:00", "i": "a", "t": "dt"}),
    cursor({"v": "10000-01-01T00:00:00+00:00", "i": "a", "t": "dt"}),
    cursor({"v": 5, "i": "a", "t": "dt"}),
    base64.urlsafe_b64encode(b'{"v": "a", "i": "a", "x": ' + b"9" * 5000 + b"}").decode(),
]


@pytest.mark.parametrize("crafted", CRAFTED_SEARCH_CURSORS)
@pytest.mark.parametrize("sort", ["_id", "-_lastUpdated", "date"])
def test_a_crafted_search_cursor_is_a_400(
    client: Client, data: Any, crafted: str, sort: str
) -> None:
    response = client.get("/fhir/CarePlan", params={"_cursor": crafted, "_sort": sort})
    assert_invalid_parameter(response, "_cursor")


@pytest.mark.parametrize("sort", ["_id", "-_lastUpdated", "date", "-date"])
def test_cursors_of_one_sort_are_refused_by_another_and_pages_cover_all(
    client: Client, data: Any, sort: str
) -> None:
    total = len(everything(client, "CarePlan"))
    seen: list[str] = []
    response = client.get("/fhir/CarePlan", params={"_sort": sort, "_count": 3})
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        response = client.http.get(following[0], timeout=30)
    assert len(seen) == len(set(seen)) == total
    first = client.get("/fhir/CarePlan", params={"_sort": sort, "_count": 1}).json()
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    token = next_url.split("_cursor=")[1]
    other = "date" if sort == "_id" else "_id"
    mismatched = client.get("/fhir/CarePlan", params={"_sort": other, "_cursor": unquote(token)})
    assert_invalid_parameter(mismatched, "_cursor")


@pytest.mark.parametrize(
    "crafted",
    [
        "x",
        "1-",
        "-1",
        "1-x",
        "99999999999999999999",
        "1-999999999999999",
        "1-9999999999999999",
        "1-253402300800000",
        "9223372036854775807999-1",
    ],
)
def test_a_crafted_history_cursor_is_a_400(client: Client, data: Any, crafted: str) -> None:
    for path in history_paths(data, client):
        assert_invalid_parameter(client.get(path, params={"_cursor": crafted}), "_cursor")


def test_the_last_horizon_is_a_valid_history_cursor(client: Client, data: Any) -> None:
    response = client.get("/fhir/_history", params={"_cursor": "1-253402300799999"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "crafted",
    [
        "bogus",
        cursor([]),
        cursor({"r": 5, "i": "a"}),
        cursor({"r": "2026-01-05T10:00:00", "i": "a"}),
        cursor({"r": "0001-01-01T00:00:00+14:00", "i": 7}),
        cursor({"r": "2026-01-05T10:00:00Z", "i": "\ud800"}),
        cursor({"r": "10000-01-01T00:00:00Z", "i": "a"}),
    ],
)
def test_a_crafted_audit_cursor_is_a_400(client: Client, crafted: str) -> None:
    assert_invalid_parameter(client.get("/fhir/AuditEvent", params={"_cursor": crafted}), "_cursor")


def test_an_audit_cursor_at_the_start_of_the_calendar_is_answered(
    client: Client, data: Any
) -> None:
    edge = cursor({"r": "0001-01-01T00:00:00+14:00", "i": "a"})
    response = client.get("/fhir/AuditEvent", params={"_cursor": edge})
    assert response.status_code == 200, response.text
    assert response.json().get("entry", []) == []


# --- property: any datetime with any offset ------------------------------------------------

OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timedelta(minutes=m))


@st.composite
def query_values(draw: st.DrawFn) -> str:
    """A FHIR dateTime of any year 1-9999 with any offset -14:00..+14:00, at any precision."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    offset = draw(OFFSETS)
    sign = "-" if offset < timedelta() else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    zone = draw(st.sampled_from(["Z", f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"]))
    precision = draw(st.sampled_from(["year", "month", "day", "minute", "second", "fraction"]))
    forms = {
        "year": f"{moment.year:04d}",
        "month": f"{moment.year:04d}-{moment.month:02d}",
        "day": moment.date().isoformat(),
        "minute": moment.isoformat(timespec="minutes") + zone,
        "second": moment.isoformat(timespec="seconds") + zone,
        "fraction": moment.isoformat(timespec="milliseconds") + zone,
    }
    return draw(st.sampled_from(PREFIXES)) + forms[precision]


@pytest.mark.slow
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=query_values(), target=st.sampled_from(DATE_PARAMETERS))
def test_any_datetime_with_any_offset_is_answered_as_fhir_says(
    client: Client, data: Any, value: str, target: tuple[str, str]
) -> None:
    resource_type, param = target
    assert_search_matches(client, resource_type, param, value, everything(client, resource_type))
    since = value[2:]
    if re.fullmatch(r".+T\d\d:\d\d:\d\d.*(Z|[+-]\d\d:\d\d)", since):
        history = client.get("/fhir/_history", params={"_since": since})
        assert history.status_code == 200, history.text
        native = client.get("/api/v1/care-plans", params={"updated_since": since})
        assert native.status_code == 200, native.text


# --- text no database can hold ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/fhir/CarePlan", "status", "a\x00b"),
        ("/fhir/CarePlan", "_id", "\x00"),
        ("/fhir/CarePlan", "patient", "Patient/\x00"),
        ("/fhir/CarePlan", "part-of.identifier", "x|\x00"),
        ("/fhir/CarePlan", "_has:CarePlan:part-of:status", "\x00"),
        ("/fhir/CarePlan", "_sort", "\x00"),
        ("/fhir/CarePlan", "colour", "\x00"),
        ("/fhir/Goal", "lifecycle-status", "active\x00"),
        ("/fhir/AuditEvent", "agent", "a\x00"),
        ("/fhir/AuditEvent", "date", "\x00"),
    ],
)
def test_a_nul_character_in_a_search_is_a_400(
    client: Client, data: Any, path: str, name: str, value: str
) -> None:
    assert_invalid_parameter(client.get(path, params={name: value}), name)


def test_a_lone_surrogate_in_a_bundle_search_is_refused_naming_its_entries(
    client: Client, data: Any
) -> None:
    urls = ["CarePlan?status=\ud800", "CarePlan?\ud800=x", "Goal?_id=a&_sort=\ud800", "CarePlan"]
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": url}} for url in urls],
    }
    response = client.post(
        "/fhir",
        data=json.dumps(body),
        headers={"Content-Type": "application/fhir+json"},
    )
    # A lone surrogate is no character: the body as a whole is refused, each place named.
    assert response.status_code == 422, response.text
    expressions = {e for i in response.json()["issue"] for e in i["expression"]}
    assert expressions == {f"Bundle.entry[{i}].request.url" for i in range(3)}


# --- page sizes -----------------------------------------------------------------------------

COUNT_PATHS = [
    "/fhir/CarePlan",
    "/fhir/Goal",
    "/fhir/_history",
    "/fhir/CarePlan/_history",
    "/fhir/AuditEvent",
]


@pytest.mark.parametrize("path", COUNT_PATHS)
@pytest.mark.parametrize("value", ["9223372036854775808", "9" * 5000, "0" * 30 + "2"])
def test_a_count_of_any_size_is_answered(client: Client, data: Any, path: str, value: str) -> None:
    response = client.get(path, params={"_count": value})
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    assert len(entries) == 2 if value.endswith("2") else len(entries) > 2


@pytest.mark.parametrize("path", COUNT_PATHS)
@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "-1", "1.5", "", " 1", "1e3"])
def test_a_count_that_is_not_a_whole_number_is_a_400(client: Client, path: str, value: str) -> None:
    assert_invalid_parameter(client.get(path, params={"_count": value}), "_count")
