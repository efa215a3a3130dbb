"""Idempotency-Key on the native POSTs: a retry gets the first answer, never a second effect."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from conftest import ADMIN_SCOPES, Client, Server, count_rows, plan_url, token_for
from sqlalchemy import update

from api.auth import keys, tokens
from service import idempotency
from service.db import Database
from service.models import ApiClient, IdempotencyRecord, new_id, utcnow

PLANS = "/api/v1/care-plans"
PLAN_BODY = {"patient": "Patient/123", "problem_areas": ["grief"], "start_date": "2026-01-05"}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


# (path below the plan, or None for the plans themselves; body; table of the effect)
ROUTES = [
    (None, PLAN_BODY, "care_plans"),
    (
        "goals",
        {"kind": "symptom", "description": "PHQ-9 at most 7.", "priority": "high-priority"},
        "goals",
    ),
    (
        "homework",
        {"kind": "reconnect", "description": "Call an old friend.", "phase": "initial"},
        "homework",
    ),
    ("sessions", {"number": 1, "date": "2026-01-05", "status": "attended"}, "sessions"),
]


@pytest.mark.parametrize(("below", "body", "table"), ROUTES, ids=[r[2] for r in ROUTES])
def test_a_retry_with_the_same_key_gets_the_first_answer_and_no_second_effect(
    client: Client, database: Database, below: str | None, body: dict[str, Any], table: str
) -> None:
    path = PLANS if below is None else plan_url(client.create_plan(), below)
    before = count_rows(database, table)
    first = client.post(path, json=body, headers=keyed("retry-1"))
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = client.post(path, json=body, headers=keyed("retry-1"))
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_rows(database, table) == before + 1
    # A new key is a new request.
    other = client.post(path, json={**body, "number": 2} if table == "sessions" else body)
    assert other.status_code == 201
    assert count_rows(database, table) == before + 2


def test_a_token_for_another_patient_of_the_same_client_never_gets_the_answer(
    live: Server, database: Database
) -> None:
    registered = ApiClient(
        id=new_id(),
        name=f"ehr-{new_id()}",
        scopes=" ".join(ADMIN_SCOPES),
        patient="Patient/123",
        created_at=utcnow(),
    )
    with database.writing() as session:
        session.add(registered)
    key = keys.key_for(live.app)
    first, _ = tokens.issue(registered, ADMIN_SCOPES, live.settings, key=key)
    registered.patient = "Patient/456"
    second, _ = tokens.issue(registered, ADMIN_SCOPES, live.settings, key=key)
    for_123 = Client(live.url, first).post(PLANS, json=PLAN_BODY, headers=keyed("same"))
    assert for_123.status_code == 201, for_123.text
    for_456 = Client(live.url, second).post(PLANS, json=PLAN_BODY, headers=keyed("same"))
    assert for_456.status_code == 422
    assert "Patient/123" not in for_456.text
    assert count_rows(database, "care_plans") == 1


def test_the_body_is_compared_as_json_not_as_text(client: Client, database: Database) -> None:
    first = client.post(PLANS, json=PLAN_BODY, headers=keyed("k"))
    reordered = (
        '{"start_date": "2026-01-05",  "problem_areas": ["grief"], "patient": "Patient/123"}'
    )
    again = client.post(
        PLANS, data=reordered, headers={**keyed("k"), "Content-Type": "application/json"}
    )
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert count_rows(database, "care_plans") == 1


def test_the_same_key_with_another_body_is_refused_naming_the_key(
    client: Client, database: Database
) -> None:
    client.post(PLANS, json=PLAN_BODY, headers=keyed("order-7"))
    changed = client.post(
        PLANS, json={**PLAN_BODY, "problem_areas": ["role-dispute"]}, headers=keyed("order-7")
    )
    assert changed.status_code == 422
    assert changed.headers["Content-Type"].startswith("application/problem+json")
    assert "order-7" in changed.json()["detail"]
    assert count_rows(database, "care_plans") == 1


def test_the_same_key_on_another_route_is_refused(client: Client) -> None:
    plan = client.create_plan()
    assert client.post(plan_url(plan, "homework"), json=ROUTES[2][1], headers=keyed("x")).ok
    other = client.post(plan_url(plan, "goals"), json=ROUTES[1][1], headers=keyed("x"))
    assert other.status_code == 422
    assert "'x'" in other.json()["detail"]


def test_keys_belong_to_the_client_that_sent_them(
    client: Client, live: Server, database: Database
) -> None:
    other = Client(live.url, token_for(live, database, ADMIN_SCOPES))
    mine = client.post(PLANS, json=PLAN_BODY, headers=keyed("shared-name"))
    theirs = other.post(PLANS, json=PLAN_BODY, headers=keyed("shared-name"))
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    assert count_rows(database, "care_plans") == 2


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "clé", "tab\there"],
    ids=["empty", "too-long", "not-ascii", "control-character"],
)
def test_a_malformed_key_is_refused_with_400(client: Client, database: Database, key: str) -> None:
    header = {"Idempotency-Key": key.encode("latin-1")}
    response = client.post(PLANS, json=PLAN_BODY, headers=header)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["detail"]
    assert count_rows(database, "care_plans") == 0


def test_the_longest_key_is_taken(client: Client) -> None:
    key = "".join(chr(32 + i % 95) for i in range(255)).strip()
    assert client.post(PLANS, json=PLAN_BODY, headers=keyed(key)).status_code == 201
    assert client.post(PLANS, json=PLAN_BODY, headers=keyed(key)).headers["Idempotent-Replayed"]


def test_a_refused_request_keeps_no_key(client: Client, database: Database) -> None:
    plan = client.create_plan()
    path = plan_url(plan, "sessions")
    assert client.post(path, json={"number": 1, "date": "2026-01-05", "status": "attended"}).ok
    duplicate = client.post(
        path, json={"number": 1, "date": "2026-01-06", "status": "attended"}, headers=keyed("s")
    )
    assert duplicate.status_code == 409
    assert count_rows(database, "idempotency_keys") == 0
    # The key is still free: judged again, on the state of the moment.
    fixed = client.post(
        path, json={"number": 2, "date": "2026-01-12", "status": "attended"}, headers=keyed("s")
    )
    assert fixed.status_code == 201
    assert count_rows(database, "idempotency_keys") == 1


def test_parallel_retries_with_one_key_have_one_effect(client: Client, database: Database) -> None:
    plan = client.create_plan()
    path = plan_url(plan, "homework")
    start = threading.Barrier(8)
    answers: list[requests.Response] = []

    def send() -> None:
        session = requests.Session()
        session.headers.update(client.http.headers)
        start.wait()
        answers.append(
            session.post(client.base_url + path, json=ROUTES[2][1], headers=keyed("burst"))
        )

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [201] * 8
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("Idempotent-Replayed" in a.headers for a in answers) == 7
    assert count_rows(database, "homework") == 1
    assert count_rows(database, "idempotency_keys") == 1


def test_the_answer_is_kept_with_the_effect(client: Client, database: Database) -> None:
    created = client.post(PLANS, json=PLAN_BODY, headers=keyed("kept"))
    with database.reading() as session:
        record = session.query(IdempotencyRecord).one()
    assert record.status == 201
    assert record.location == created.headers["Location"]
    assert record.etag == created.headers["ETag"]
    retention = record.expires_at - record.created_at
    assert retention == timedelta(hours=24)


def test_an_expired_key_is_free_again_and_purged(client: Client, database: Database) -> None:
    client.post(PLANS, json=PLAN_BODY, headers=keyed("old"))
    with database.writing() as session:
        session.execute(update(IdempotencyRecord).values(expires_at=utcnow() - timedelta(1)))
    reused = client.post(
        PLANS, json={**PLAN_BODY, "problem_areas": ["role-dispute"]}, headers=keyed("old")
    )
    assert reused.status_code == 201
    assert "Idempotent-Replayed" not in reused.headers
    assert count_rows(database, "care_plans") == 2
    assert count_rows(database, "idempotency_keys") == 1
    with database.writing() as session:
        session.execute(update(IdempotencyRecord).values(expires_at=utcnow() - timedelta(1)))
    assert idempotency.purge_expired(database) == 1
    assert count_rows(database, "idempotency_keys") == 0


def test_every_native_post_documents_the_key(client: Client) -> None:
    spec = client.get("/openapi.json").json()
    posts = {
        path: operation["post"]
        for path, operation in spec["paths"].items()
        if path.startswith("/api/v1") and "post" in operation
    }
    assert len(posts) >= 4
    for path, post in posts.items():
        names = [p.get("name") for p in post.get("parameters", [])]
        assert "Idempotency-Key" in names, path
