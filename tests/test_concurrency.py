"""Concurrent writers through the live server: a stale version never overwrites a change."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import requests
from conftest import Client, Server, count_rows, plan_url

from api.http import read_connection
from service.db import Database, WriterQueue


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


# --- SQLite writers take turns ---------------------------------------------------------------


def test_sqlite_writer_threads_take_turns_and_a_thread_may_nest(tmp_path: Any) -> None:
    queue = WriterQueue(str(tmp_path / "plans.db"))
    order: list[str] = []
    waiting = threading.Event()

    def second() -> None:
        waiting.set()
        with queue.turn():
            order.append("second")

    with queue.turn():
        with queue.turn():  # the same thread again: no deadlock
            order.append("first")
        thread = threading.Thread(target=second)
        thread.start()
        waiting.wait(5)
        thread.join(0.3)
        assert thread.is_alive(), "the second writer went ahead while the first held its turn"
        order.append("first done")
    thread.join(5)
    assert order == ["first", "first done", "second"]
    queue.close()


def test_sqlite_writer_processes_take_turns_on_a_file_lock(tmp_path: Any) -> None:
    database_file = str(tmp_path / "plans.db")
    queue = WriterQueue(database_file)
    child = (
        "import sys, time; from service.db import WriterQueue\n"
        "with WriterQueue(sys.argv[1]).turn():\n"
        "    print(time.time(), flush=True)\n"
    )
    with queue.turn():
        process = subprocess.Popen(
            [sys.executable, "-c", child, database_file], stdout=subprocess.PIPE, text=True
        )
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(1.5)  # it waits while this process holds the turn
        released = time.time()
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert float(out) >= released
    queue.close()


def test_a_write_gives_back_the_connection_its_request_read_with(
    live: Server, database: Database
) -> None:
    """A request reads (its token's client, a conditional match) on one connection; a
    write of it gives that one back first, so no writer holds two connections at once."""
    with live.app.test_request_context("/fhir/Goal", method="POST"):
        before = read_connection()
        with database.writing() as session:
            assert before.closed
            session.connection()
        after = read_connection()
        assert after is not before and not after.closed


def test_more_parallel_writers_than_pooled_connections_all_land(
    client: Client, plan: dict, database: Database
) -> None:
    """Twenty writers at once, more than the pool's connections: a writer waiting for its
    turn holds its connection, so the one whose turn it is still gets its own."""
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    landed: list[int] = []

    def write(index: int) -> None:
        response = client.post(
            plan_url(plan, "homework"),
            json={
                "phase": "initial",
                "kind": "reconnect",
                "description": f"Call friend {index}",
                "assigned_on": "2026-01-12",
                "goal_id": goals[0]["id"],
            },
        )
        assert response.status_code == 201, response.text
        landed.append(index)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(landed) == list(range(20))
    assert count_rows(database, "homework") == 20


def test_commits_are_durable(database: Database) -> None:
    """A write the service answered survives a power loss: SQLite syncs the WAL (readers
    and one writer at once) at every commit; PostgreSQL waits for its WAL flush, which the
    service asks for even where the connection's default says otherwise (``fsync`` is the
    server's own setting)."""
    if database.is_sqlite:
        with database.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        return
    options = f"{database.url.query.get('options', '')} -csynchronous_commit=off".strip()
    lax = Database(database.url.update_query_dict({"options": options}).render_as_string(False))
    try:
        with lax.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        lax.dispose()
