"""Concurrent writers through the live server: a stale version never overwrites a change."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import requests
from conftest import Client, count_rows, plan_url

from service.db import Database


def run_together(*calls: Callable[[], requests.Response]) -> list[requests.Response]:
    """Start every call at the same moment; return their responses in call order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], requests.Response]) -> None:
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_writers_with_the_same_version_one_wins_one_gets_412(
    client: Client, plan: dict
) -> None:
    url = plan_url(plan)
    for attempt in range(5):
        version = {"If-Match": f'"{plan["version"]}"'}
        first, second = run_together(
            partial(client.patch, url, json={"formulation": "first writer"}, headers=version),
            partial(client.patch, url, json={"therapist": "Practitioner/2"}, headers=version),
        )
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 412], (attempt, first.text, second.text)
        stored = client.get(plan_url(plan)).json()
        winner = first if first.status_code == 200 else second
        assert stored["version"] == winner.json()["version"] == plan["version"] + 1
        # The loser's change is not half-applied.
        assert (stored["formulation"] is None) != (stored["therapist"] is None)
        plan = client.patch(url, json={"formulation": None, "therapist": None}).json()


def test_parallel_goal_updates_with_if_match_lose_nothing(client: Client, plan: dict) -> None:
    goal = client.get(plan_url(plan, "goals")).json()["items"][0]
    url = plan_url(plan, "goals", goal["id"])
    responses = run_together(
        *[
            (
                lambda n=n: client.patch(
                    url,
                    json={"notes": [{"text": f"writer {n}"}]},
                    headers={"If-Match": f'"{goal["version"]}"'},
                )
            )
            for n in range(6)
        ]
    )
    assert sorted(r.status_code for r in responses) == [200] + [412] * 5
    winner = next(r for r in responses if r.status_code == 200).json()
    assert client.get(url).json()["notes"] == winner["notes"]


def test_writes_without_if_match_to_different_records_all_land(client: Client, plan: dict) -> None:
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    responses = run_together(
        *[
            (
                lambda g=g: client.patch(
                    plan_url(plan, "goals", g["id"]), json={"achievement_status": "improving"}
                )
            )
            for g in goals
        ]
        + [
            (
                lambda n=n: client.post(
                    plan_url(plan, "sessions"), json={"number": n, "date": "2026-01-05"}
                )
            )
            for n in range(1, 5)
        ]
    )
    assert [r.status_code for r in responses] == [200] * len(goals) + [201] * 4
    stored = client.get(plan_url(plan)).json()
    # One version per change: nothing was overwritten or merged away.
    assert stored["version"] == plan["version"] + len(goals) + 4
    assert {
        g["achievement_status"] for g in client.get(plan_url(plan, "goals")).json()["items"]
    } == {"improving"}


def test_the_same_session_recorded_twice_at_once_is_stored_once(
    client: Client, database: Database, plan: dict
) -> None:
    body = {"number": 1, "date": "2026-01-05", "status": "attended"}
    responses = run_together(
        *[(lambda: client.post(plan_url(plan, "sessions"), json=body)) for _ in range(6)]
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 5
    assert count_rows(database, "sessions") == 1


def test_parallel_fhir_updates_with_the_same_if_match_let_exactly_one_through(
    client: Client, plan: dict
) -> None:
    url = f"/fhir/CarePlan/{plan['id']}"
    episode = client.get(url).json()
    headers = {"Content-Type": "application/fhir+json", "If-Match": 'W/"1"'}
    bodies = [json.dumps({**episode, "description": f"writer {n}"}) for n in range(8)]
    responses = run_together(
        *[partial(client.request, "PUT", url, data=body, headers=headers) for body in bodies]
    )
    assert sorted(r.status_code for r in responses) == [200] + [412] * 7
    winner = next(r for r in responses if r.status_code == 200).json()
    stored = client.get(url).json()
    assert stored["meta"]["versionId"] == "2"
    assert stored["description"] == winner["description"]
    history = client.get(f"{url}/_history").json()
    assert len(history["entry"]) == 2


def test_parallel_conditional_updates_make_one_resource_and_lose_no_write(
    client: Client, plan: dict
) -> None:
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    template = {k: v for k, v in episode.items() if k not in ("id", "meta", "goal", "text")}
    template["identifier"] = [{"system": "urn:sync", "value": "E-1"}]
    headers = {"Content-Type": "application/fhir+json"}
    url = "/fhir/CarePlan?identifier=urn:sync|E-1"
    bodies = [json.dumps({**template, "description": f"writer {n}"}) for n in range(10)]
    responses = run_together(
        *[partial(client.request, "PUT", url, data=body, headers=headers) for body in bodies]
    )
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201], [
        r.text for r in responses if r.status_code >= 300
    ]
    found = client.get("/fhir/CarePlan", params={"identifier": "urn:sync|E-1"}).json()
    assert found["total"] == 1
    history = client.get(f"/fhir/CarePlan/{found['entry'][0]['resource']['id']}/_history").json()
    # Every writer's description landed as its own version: none was lost.
    assert len(history["entry"]) == 10
    written = {json.loads(b)["description"] for b in bodies}
    assert {e["resource"]["description"] for e in history["entry"]} == written
