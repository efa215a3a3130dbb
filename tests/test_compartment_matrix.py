"""The patient compartment, as a generated matrix: every mix of ``patient/``, ``user/`` and
``system/`` scopes (SMART v1 and v2 syntax), with and without a patient context, from the
service's own clients and from an external identity provider, against every kind of route.

The oracle works from the scopes alone, independently of the service's code: a
``patient/`` scope grants only with a patient context; a token naming a patient sees only
that patient's records, whatever scope grants the request; a wildcard never grants
AuditEvent. The service must agree on every route: 403 when nothing grants, another
patient's record answered as absent (404, left out of lists), nothing of it changed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from conftest import Client, Server, token_for
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from werkzeug.serving import make_server

from api.app import create_app
from service import administrations
from service.db import Database
from service.instruments import PHQ9

OWN = "Patient/123"
OTHER = "Patient/999"
IDP = "https://idp.example.org"
IDP_AUDIENCE = "https://ipt.example.org/fhir"
FHIR = {"Content-Type": "application/fhir+json"}
PATCH = {"Content-Type": "application/json-patch+json"}

# --- the oracle ------------------------------------------------------------------------

_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class Token:
    """One generated token: its scopes, patient context and issuer."""

    scopes: tuple[str, ...]
    patient: str | None
    external: bool

    def grants(self, resource: str, interaction: str) -> bool:
        for text in self.scopes:
            context, _, rest = text.partition("/")
            kind, _, permissions = rest.partition(".")
            if context == "patient" and self.patient is None:
                continue  # a patient scope grants nothing without a patient context
            if kind != resource and not (kind == "*" and resource != "AuditEvent"):
                continue
            if interaction in _V1.get(permissions, permissions):
                return True
        return False

    def patients(self) -> set[str]:
        """The patients whose records the token may reach."""
        return {self.patient} if self.patient is not None else {OWN, OTHER}

    def sees(self, patient: str) -> bool:
        return patient in self.patients()

    def label(self) -> str:
        issuer = "idp" if self.external else "own"
        return f"{issuer}[{' '.join(self.scopes) or '-'}]@{self.patient or 'none'}"


# Each part of a token's scopes: the patient part and the user/system part, each given
# as (context, resource) with the permissions added by the syntax in use.
PATIENT_PARTS: list[tuple[tuple[str, str], ...]] = [
    (),
    (("patient", "*"),),
    (("patient", "CarePlan"),),
]
OTHER_PARTS: list[tuple[tuple[str, str], ...]] = [
    (),
    (("system", "Goal"),),
    (("user", "CarePlan"),),
    (("system", "*"),),
]
# (syntax, permissions): SMART v1 and v2, full and read-only.
SYNTAXES = [("v2", "cruds"), ("v1", "read"), ("v2", "rs"), ("v1", "*")]


def _generated() -> list[Token]:
    tokens = []
    combos = itertools.product(PATIENT_PARTS, OTHER_PARTS, (None, OWN), (False, True))
    for index, (patient_part, other_part, patient, external) in enumerate(combos):
        # The syntaxes rotate over the combinations, so that each appears with each part.
        _, permissions = SYNTAXES[index % len(SYNTAXES)]
        scopes = tuple(f"{c}/{r}.{permissions}" for c, r in (*patient_part, *other_part))
        tokens.append(Token(scopes, patient, external))
    return tokens


TOKENS = _generated()

# --- the external identity provider -----------------------------------------------------


@dataclass
class Issuers:
    own: Server
    idp_url: str
    idp_key: rsa.RSAPrivateKey
    database: Database

    def client(self, token: Token) -> Client:
        if not token.external:
            bearer = token_for(self.own, self.database, list(token.scopes), patient=token.patient)
            return Client(self.own.url, bearer)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": IDP,
            "aud": IDP_AUDIENCE,
            "sub": "user-42",
            "client_id": "ehr-app",
            "iat": now,
            "exp": now + 300,
            "scope": " ".join(token.scopes),
        }
        if token.patient is not None:
            claims["patient"] = token.patient.removeprefix("Patient/")
        bearer = jwt.encode(claims, self.idp_key, algorithm="RS256", headers={"kid": "idp-1"})
        return Client(self.idp_url, bearer)


@pytest.fixture(scope="module")
def issuers(
    live: Server, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Issuers]:
    """The test server for own tokens, and a second one on the same database that also
    accepts an identity provider's tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "idp-1"}]}
    path = Path(tmp_path_factory.mktemp("idp")) / "jwks.json"
    path.write_text(json.dumps(jwks))
    settings = dataclasses.replace(
        live.settings,
        external_issuer=IDP,
        external_jwks_file=str(path),
        external_audience=IDP_AUDIENCE,
    )
    http = make_server("127.0.0.1", 0, create_app(settings, database), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield Issuers(live, f"http://127.0.0.1:{http.server_port}", key, database)
    http.shutdown()


# --- the records ------------------------------------------------------------------------


@dataclass
class Records:
    """A plan of each patient, with goals, a session, homework, and a PHQ-9 administration
    (its QuestionnaireResponse and Observation) that raised a safety signal (its Flag)."""

    plans: dict[str, str]  # patient -> plan (= episode CarePlan) id
    goals: dict[str, list[str]]  # patient -> goal ids
    homework: dict[str, str]
    scores: dict[str, str]  # patient -> administration id
    flags: dict[str, str]  # patient -> safety signal id


@pytest.fixture
def records(client: Client, database: Database) -> Records:
    plans, goals, homework, scores, flags = {}, {}, {}, {}, {}
    for patient in (OWN, OTHER):
        plan = client.create_plan(patient=patient, problem_areas=["grief", "role-transition"])
        base = f"/api/v1/care-plans/{plan['id']}"
        client.post(
            f"{base}/sessions", json={"number": 1, "date": "2026-01-05", "status": "attended"}
        )
        made = client.post(f"{base}/homework", json={"kind": "reconnect", "description": "Call"})
        plans[patient] = plan["id"]
        goals[patient] = [g["id"] for g in client.get(f"{base}/goals").json()["items"]]
        homework[patient] = made.json()["id"]
        answers = {item.link_id: 1 for item in PHQ9.items}
        scores[patient] = administrations.record_administration(
            database,
            plan["id"],
            {"instrument": "phq-9", "session_number": 1, "answers": answers},
            "clinician",
        ).id
        [signal] = administrations.list_signals(database, plan["id"])
        flags[patient] = signal.id
    return Records(plans, goals, homework, scores, flags)


def _subjects(bundle: dict[str, Any]) -> set[tuple[str, str]]:
    """(type, patient) of every resource in a Bundle."""
    found = set()
    for entry in bundle.get("entry", []):
        resource = entry.get("resource")
        if resource is not None:
            found.add((resource["resourceType"], resource["subject"]["reference"]))
    return found


def _expected(token: Token, *types: tuple[str, str]) -> set[tuple[str, str]]:
    """(type, patient) pairs a listing must hold: types whose interaction is granted, for
    the patients the token reaches."""
    return {
        (resource, patient)
        for resource, interaction in types
        if token.grants(resource, interaction)
        for patient in token.patients()
    }


# --- the routes -------------------------------------------------------------------------

Call = Callable[[Client, Records], requests.Response]

# Routes addressing one record of a patient: (name, resource, interaction, patient, call).
ONE: list[tuple[str, str, str, str, Call]] = [
    ("fhir read", "CarePlan", "r", OTHER, lambda c, r: c.get(f"/fhir/CarePlan/{r.plans[OTHER]}")),
    ("fhir read own", "CarePlan", "r", OWN, lambda c, r: c.get(f"/fhir/CarePlan/{r.plans[OWN]}")),
    (
        "fhir vread",
        "CarePlan",
        "r",
        OTHER,
        lambda c, r: c.get(f"/fhir/CarePlan/{r.plans[OTHER]}/_history/1"),
    ),
    (
        "fhir instance history",
        "CarePlan",
        "r",
        OTHER,
        lambda c, r: c.get(f"/fhir/CarePlan/{r.plans[OTHER]}/_history"),
    ),
    ("fhir goal read", "Goal", "r", OTHER, lambda c, r: c.get(f"/fhir/Goal/{r.goals[OTHER][0]}")),
    (
        "fhir observation read",
        "Observation",
        "r",
        OTHER,
        lambda c, r: c.get(f"/fhir/Observation/{r.scores[OTHER]}"),
    ),
    (
        "fhir observation read own",
        "Observation",
        "r",
        OWN,
        lambda c, r: c.get(f"/fhir/Observation/{r.scores[OWN]}"),
    ),
    (
        "fhir response vread",
        "QuestionnaireResponse",
        "r",
        OTHER,
        lambda c, r: c.get(f"/fhir/QuestionnaireResponse/{r.scores[OTHER]}/_history/1"),
    ),
    ("fhir flag read", "Flag", "r", OTHER, lambda c, r: c.get(f"/fhir/Flag/{r.flags[OTHER]}")),
    (
        "fhir flag history",
        "Flag",
        "r",
        OTHER,
        lambda c, r: c.get(f"/fhir/Flag/{r.flags[OTHER]}/_history"),
    ),
    (
        "native plan",
        "CarePlan",
        "r",
        OTHER,
        lambda c, r: c.get(f"/api/v1/care-plans/{r.plans[OTHER]}"),
    ),
    (
        "native plan changes",
        "CarePlan",
        "r",
        OTHER,
        lambda c, r: c.get(f"/api/v1/care-plans/{r.plans[OTHER]}/changes"),
    ),
    (
        "native phases",
        "CarePlan",
        "r",
        OTHER,
        lambda c, r: c.get(f"/api/v1/care-plans/{r.plans[OTHER]}/phases"),
    ),
    (
        "native sessions",
        "CarePlan",
        "r",
        OTHER,
        lambda c, r: c.get(f"/api/v1/care-plans/{r.plans[OTHER]}/sessions"),
    ),
    (
        "native homework",
        "CarePlan",
        "r",
        OTHER,
        lambda c, r: c.get(f"/api/v1/care-plans/{r.plans[OTHER]}/homework/{r.homework[OTHER]}"),
    ),
    (
        "native goals",
        "Goal",
        "s",
        OTHER,
        lambda c, r: c.get(f"/api/v1/care-plans/{r.plans[OTHER]}/goals"),
    ),
    (
        "native goal",
        "Goal",
        "r",
        OTHER,
        lambda c, r: c.get(f"/api/v1/care-plans/{r.plans[OTHER]}/goals/{r.goals[OTHER][0]}"),
    ),
]

# Writes to a record of the other patient: (name, resource, interaction, call).
WRITES: list[tuple[str, str, str, Call]] = [
    (
        "fhir patch",
        "CarePlan",
        "u",
        lambda c, r: c.patch(
            f"/fhir/CarePlan/{r.plans[OTHER]}",
            data='[{"op":"add","path":"/description","value":"changed"}]',
            headers=PATCH,
        ),
    ),
    (
        "native change",
        "CarePlan",
        "u",
        lambda c, r: c.patch(f"/api/v1/care-plans/{r.plans[OTHER]}", json={"formulation": "x"}),
    ),
    (
        "native homework add",
        "CarePlan",
        "u",
        lambda c, r: c.post(
            f"/api/v1/care-plans/{r.plans[OTHER]}/homework",
            json={"kind": "other", "description": "x"},
        ),
    ),
    ("fhir goal delete", "Goal", "d", lambda c, r: c.delete(f"/fhir/Goal/{r.goals[OTHER][0]}")),
    (
        "native goal change",
        "Goal",
        "u",
        lambda c, r: c.patch(
            f"/api/v1/care-plans/{r.plans[OTHER]}/goals/{r.goals[OTHER][1]}",
            json={"priority": "low-priority"},
        ),
    ),
]


def _check_one(
    token: Token,
    name: str,
    resource: str,
    interaction: str,
    patient: str,
    response: requests.Response,
) -> None:
    label = f"{token.label()} {name}"
    if not token.grants(resource, interaction):
        assert response.status_code == 403, (label, response.text)
    elif not token.sees(patient):
        assert response.status_code == 404, (label, response.text)
    else:
        assert response.status_code < 300, (label, response.status_code, response.text)


def _entry_status(entry: dict[str, Any]) -> int:
    return int(entry["response"]["status"].split()[0])


@pytest.mark.parametrize("token", TOKENS, ids=[t.label() for t in TOKENS])
def test_every_route_agrees_with_the_scopes(
    issuers: Issuers, client: Client, records: Records, token: Token
) -> None:
    caller = issuers.client(token)
    label = token.label()

    # Single records, FHIR and native.
    for name, resource, interaction, patient, call in ONE:
        _check_one(token, name, resource, interaction, patient, call(caller, records))

    # Listings: exactly the records of the patients the token reaches.
    listings: list[tuple[str, Call, tuple[tuple[str, str], ...]]] = [
        ("fhir search", lambda c, r: c.get("/fhir/CarePlan"), (("CarePlan", "s"),)),
        (
            "fhir post search",
            lambda c, r: c.post("/fhir/Goal/_search", data={"_count": "100"}),
            (("Goal", "s"),),
        ),
        ("fhir type history", lambda c, r: c.get("/fhir/Goal/_history"), (("Goal", "s"),)),
        (
            "fhir observation search",
            lambda c, r: c.get("/fhir/Observation", params={"code": "44261-6"}),
            (("Observation", "s"),),
        ),
        (
            "fhir response search",
            lambda c, r: c.get("/fhir/QuestionnaireResponse"),
            (("QuestionnaireResponse", "s"),),
        ),
        ("fhir flag history", lambda c, r: c.get("/fhir/Flag/_history"), (("Flag", "s"),)),
    ]
    for name, call, needs in listings:
        response = call(caller, records)
        resource, interaction = needs[0]
        if not token.grants(resource, interaction):
            assert response.status_code == 403, (label, name, response.text)
            continue
        assert response.status_code == 200, (label, name, response.text)
        assert _subjects(response.json()) == _expected(token, *needs), (label, name)

    # _include and _revinclude: what is included needs its own read scope and patient.
    included = [
        ("CarePlan", "CarePlan:goal", "_include", "Goal"),
        ("Goal", "CarePlan:goal", "_revinclude", "CarePlan"),
        ("Observation", "Observation:derived-from", "_include", "QuestionnaireResponse"),
        ("QuestionnaireResponse", "Observation:derived-from", "_revinclude", "Observation"),
    ]
    for searched, value, parameter, other in included:
        response = caller.get(f"/fhir/{searched}", params={parameter: value, "_count": "100"})
        if not token.grants(searched, "s"):
            assert response.status_code == 403, (label, parameter, response.text)
            continue
        assert response.status_code == 200, (label, parameter, response.text)
        matched = _expected(token, (searched, "s"))
        found = _subjects(response.json())
        assert {f for f in found if f[0] == searched} == matched, (label, parameter)
        extra = _expected(token, (other, "r")) if matched else set()
        assert {f for f in found if f[0] == other} == extra, (label, parameter)

    # System history: the types the token may search, for its patients.
    response = caller.get("/fhir/_history", params={"_count": "500"})
    searchable = (
        ("CarePlan", "s"),
        ("Goal", "s"),
        ("QuestionnaireResponse", "s"),
        ("Observation", "s"),
        ("Flag", "s"),
    )
    if not any(token.grants(t, i) for t, i in searchable):
        assert response.status_code == 403, (label, response.text)
    else:
        assert response.status_code == 200, (label, response.text)
        assert _subjects(response.json()) == _expected(token, *searchable), label

    # Native plan list.
    response = caller.get("/api/v1/care-plans", params={"page_size": 100})
    if not token.grants("CarePlan", "s"):
        assert response.status_code == 403, (label, response.text)
    else:
        patients = {item["patient"] for item in response.json()["items"]}
        assert patients == token.patients(), label

    # A batch's entries, each as if sent alone.
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"CarePlan/{records.plans[OTHER]}"}},
            {"request": {"method": "GET", "url": f"Goal/{records.goals[OTHER][0]}"}},
            {"request": {"method": "GET", "url": "CarePlan?_count=100"}},
            {"request": {"method": "GET", "url": f"Observation/{records.scores[OTHER]}"}},
            {"request": {"method": "GET", "url": f"Flag/{records.flags[OTHER]}"}},
        ],
    }
    response = caller.post("/fhir", data=json.dumps(batch), headers=FHIR)
    assert response.status_code == 200, (label, response.text)
    entries = response.json()["entry"]
    for entry, (resource, interaction) in zip(
        [*entries[:2], *entries[3:]],
        (("CarePlan", "r"), ("Goal", "r"), ("Observation", "r"), ("Flag", "r")),
        strict=True,
    ):
        expected = 200 if token.sees(OTHER) else 404
        expected = expected if token.grants(resource, interaction) else 403
        assert _entry_status(entry) == expected, (label, resource, entry)
    if token.grants("CarePlan", "s"):
        assert _entry_status(entries[2]) == 200, (label, entries[2])
        assert _subjects(entries[2]["resource"]) == _expected(token, ("CarePlan", "s")), label
    else:
        assert _entry_status(entries[2]) == 403, (label, entries[2])

    # Writes to the other patient's records: made only when the oracle allows them.
    for name, resource, interaction, call in WRITES:
        before = _versions(client, records)
        response = call(caller, records)
        _check_one(token, name, resource, interaction, OTHER, response)
        changed = _versions(client, records) != before
        assert changed == (response.status_code < 300), (label, name)

    # A transaction deleting the other patient's goal.
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Goal/{records.goals[OTHER][2]}"}}],
    }
    before = _versions(client, records)
    response = caller.post("/fhir", data=json.dumps(transaction), headers=FHIR)
    _check_one(token, "transaction delete", "Goal", "d", OTHER, response)
    assert (_versions(client, records) != before) == (response.status_code < 300), label


def _versions(client: Client, records: Records) -> int:
    """How many versions the other patient's records have: any write adds one."""
    history = client.get("/fhir/_history", params={"_count": "500"}).json()
    return sum(
        1
        for entry in history.get("entry", [])
        if entry.get("resource", {}).get("subject", {}).get("reference") == OTHER
        or entry["request"]["method"] == "DELETE"
    )


# --- AuditEvent --------------------------------------------------------------------------

AUDIT_SCOPES = [
    ("system/*.rs",),
    ("system/*.cruds", "user/*.*"),
    ("system/AuditEvent.rs",),
    ("user/AuditEvent.read",),
    ("patient/AuditEvent.rs",),
    ("patient/*.rs",),
    ("system/AuditEvent.rs", "patient/*.rs"),
]
AUDIT_TOKENS = [
    Token(scopes, patient, external)
    for scopes in AUDIT_SCOPES
    for patient in (None, OWN)
    for external in (False, True)
]


@pytest.mark.parametrize("token", AUDIT_TOKENS, ids=[t.label() for t in AUDIT_TOKENS])
def test_the_audit_trail_needs_a_scope_naming_it_and_keeps_to_the_patient(
    issuers: Issuers, client: Client, records: Records, token: Token, live: Server
) -> None:
    # Reads of each patient's plan, by an administrator, leave records of both patients.
    for patient in (OWN, OTHER):
        assert client.get(f"/fhir/CarePlan/{records.plans[patient]}").status_code == 200
    caller = issuers.client(token)
    deadline = time.monotonic() + 10
    recorded: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        recorded = client.get("/fhir/AuditEvent", params={"_count": "200"}).json().get("entry", [])
        if {_patient_of(e["resource"]) for e in recorded} >= {OWN, OTHER}:
            break
        time.sleep(0.2)
    others = [e["resource"]["id"] for e in recorded if _patient_of(e["resource"]) == OTHER]
    assert others, "the reads of the other patient's plan were not recorded"

    response = caller.get("/fhir/AuditEvent", params={"_count": "200"})
    read_other = caller.get(f"/fhir/AuditEvent/{others[0]}")
    if not token.grants("AuditEvent", "s"):
        assert response.status_code == 403, (token.label(), response.text)
        assert read_other.status_code == 403, token.label()
        return
    assert response.status_code == 200, (token.label(), response.text)
    patients = {_patient_of(e["resource"]) for e in response.json().get("entry", [])}
    if token.patient is not None:
        assert patients == {token.patient}, token.label()
        assert read_other.status_code == 404, token.label()
        # Another patient's record reads as one that does not exist.
        missing = caller.get("/fhir/AuditEvent/no-such-record")
        assert missing.status_code == 404
        assert json.dumps(missing.json()).replace("no-such-record", others[0]) == json.dumps(
            read_other.json()
        )
    else:
        assert {OWN, OTHER} <= patients, token.label()
        assert read_other.status_code == 200, token.label()


def _patient_of(event: dict[str, Any]) -> str | None:
    for entity in event.get("entity", []):
        reference = (entity.get("what") or {}).get("reference", "")
        if reference.startswith("Patient/"):
            return str(reference)
    return None
