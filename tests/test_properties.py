"""Property-based tests over the whole OpenAPI document the server publishes (/openapi.json):
every native and FHIR operation, called over real HTTP with an administrator's token.

Cases come from schemathesis's strategies for each operation. Path parameters are drawn,
most of the time, from a seed of real plans (so that calls reach the handlers and a good
share of them succeed) and otherwise left to the generator. The FHIR operations document
neither request bodies nor search parameters, so their bodies and queries are drawn from
resources of the seed and from the search parameters of the CapabilityStatement. A share
of the cases carries one hostile value of issue #14's classes (tests/strategies.py).

Every response must pass four schemathesis checks:

- ``not_a_server_error``: no 5xx, whatever was sent;
- ``status_code_conformance``: the status is one the operation documents;
- ``content_type_conformance``: the media type is the one documented for that status;
- ``response_schema_conformance``: the body matches the documented schema.

Left out on purpose: ``positive_data_acceptance`` (schema-valid input is still refused
by domain rules the schema cannot express: a session beyond the contract, a due date before
the assignment, an id that does not exist), ``negative_data_rejection`` (the FHIR
operations document no body, so every body the test sends would count as "negative"),
``max_response_time`` (the machine is shared; time is measured elsewhere) and the stateful
checks (``use_after_free`` and friends), which need schemathesis's own state machine.

Failures are collected instead of raised inside the example loop, so one run lists every
distinct failure (operation, status, failed check, hostile class) rather than only the first
one shrunk; the test then fails with that list. The examples are derandomized (a fixed
seed) and generation-only, so every run sends the same requests, within a fixed budget.
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from seeding import Seeds
from strategies import (
    BAD_BUNDLE_ENTRIES,
    FHIR_DATE_PARAMETERS,
    HISTORY_DATE_PARAMETERS,
    HOSTILE_HEADER_TEXTS,
    Mutation,
    calendar_edge_date,
    calendar_edge_datetime,
    edge_integer,
    fhir_date_search_value,
    json_patch_wrong_types,
    mutation,
)

from fhir_mappings.topics import TOPICS

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FHIR_JSON = "application/fhir+json"
PATCH_JSON = "application/json-patch+json"
EPISODE_EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "episode.json"

# Calendar edges are valid `date` / `date-time` values: schemathesis draws them for every
# parameter and body field of those formats (half the time; the rest are ordinary values).
schemathesis.openapi.format(
    "date-time",
    st.one_of(
        calendar_edge_datetime(),
        st.datetimes(timezones=st.timezones())
        .map(lambda d: d.isoformat())
        .filter(lambda s: "+" in s or s.endswith("Z") or "-" in s[19:]),
    ),
)
schemathesis.openapi.format(
    "date",
    st.one_of(
        calendar_edge_date(),
        st.dates(min_value=date(2025, 6, 1)).map(str),
    ),
)


@dataclass(frozen=True)
class Family:
    """Operations tested together, with their budget of examples."""

    name: str
    matches: Callable[[str, str], bool]  # (method, path) -> belongs
    examples: int  # shared among its operations


FAMILIES = [
    Family(
        "native-plans",
        lambda m, p: (
            p.startswith("/api/v1/care-plans")
            and not re.search(r"/(phases|goals|homework|sessions)", p)
        ),
        100,
    ),
    Family(
        "native-phases-goals",
        lambda m, p: re.search(r"/(phases|goals)", p) is not None and p.startswith("/api/"),
        100,
    ),
    Family(
        "native-homework-sessions",
        lambda m, p: re.search(r"/(homework|sessions)", p) is not None and p.startswith("/api/"),
        130,
    ),
    Family(
        "fhir-read",
        lambda m, p: (
            p.startswith("/fhir") and p != "/fhir" and (m == "GET" or p.endswith("/_search"))
        ),
        130,
    ),
    Family(
        "fhir-write",
        lambda m, p: (
            p.startswith("/fhir") and p != "/fhir" and m != "GET" and not p.endswith("/_search")
        ),
        180,
    ),
    Family("fhir-bundle", lambda m, p: p == "/fhir", 50),
]

#: Share of calls per family that must succeed (2xx or 304): proof that the generated calls
#: reach the handlers, not only the validation in front of them.
MIN_SUCCESS_SHARE = 0.20
#: A health check after this many cases (and after every failure).
HEALTH_EVERY = 25


@pytest.fixture(scope="module")
def schema(server: str) -> schemathesis.BaseSchema:
    """The OpenAPI document as the running server serves it."""
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


@dataclass
class Found:
    """One distinct failure: what was sent and what came back."""

    operation: str
    status: int
    checks: tuple[str, ...]
    hostile: str
    request: str

    def key(self) -> tuple[Any, ...]:
        return (self.operation, self.status, self.checks, self.hostile)

    def __str__(self) -> str:
        return (
            f"{self.operation} -> {self.status} [{', '.join(self.checks)}]"
            f" hostile={self.hostile or '-'}: {self.request}"
        )


@dataclass
class Run:
    """What a family's run saw: statuses per operation and the distinct failures."""

    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    # Operations that document no success (AuditEvent writes: always 405) do not count.
    never_succeed: set[str] = field(default_factory=set)
    failures: dict[tuple[Any, ...], Found] = field(default_factory=dict)
    health: list[str] = field(default_factory=list)
    cases: int = 0

    def successes(self) -> float:
        counted = [c for op, c in self.statuses.items() if op not in self.never_succeed]
        total = sum(sum(c.values()) for c in counted)
        good = sum(n for c in counted for s, n in c.items() if s < 300 or s == 304)
        return good / total if total else 0.0

    def report(self) -> str:
        lines = [str(f) for f in self.failures.values()] + self.health
        lines += [f"  {op}: {dict(sorted(c.items()))}" for op, c in sorted(self.statuses.items())]
        return "\n".join(lines)


# --- FHIR bodies and queries the OpenAPI document does not describe ---------------------------


def read_json(client: Client, path: str) -> Any:
    response = client.get(path)
    return response.json() if response.status_code == 200 else None


def writable(resource: dict[str, Any]) -> dict[str, Any]:
    """A read resource as a client would send it back (no server-owned parts)."""
    return {k: v for k, v in resource.items() if k not in ("meta", "text")}


def episode_body(n: int) -> dict[str, Any]:
    with open(EPISODE_EXAMPLE, encoding="utf-8") as f:
        body = json.load(f)
    body["identifier"] = [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": f"PROP-{n}"}]
    return dict(body)


def fhir_query() -> st.SearchStrategy[dict[str, Any]]:
    """Up to three search parameters of the CapabilityStatement, with valid and edge values
    (the parameters of both types: one the other type lacks is ignored, as FHIR says)."""
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "_count": st.one_of(st.integers(1, 5), edge_integer()),
        "_sort": st.sampled_from(["_lastUpdated", "-_lastUpdated", "_id", "status", "-"]),
        "_summary": st.sampled_from(["count", "true", "data", "false", "text"]),
        "_elements": st.sampled_from(["status", "subject,status", "id"]),
        "_total": st.sampled_from(["accurate", "none", "estimate"]),
        "_id": st.just("does-not-exist"),
        "identifier": st.sampled_from(["urn:oid:1.2.3|SEED-1", "SEED-2", "urn:oid:1.2.3|"]),
        "patient": st.sampled_from(["Patient/100", "Patient/101", "100", "Patient/\x00"]),
        "status": st.sampled_from(["active", "draft,active", "completed"]),
        "category": st.sampled_from(["episode", "phase", "assess-plan"]),
        "part-of": st.just("CarePlan/x"),
        "_include": st.sampled_from(["CarePlan:goal", "CarePlan:part-of"]),
        "_revinclude": st.sampled_from(["CarePlan:part-of", "Goal:*"]),
        "lifecycle-status": st.sampled_from(["active", "proposed"]),
    }
    for name in {n for names in FHIR_DATE_PARAMETERS.values() for n in names}:
        strategies[name] = st.one_of(st.just("ge2026-01-01"), fhir_date_search_value())
    names = st.lists(st.sampled_from(sorted(strategies)), max_size=3, unique=True)
    return names.flatmap(
        lambda chosen: st.fixed_dictionaries({name: strategies[name] for name in chosen})
    )


HISTORY_QUERY = st.fixed_dictionaries(
    {},
    optional={
        "_count": st.one_of(st.integers(1, 5), edge_integer()),
        **{
            name: st.one_of(fhir_date_search_value(), st.just("2026-01-01"))
            for name in HISTORY_DATE_PARAMETERS
        },
    },
)
ACCEPTS = [
    FHIR_JSON,
    FHIR_JSON,
    "application/json",
    "*/*",
    # What FHIR clients send, and must get FHIR JSON for (issue #14, class 7).
    f"{FHIR_JSON}; charset=utf-8",
    f"{FHIR_JSON}; fhirVersion=4.0",
]


@dataclass(frozen=True)
class Draws:
    """Everything random about one case beyond the schemathesis case itself, drawn up front
    and in the same shape for every operation. Choices among what the server holds (which
    changes as cases write) are made with ``pick``, a plain Random seeded by a draw: the
    bounds of each Hypothesis draw must depend on earlier draws only."""

    seeded: bool
    pick: random.Random
    mutation: Mutation
    native_roll: int
    query_value: Any
    header_text: str
    patch_roll: int
    wrong_patch: list[Any]
    new_status: str
    query: dict[str, Any]
    history_query: dict[str, Any]
    accept: str
    bundle_type: str
    bundle_size: int
    bundle_roll: int
    bad_entry: Any


DRAWS = st.builds(
    Draws,
    seeded=st.integers(0, 99).map(lambda n: n < 85),
    pick=st.integers(0, 2**32 - 1).map(random.Random),
    mutation=mutation(),
    native_roll=st.integers(0, 11),
    query_value=st.one_of(edge_integer(), st.just("x\x00y")),
    header_text=st.sampled_from(HOSTILE_HEADER_TEXTS),
    patch_roll=st.integers(0, 3),
    wrong_patch=st.sampled_from(json_patch_wrong_types()),
    new_status=st.sampled_from(["on-hold", "active", "completed"]),
    query=fhir_query(),
    history_query=HISTORY_QUERY,
    accept=st.sampled_from(ACCEPTS),
    bundle_type=st.sampled_from(["batch", "transaction"]),
    bundle_size=st.integers(1, 4),
    bundle_roll=st.integers(0, 5),
    bad_entry=st.sampled_from(BAD_BUNDLE_ENTRIES),
)


@dataclass
class Context:
    client: Client
    seeds: Seeds
    counter: Iterator[int]


# Bodies of the operations that take Parameters, and a subscription to a public https
# address (the test server has no allow-list; nothing is sent, it stays requested).
EXPORT_PARAMETERS = {
    "resourceType": "Parameters",
    "parameter": [{"name": "_type", "valueString": "Goal"}],
}
EVENTS_PARAMETERS = {
    "resourceType": "Parameters",
    "parameter": [{"name": "eventsSinceNumber", "valueString": "1"}],
}


def subscription_body() -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "follow the goals",
        "criteria": TOPICS[0].url,
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://93.184.216.34/notifications",
            "payload": "application/fhir+json",
        },
    }


def fhir_body(
    d: Draws, ctx: Context, method: str, path: str, params: dict[str, Any]
) -> tuple[Any, str, str]:
    """(body, media type, hostile class) for a FHIR write the document gives no body for:
    a resource of the seed as a client would send it back, or a JSON Patch."""
    resource_type = str(params.get("resource_type", "CarePlan"))
    resource_id = str(params.get("resource_id", ""))
    if "$export" in path or "$events" in path:
        body = EXPORT_PARAMETERS if "$export" in path else EVENTS_PARAMETERS
        changed, hostile = d.mutation.apply(copy.deepcopy(body))
        return changed, FHIR_JSON, hostile
    if path.startswith("/fhir/Subscription"):
        body = subscription_body()
        if method == "PUT":
            current = read_json(ctx.client, f"/fhir/Subscription/{resource_id}")
            body = writable(current) if current else {**body, "id": resource_id}
        changed, hostile = d.mutation.apply(body)
        return changed, FHIR_JSON, hostile
    if method == "PATCH":
        if d.patch_roll == 0:
            return d.wrong_patch, PATCH_JSON, "wrong-type"
        element = "/status" if resource_type == "CarePlan" else "/lifecycleStatus"
        return [{"op": "replace", "path": element, "value": d.new_status}], PATCH_JSON, ""
    goals = [g for plan in ctx.seeds.plans for g in plan.goals]
    if resource_type == "Goal" and goals:
        goal = read_json(ctx.client, f"/fhir/Goal/{d.pick.choice(goals)}")
        body = writable(goal) if goal else {"resourceType": "Goal"}
    elif method == "PUT" and "{resource_id}" in path:
        current = read_json(ctx.client, f"/fhir/{resource_type}/{resource_id}")
        body = writable(current) if current else episode_body(next(ctx.counter))
    else:
        body = episode_body(next(ctx.counter))
    if method == "POST" or "{resource_id}" not in path:
        body.pop("id", None)
    else:
        body["id"] = resource_id
    changed, hostile = d.mutation.apply(body)
    return changed, FHIR_JSON, hostile


def bundle_body(d: Draws, ctx: Context) -> tuple[Any, str]:
    """A batch or transaction over resources of the seed; sometimes with one hostile entry."""
    urn = f"urn:uuid:00000000-0000-4000-8000-{next(ctx.counter):012d}"
    plan = d.pick.choice(ctx.seeds.plans)
    choices: list[Any] = [
        {
            "fullUrl": urn,
            "resource": episode_body(next(ctx.counter)),
            "request": {"method": "POST", "url": "CarePlan"},
        },
        {"request": {"method": "GET", "url": f"CarePlan/{plan.id}"}},
        {"request": {"method": "GET", "url": "Goal?patient=Patient/100"}},
    ]
    goal = read_json(ctx.client, f"/fhir/Goal/{plan.goals[0]}") if plan.goals else None
    if goal:
        choices.append(
            {"resource": writable(goal), "request": {"method": "PUT", "url": f"Goal/{goal['id']}"}}
        )
    entries = copy.deepcopy([d.pick.choice(choices) for _ in range(d.bundle_size)])
    hostile = ""
    if d.bundle_roll == 0:
        entries.append(copy.deepcopy(d.bad_entry))
        hostile = "wrong-type"
    elif d.bundle_roll == 1:
        with_resource = [e for e in entries if isinstance(e, dict) and "resource" in e]
        if with_resource and d.mutation.kind != "deep":
            target = d.pick.choice(with_resource)
            target["resource"], hostile = d.mutation.apply(target["resource"])
    elif d.bundle_roll == 2:
        return d.mutation.deep, "deep"
    return {"resourceType": "Bundle", "type": d.bundle_type, "entry": entries}, hostile


def mutate_native(d: Draws, case: Any) -> tuple[str, str | None]:
    """One hostile value in a native case, about half of the time: the class it exercises,
    and the raw JSON text to send instead of the case's body, if any."""
    path_parameters = case.path_parameters or {}
    if d.native_roll in (0, 1) and isinstance(case.body, (dict, list)):
        # The changed body goes as raw text and the case keeps the generated one:
        # schemathesis revalidates a changed body, and its validator cannot read a surrogate.
        kind = "deep" if d.mutation.kind == "deep" else "leaf"
        changed, hostile = Mutation(kind, *astuple(d.mutation)[1:]).apply(case.body)
        case.media_type = "application/json"
        return hostile, _as_raw(changed)
    if d.native_roll == 2 and case.query:
        case.query[d.pick.choice(sorted(case.query))] = d.query_value
        return "integer-or-text", None
    if d.native_roll == 3 and "number" in path_parameters:
        case.path_parameters["number"] = d.mutation.integer
        return "integer", None
    if d.native_roll == 3 and case.method.upper() == "GET":
        case.query = {**(case.query or {}), "page": d.mutation.integer}
        return "integer", None
    if d.native_roll == 4 and case.method.upper() in ("POST", "PATCH", "DELETE"):
        case.headers = {**(case.headers or {}), "X-Actor": d.header_text}
        return "text-header", None
    return "", None


# --- the property ------------------------------------------------------------------------------


def operations(schema: schemathesis.BaseSchema, family: Family) -> list[Any]:
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if family.matches(operation.method.upper(), operation.path):
            found.append(operation)
    return found


def describe(response: Any, body: Any) -> str:
    request = response.request
    sent = body if isinstance(body, str) else json.dumps(body, ensure_ascii=True)
    accept = request.headers.get("Accept", "")
    shown = sent[:160] if body is not None else "-"
    return f"{request.method} {request.url} Accept={accept!r} body={shown}"


def _no_body(body: Any) -> bool:
    return body is None or type(body).__name__ == "NotSet"


def _as_raw(body: Any) -> str:
    """JSON text for ``body`` (a lone surrogate as its ``\\ud800`` escape); a string is
    already the text (a deeply nested one)."""
    return body if isinstance(body, str) else json.dumps(body)


def run_family(client: Client, schema: schemathesis.BaseSchema, family: Family) -> Run:
    seeds = Seeds(client).fill()
    ctx = Context(client, seeds, iter(range(1, 10**9)))
    ops = operations(schema, family)
    assert ops, f"no operation in family {family.name}"
    # Five positive cases for one negative: negative ones stop at validation, and where an
    # operation has no parameter to negate, schemathesis negates the token (a 401).
    strategies = {
        op.label: st.one_of(
            *[op.as_strategy(GenerationMode.POSITIVE)] * 5, op.as_strategy(GenerationMode.NEGATIVE)
        )
        for op in ops
    }
    run = Run()
    run.never_succeed = {
        op.label
        for op in ops
        if not any(code.startswith("2") for code in op.responses.status_codes)
    }
    token = {"Authorization": client.http.headers["Authorization"]}
    for op in ops:
        examples = family.examples // len(ops)
        if op.path.startswith("/fhir/AuditEvent") and op.method.upper() != "GET":
            examples = 4  # always 405: a few cases show it is answered as documented
        run_operation(op, strategies[op.label], max(examples, 4), ctx, run, token)
    healthy(client, run, "at the end")
    print(f"\n{family.name}: {run.cases} cases, {run.successes():.0%} succeeded\n{run.report()}")
    return run


def run_operation(
    op: Any,
    strategy: st.SearchStrategy[Any],
    examples: int,
    ctx: Context,
    run: Run,
    token: dict[str, str],
) -> None:
    """``examples`` generated cases of one operation, with their results added to ``run``."""
    client, seeds = ctx.client, ctx.seeds

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def case_passes(data: st.DataObject) -> None:
        case = data.draw(strategy, label="case")
        d = data.draw(DRAWS, label="draws")
        native = op.path.startswith("/api/")
        method = op.method.upper()
        # Real ids most of the time: generated ones would only ever find 404.
        if d.seeded and seeds.plans:
            seeded = seeds.native_parameters(d.pick) if native else seeds.fhir_parameters(d.pick)
            for name in list(case.path_parameters or {}):
                if name in seeded:
                    case.path_parameters[name] = seeded[name]
        params = dict(case.path_parameters or {})
        raw: str | None = None
        headers = dict(token)
        if native:
            hostile, raw = mutate_native(d, case)
            if raw is None and isinstance(case.body, (dict, list)):
                # Sent as JSON text made here: a lone surrogate goes as its escape.
                raw, case.media_type = _as_raw(case.body), "application/json"
        else:
            hostile = ""
            headers["Accept"] = d.accept
            if "$export" in op.path:
                headers["Prefer"] = "respond-async"
            if op.path == "/fhir":
                body, hostile = bundle_body(d, ctx)
                raw, case.media_type = _as_raw(body), FHIR_JSON
            elif (
                method in ("POST", "PUT", "PATCH")
                and not op.path.endswith("_search")
                and "AuditEvent" not in op.path
            ):
                body, case.media_type, hostile = fhir_body(d, ctx, method, op.path, params)
                raw = _as_raw(body)
            elif op.path.endswith("_history"):
                case.query = {**(case.query or {}), **d.history_query}
            elif op.path.endswith(("{resource_type}", "_search")) and "AuditEvent" not in op.path:
                case.query = {**(case.query or {}), **d.query}
            if not hostile and any(
                re.sub("^[a-z]{2}", "", v).startswith(("0001", "9999")) or "\x00" in v
                for v in map(str, (case.query or {}).values())
            ):
                hostile = "calendar-or-text"
        if raw is not None:
            headers["Content-Type"] = case.media_type or FHIR_JSON
            response = case.call(
                base_url=client.base_url, headers=headers, timeout=30, data=raw.encode()
            )
        else:
            response = case.call(base_url=client.base_url, headers=headers, timeout=30)
        run.cases += 1
        run.statuses[op.label][response.status_code] += 1
        failed: tuple[str, ...] = ()
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            failed = tuple(
                sorted(
                    {
                        f"{f.title}: {' '.join(str(f.message).split())[:240]}"
                        for f in group.exceptions
                    }
                )
            )
        if not native and d.accept in ACCEPTS and response.status_code == 406:
            # 406 is documented on FHIR reads, so the schema checks accept it; but every
            # Accept drawn here names FHIR JSON (R4), which the server produces.
            failed = (*failed, f"406 for Accept {d.accept!r}, which names FHIR JSON R4")
        if failed:
            sent = raw if raw is not None else case.body
            found = Found(
                op.label,
                response.status_code,
                failed,
                hostile,
                describe(response, None if _no_body(sent) else sent),
            )
            run.failures.setdefault(found.key(), found)
        if response.status_code in (200, 204) and method == "DELETE":
            seeds.forget(case.formatted_path)
        if failed or run.cases % HEALTH_EVERY == 0:
            healthy(client, run, f"after {op.label}")

    case_passes()


def healthy(client: Client, run: Run, when: str) -> None:
    """The server still answers, and its database too."""
    started = time.monotonic()
    response = client.get("/readyz")
    if response.status_code != 200:
        run.health.append(f"/readyz {when}: {response.status_code} {response.text[:200]}")
    assert time.monotonic() - started < 10, f"/readyz took too long {when}"


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_operation_answers_as_documented(
    client: Client, schema: schemathesis.BaseSchema, family: Family
) -> None:
    run = run_family(client, schema, family)
    assert run.cases >= family.examples // 2, run.report()
    assert not run.failures and not run.health, (
        f"{len(run.failures)} distinct failures in {run.cases} cases:\n{run.report()}"
    )
    share = run.successes()
    assert share >= MIN_SUCCESS_SHARE, f"only {share:.0%} of calls succeeded:\n{run.report()}"
