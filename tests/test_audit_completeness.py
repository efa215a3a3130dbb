"""Who saw patient X: every response holding a patient's records is found by
``AuditEvent?patient=`` for that patient, on every route that reads.

The routes come from the app's URL map: a new route that reads fails
``test_every_reading_route_has_a_case`` until it has a case here. Each case makes requests
whose responses hold the records of two patients where the route can, computes the
patients from the response as a reader would (the FHIR ``subject`` and AuditEvent
``entity`` references, the native ``patient``, the patient of the plan in the URL) and
asserts that the trail names each of them for that very request.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import Client, Server
from test_homework import assign, attend_first_session

from service.db import Database

AUDITOR = {"X-Actor": "auditor"}

# Routes that never serve patient data (nor are they audited as such).
NO_PATIENT_DATA = {
    "/",
    "/.well-known/jwks.json",
    "/.well-known/smart-configuration",
    "/auth/token",
    "/docs",
    "/docs/assets/<path:filename>",
    "/docs/init.js",
    "/fhir/metadata",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/readyz",
    "/static/<path:filename>",
    # The instrument declarations: any authenticated client reads them, unaudited.
    "/api/v1/instruments",
    "/api/v1/instruments/<key>",
    # The subscription topics' definitions, served like the conformance resources.
    "/fhir/Basic",
    "/fhir/Basic/<resource_id>",
}
# Subscriptions hold no patient's records; their events do, and the audit of an $events
# answer is checked by tests/test_subscription_outbox.py (its server may notify this
# machine, which the shared server's endpoint policy refuses).
SUBSCRIPTION_ROUTES = {
    ("/fhir/Subscription", "GET"),
    ("/fhir/Subscription/<resource_id>", "GET"),
    ("/fhir/Subscription/$status", "GET"),
    ("/fhir/Subscription/<resource_id>/$status", "GET"),
    ("/fhir/Subscription/<resource_id>/$events", "GET"),
}
# Routes that answer aggregate figures of many patients and name none: their reads are
# audited naming no patient (tests/test_outcomes_report.py checks that record).
AGGREGATE = {("/api/v1/reports/outcomes", "GET")}
# Bulk export: a kick-off and its status hold no records (the files do, below).
EXPORT_CONTROL = {
    ("/fhir/$export", "GET"),
    ("/fhir/Patient/$export", "GET"),
    ("/fhir/Patient/<patient_id>/$export", "GET"),
    ("/fhir/$export-status/<job_id>", "GET"),
}


@dataclass
class Episode:
    patient: str
    plan: dict[str, Any]
    identifier: str
    goal_id: str
    homework_id: str
    administration_id: str
    signal_id: str

    @property
    def score_id(self) -> str:
        """The PHQ-9 administration: its QuestionnaireResponse and Observation."""
        return self.administration_id

    @property
    def flag_id(self) -> str:
        """The safety signal it raised: its Flag."""
        return self.signal_id


@dataclass
class World:
    client: Client
    first: Episode
    second: Episode

    @property
    def episodes(self) -> tuple[Episode, Episode]:
        return self.first, self.second

    def patient_of_plan(self, plan_id: str) -> str | None:
        return next((e.patient for e in self.episodes if e.plan["id"] == plan_id), None)


def make_episode(client: Client, database: Database, tag: str) -> Episode:
    patient = f"Patient/aud-{tag}-{uuid.uuid4().hex[:8]}"
    identifier = f"id-{uuid.uuid4().hex[:10]}"
    plan = client.create_plan(
        patient=patient, identifiers=[{"system": "urn:audit-test", "value": identifier}]
    )
    goals = client.get(f"/api/v1/care-plans/{plan['id']}/goals").json()["items"]
    attend_first_session(client, plan)
    task = assign(client, plan)
    # PHQ-9 item 9 answered above 0: the administration raises a safety signal.
    scores = {f"phq-9-{n}": 1 for n in range(1, 10)}
    administration = client.post(
        f"/api/v1/care-plans/{plan['id']}/administrations",
        json={"instrument": "phq-9", "session_number": 1, "answers": scores},
    ).json()
    signals = client.get(f"/api/v1/care-plans/{plan['id']}/safety-signals").json()["items"]
    return Episode(
        patient,
        plan,
        identifier,
        goals[0]["id"],
        task["id"],
        administration["id"],
        signals[0]["id"],
    )


@pytest.fixture
def world(client: Client, database: Database) -> World:
    return World(client, make_episode(client, database, "a"), make_episode(client, database, "b"))


# A request: (method, path, keyword arguments of requests).
Request = tuple[str, str, dict[str, Any]]


def native(world: World, *parts: object) -> list[Request]:
    """The same native path for both episodes."""
    return [
        ("GET", "/".join([f"/api/v1/care-plans/{e.plan['id']}", *map(str, parts)]), {})
        for e in world.episodes
    ]


def bundle(kind: str, world: World) -> list[Request]:
    entries = [
        {"request": {"method": "GET", "url": f"CarePlan/{e.plan['id']}"}} for e in world.episodes
    ] + [
        {"request": {"method": "GET", "url": f"Goal?patient={world.second.patient}"}},
        {"request": {"method": "GET", "url": f"Observation/{world.first.score_id}"}},
        {"request": {"method": "GET", "url": f"Flag?patient={world.second.patient}"}},
    ]
    body = {"resourceType": "Bundle", "type": kind, "entry": entries}
    headers = {"Content-Type": "application/fhir+json"}
    return [("POST", "/fhir", {"data": json.dumps(body), "headers": headers})]


def both_ids(world: World) -> str:
    return ",".join(e.plan["id"] for e in world.episodes)


def audit_read(world: World) -> list[Request]:
    found = world.client.get(
        "/fhir/AuditEvent", params={"patient": world.first.patient, "_count": "1"}, headers=AUDITOR
    ).json()
    return [("GET", f"/fhir/AuditEvent/{found['entry'][0]['resource']['id']}", {})]


def export_files(world: World) -> list[Request]:
    """The files of an export of every CarePlan, once it is complete."""
    client = world.client
    started = client.get(
        "/fhir/$export", params={"_type": "CarePlan"}, headers={"Prefer": "respond-async"}
    )
    status = started.headers["Content-Location"].removeprefix(client.base_url)
    for _ in range(600):
        polled = client.get(status)
        if polled.status_code == 200:
            break
        time.sleep(0.05)
    return [
        ("GET", item["url"].removeprefix(client.base_url), {}) for item in polled.json()["output"]
    ]


# (rule, method) -> the requests that exercise it, and how many patients at least one of
# those responses must hold (two where the route can answer for several patients).
CASES: dict[tuple[str, str], tuple[Callable[[World], list[Request]], int]] = {
    ("/api/v1/care-plans", "GET"): (lambda w: [("GET", "/api/v1/care-plans", {})], 2),
    ("/api/v1/care-plans/<plan_id>", "GET"): (lambda w: native(w), 1),
    ("/api/v1/care-plans/<plan_id>/changes", "GET"): (lambda w: native(w, "changes"), 1),
    ("/api/v1/care-plans/<plan_id>/goals", "GET"): (lambda w: native(w, "goals"), 1),
    ("/api/v1/care-plans/<plan_id>/goals/<goal_id>", "GET"): (
        lambda w: [("GET", f"/api/v1/care-plans/{w.first.plan['id']}/goals/{w.first.goal_id}", {})],
        1,
    ),
    ("/api/v1/care-plans/<plan_id>/homework", "GET"): (lambda w: native(w, "homework"), 1),
    ("/api/v1/care-plans/<plan_id>/homework/<homework_id>", "GET"): (
        lambda w: [
            ("GET", f"/api/v1/care-plans/{w.first.plan['id']}/homework/{w.first.homework_id}", {})
        ],
        1,
    ),
    ("/api/v1/care-plans/<plan_id>/administrations", "GET"): (
        lambda w: native(w, "administrations"),
        1,
    ),
    ("/api/v1/care-plans/<plan_id>/administrations/<administration_id>", "GET"): (
        lambda w: [
            (
                "GET",
                f"/api/v1/care-plans/{e.plan['id']}/administrations/{e.administration_id}",
                {},
            )
            for e in w.episodes
        ],
        1,
    ),
    ("/api/v1/care-plans/<plan_id>/safety-signals", "GET"): (
        lambda w: native(w, "safety-signals"),
        1,
    ),
    ("/api/v1/care-plans/<plan_id>/safety-signals/<signal_id>", "GET"): (
        lambda w: [
            ("GET", f"/api/v1/care-plans/{e.plan['id']}/safety-signals/{e.signal_id}", {})
            for e in w.episodes
        ],
        1,
    ),
    ("/api/v1/care-plans/<plan_id>/phases", "GET"): (lambda w: native(w, "phases"), 1),
    ("/api/v1/care-plans/<plan_id>/progress", "GET"): (lambda w: native(w, "progress"), 1),
    ("/api/v1/care-plans/<plan_id>/progress.svg", "GET"): (
        lambda w: native(w, "progress.svg"),
        1,
    ),
    ("/api/v1/care-plans/<plan_id>/summary", "GET"): (lambda w: native(w, "summary"), 1),
    ("/api/v1/care-plans/<plan_id>/phases/<phase>", "GET"): (
        lambda w: native(w, "phases", "initial"),
        1,
    ),
    ("/api/v1/care-plans/<plan_id>/sessions", "GET"): (lambda w: native(w, "sessions"), 1),
    ("/api/v1/care-plans/<plan_id>/sessions/<int:number>", "GET"): (
        lambda w: native(w, "sessions", 1),
        1,
    ),
    ("/fhir/<resource_type>", "GET"): (
        lambda w: [
            ("GET", "/fhir/CarePlan", {"params": {"_count": "1000"}}),  # no patient filter
            ("GET", "/fhir/CarePlan", {"params": {"_id": both_ids(w)}}),
            (
                "GET",
                "/fhir/CarePlan",
                {"params": {"identifier": f"urn:audit-test|{w.second.identifier}"}},
            ),
            (
                "GET",
                "/fhir/CarePlan",
                {"params": {"patient": f"{w.first.patient},{w.second.patient}"}},
            ),
            (
                "GET",
                "/fhir/CarePlan",
                {"params": {"_id": both_ids(w), "_include": "CarePlan:goal"}},
            ),
            (
                "GET",
                "/fhir/CarePlan",
                {"params": {"_id": both_ids(w), "_revinclude": "CarePlan:part-of"}},
            ),
            ("GET", "/fhir/Goal", {"params": {"_count": "1000"}}),
            (
                "GET",
                "/fhir/Observation",
                {"params": {"code": "44261-6", "_include": "Observation:derived-from"}},
            ),
            ("GET", "/fhir/Flag", {"params": {"status": "active"}}),
            (
                "GET",
                "/fhir/CarePlan",
                {"params": {"_id": both_ids(w), "_revinclude": "QuestionnaireResponse:based-on"}},
            ),
        ],
        2,
    ),
    ("/fhir/<resource_type>/_search", "POST"): (
        lambda w: [("POST", "/fhir/CarePlan/_search", {"data": {"_id": both_ids(w)}})],
        2,
    ),
    ("/fhir/<resource_type>/<resource_id>", "GET"): (
        lambda w: [
            ("GET", f"/fhir/CarePlan/{w.first.plan['id']}", {}),
            ("GET", f"/fhir/Goal/{w.second.goal_id}", {}),
            ("GET", f"/fhir/Observation/{w.first.score_id}", {}),
            ("GET", f"/fhir/QuestionnaireResponse/{w.second.score_id}", {}),
            ("GET", f"/fhir/Flag/{w.first.flag_id}", {}),
        ],
        1,
    ),
    ("/fhir/<resource_type>/<resource_id>/_history", "GET"): (
        lambda w: [
            ("GET", f"/fhir/CarePlan/{w.first.plan['id']}/_history", {}),
            ("GET", f"/fhir/Observation/{w.second.score_id}/_history", {}),
        ],
        1,
    ),
    ("/fhir/<resource_type>/<resource_id>/_history/<version_id>", "GET"): (
        lambda w: [
            ("GET", f"/fhir/CarePlan/{w.second.plan['id']}/_history/1", {}),
            ("GET", f"/fhir/Flag/{w.first.flag_id}/_history/1", {}),
        ],
        1,
    ),
    ("/fhir/<resource_type>/_history", "GET"): (
        lambda w: [
            ("GET", "/fhir/CarePlan/_history", {"params": {"_count": "1000"}}),
            ("GET", "/fhir/QuestionnaireResponse/_history", {"params": {"_count": "1000"}}),
        ],
        2,
    ),
    ("/fhir/_history", "GET"): (
        lambda w: [("GET", "/fhir/_history", {"params": {"_count": "1000"}})],
        2,
    ),
    ("/fhir", "POST"): (lambda w: bundle("batch", w), 2),
    ("/fhir/", "POST"): (lambda w: bundle("transaction", w), 2),
    ("/fhir/AuditEvent", "GET"): (
        lambda w: [("GET", "/fhir/AuditEvent", {"params": {"_count": "1000"}})],
        2,
    ),
    ("/fhir/AuditEvent/<audit_id>", "GET"): (audit_read, 1),
    ("/fhir/$export-file/<job_id>/<int:number>", "GET"): (export_files, 2),
}


def reading_routes(live: Server) -> Iterator[tuple[str, str]]:
    """Every (rule, method) that answers with stored records: GETs, searches by POST and
    Bundles (their GET entries)."""
    for rule in live.app.url_map.iter_rules():
        if rule.rule in NO_PATIENT_DATA:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method == "GET" or rule.endpoint in ("fhir.search_post", "fhir.bundle"):
                yield rule.rule, method


def test_every_reading_route_has_a_case(live: Server) -> None:
    assert set(reading_routes(live)) == (
        set(CASES) | AGGREGATE | SUBSCRIPTION_ROUTES | EXPORT_CONTROL
    )


def patients_of(document: Any, world: World, path: str) -> set[str]:
    """The patients whose records a response holds, as a reader of it sees them."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            subject = node.get("subject")
            if isinstance(subject, dict) and str(subject.get("reference", "")).startswith(
                "Patient/"
            ):
                found.add(subject["reference"])
            if isinstance(node.get("patient"), str):
                found.add(node["patient"])
            if node.get("resourceType") == "AuditEvent":
                for entity in node.get("entity", []):
                    what = entity.get("what", {}).get("reference", "")
                    if what.startswith("Patient/"):
                        found.add(what)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    parts = path.split("/")
    if parts[1:4] == ["api", "v1", "care-plans"] and len(parts) > 4:
        # Native sub-resources hold no patient field: theirs is their plan's.
        owner = world.patient_of_plan(parts[4])
        if owner:
            found.add(owner)
    return found


def request_ids_recorded_for(client: Client, patient: str) -> set[str]:
    bundle = client.get(
        "/fhir/AuditEvent", params={"patient": patient, "_count": "1000"}, headers=AUDITOR
    ).json()
    recorded = set()
    for entry in bundle.get("entry", []):
        for entity in entry["resource"].get("entity", []):
            if entity.get("type", {}).get("code") == "XrequestId":
                recorded.add(entity["what"]["identifier"]["value"])
    return recorded


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[1]} {r[0]}")
def test_every_patient_in_a_response_is_found_in_the_trail(
    route: tuple[str, str], client: Client, world: World
) -> None:
    make, at_least = CASES[route]
    most = 0
    answered: list[tuple[str, set[str]]] = []
    for method, path, kwargs in make(world):
        request_id = f"complete-{uuid.uuid4().hex[:16]}"
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": request_id}
        response = client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 200, (path, response.text[:300])
        # The chart and the summary page are no JSON: their patient is their plan's.
        kind = response.headers.get("Content-Type", "")
        document = None
        if "ndjson" in kind:  # an export file: one resource a line
            document = [json.loads(line) for line in response.text.splitlines()]
        elif "json" in kind:
            document = response.json()
        patients = patients_of(document, world, path)
        assert patients, f"{method} {path} returned no patient's records"
        most = max(most, len({p for p in patients if p in {e.patient for e in world.episodes}}))
        answered.append((request_id, patients))
    assert most >= at_least, "no response held the records of both patients"
    for request_id, patients in answered:
        for patient in patients:
            assert request_id in request_ids_recorded_for(client, patient), (
                route,
                request_id,
                patient,
            )


def test_one_record_per_patient_and_each_names_only_its_patient(
    client: Client, world: World
) -> None:
    request_id = f"split-{uuid.uuid4().hex[:16]}"
    response = client.get(
        "/fhir/CarePlan", params={"_id": both_ids(world)}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200
    seen = {}
    for episode in world.episodes:
        bundle = client.get(
            "/fhir/AuditEvent", params={"patient": episode.patient}, headers=AUDITOR
        ).json()
        for entry in bundle["entry"]:
            event = entry["resource"]
            ids = [
                e["what"]["identifier"]["value"]
                for e in event.get("entity", [])
                if e.get("type", {}).get("code") == "XrequestId"
            ]
            if ids == [request_id]:
                named = [
                    e["what"]["reference"]
                    for e in event["entity"]
                    if e.get("role", {}).get("code") == "1"
                ]
                seen[event["id"]] = named
                query = next(e["query"] for e in event["entity"] if "query" in e)
                assert (
                    base64.b64decode(query).decode() == f"_id={both_ids(world).replace(',', '%2C')}"
                )
    # Two AuditEvents, one per patient, each naming only its own.
    assert sorted(seen.values()) == sorted([[e.patient] for e in world.episodes])
