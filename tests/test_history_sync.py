"""Synchronising through ``_history``: a client that polls ``_since`` the horizon each
Bundle gives (``meta.lastUpdated``) sees every version once, however long a write took to
commit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from conftest import Client, plan_url

from service import goals
from service.db import Database


def poll(client: Client, since: str | None = None) -> dict[str, Any]:
    params = {"_count": "500", **({"_since": since} if since else {})}
    response = client.get("/fhir/_history", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def versions(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["fullUrl"].rsplit("/", 1)[-1], e["response"]["etag"]) for e in bundle["entry"]]


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def poll_during_a_slow_write(
    database: Database, plan_id: str, goal_id: str, make_poll: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """What ``make_poll`` answers while a goal change's transaction stays open after it
    has taken its write time; the change commits before this returns."""
    stamped, commit = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def slow_write() -> None:
        try:
            with database.transaction():
                change = {"priority": "low-priority"}
                goals.update_goal(database, plan_id, goal_id, change, "slow")
                stamped.set()
                assert commit.wait(10)
        except BaseException as error:  # reported by the test thread
            failures.append(error)
            stamped.set()

    writer = threading.Thread(target=slow_write)
    writer.start()
    assert stamped.wait(10)
    during: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: during.update(make_poll()))
    poller.start()
    if database.is_sqlite:
        # A SQLite poll waits for the write in progress: writes take turns.
        time.sleep(0.3)
        assert poller.is_alive()
        commit.set()
        poller.join(10)
    else:
        # A PostgreSQL poll waits for nobody: it answers with a horizon no later than the
        # start of the open write, and lists nothing from it.
        poller.join(10)
        commit.set()
    writer.join(10)
    assert not failures, failures
    return during


def test_a_write_committing_after_a_poll_is_in_the_next_poll_from_its_horizon(
    client: Client, plan: dict, database: Database
) -> None:
    goal_id = client.get(plan_url(plan, "goals")).json()["items"][0]["id"]
    start = poll(client)["meta"]["lastUpdated"]
    during = poll_during_a_slow_write(database, plan["id"], goal_id, lambda: poll(client, start))
    after = poll(client, during["meta"]["lastUpdated"])

    changed = (goal_id, 'W/"2"')
    seen = versions(during) + versions(after)
    assert seen.count(changed) == 1
    assert (changed in versions(during)) is database.is_sqlite
    # Horizons move forward; nothing is listed at or after the horizon of its Bundle.
    assert instant(start) <= instant(during["meta"]["lastUpdated"])
    for bundle in (during, after):
        horizon = instant(bundle["meta"]["lastUpdated"])
        for entry in bundle["entry"]:
            assert instant(entry["response"]["lastModified"]) < horizon


def test_polls_from_each_horizon_list_every_version_exactly_once(client: Client) -> None:
    since = poll(client)["meta"]["lastUpdated"]
    written: list[tuple[str, str]] = []
    seen: list[tuple[str, str]] = []
    for n in range(3):
        created = client.create_plan(patient=f"Patient/sync-{n}", default_goals=False)
        written.append((created["id"], 'W/"1"'))
        bundle = poll(client, since)
        seen += [v for v in versions(bundle) if v[0] in {w[0] for w in written}]
        since = bundle["meta"]["lastUpdated"]
    bundle = poll(client, since)
    seen += [v for v in versions(bundle) if v[0] in {w[0] for w in written}]
    assert sorted(seen) == sorted(written)


def test_every_page_keeps_the_horizon_of_the_first(client: Client) -> None:
    for n in range(3):
        client.create_plan(patient=f"Patient/page-{n}", default_goals=False)
    first = client.get("/fhir/CarePlan/_history", params={"_count": "2"}).json()
    later = client.create_plan(patient="Patient/page-later", default_goals=False)
    url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    pages = [first]
    while url:
        bundle = client.get(url.replace(client.base_url, "")).json()
        pages.append(bundle)
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert {page["meta"]["lastUpdated"] for page in pages} == {first["meta"]["lastUpdated"]}
    # Each plan is an episode and its three phases; the plan created after the first page
    # is left to the next poll.
    listed = [entry["resource"] for page in pages for entry in page["entry"]]
    assert len(listed) == 3 * 4
    assert all(later["id"] not in json.dumps(resource) for resource in listed)


def test_a_since_later_than_the_horizon_is_kept_as_the_horizon(client: Client) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="milliseconds")
    bundle = poll(client, later.replace("+00:00", "Z"))
    assert bundle["meta"]["lastUpdated"] == later.replace("+00:00", "Z")
    assert bundle["entry"] == []


def test_a_cursor_without_a_horizon_goes_on_with_a_new_one(client: Client) -> None:
    """As a server of the previous release wrote them (during a rolling upgrade)."""
    for n in range(2):
        client.create_plan(patient=f"Patient/old-{n}", default_goals=False)
    first = client.get("/fhir/CarePlan/_history", params={"_count": "3"}).json()
    cursor = next(link["url"] for link in first["link"] if link["relation"] == "next")
    sequence = cursor.split("_cursor=")[1].split("-")[0]
    rest = client.get("/fhir/CarePlan/_history", params={"_count": "50", "_cursor": sequence})
    assert rest.status_code == 200
    listed = versions(first) + versions(rest.json())
    assert len(listed) == len(set(listed)) == 2 * 4
    assert rest.json()["meta"]["lastUpdated"] >= first["meta"]["lastUpdated"]


@pytest.mark.parametrize("cursor", ["12-", "-1700000000000", "x-1", "12-99999999999999999"])
def test_a_cursor_the_server_did_not_write_is_refused(client: Client, cursor: str) -> None:
    response = client.get("/fhir/_history", params={"_cursor": cursor})
    assert response.status_code == 400
    assert "_cursor" in response.json()["issue"][0]["diagnostics"]


def native_poll(client: Client, since: str, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/care-plans", params={"updated_since": since, **params})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_native_polls_from_each_bound_see_a_slow_write_once(
    client: Client, plan: dict, database: Database
) -> None:
    """The native list's ``updated_since`` follows changes as ``_history`` does: the page
    gives the bound to poll from next, and a write still open then is listed after it."""
    goal_id = client.get(plan_url(plan, "goals")).json()["items"][0]["id"]
    start = native_poll(client, "2000-01-01T00:00:00+00:00")["updated_before"]
    during = poll_during_a_slow_write(
        database, plan["id"], goal_id, lambda: native_poll(client, start)
    )
    after = native_poll(client, during["updated_before"])
    listed = [p["id"] for p in during["items"]] + [p["id"] for p in after["items"]]
    assert listed.count(plan["id"]) == 1
    assert (plan["id"] in [p["id"] for p in during["items"]]) is database.is_sqlite
    assert instant(start) <= instant(during["updated_before"]) <= instant(after["updated_before"])
    for page in (during, after):
        for item in page["items"]:
            assert instant(item["updated_at"]) < instant(page["updated_before"])


def test_native_pages_keep_the_bound_of_the_first(client: Client) -> None:
    since = native_poll(client, "2000-01-01T00:00:00+00:00")["updated_before"]
    made = [client.create_plan(patient=f"Patient/np-{n}", default_goals=False) for n in range(3)]
    first = native_poll(client, since, page_size=2)
    later = client.create_plan(patient="Patient/np-later", default_goals=False)
    second = client.get(first["links"]["next"]).json()
    assert second["updated_before"] == first["updated_before"]
    assert f"updated_before={quote(first['updated_before'], safe='')}" in first["links"]["next"]
    listed = [p["id"] for p in first["items"] + second["items"]]
    assert sorted(listed) == sorted(p["id"] for p in made)
    assert later["id"] not in listed
    assert later["id"] in [p["id"] for p in native_poll(client, first["updated_before"])["items"]]
    # Without updated_since nothing is bounded, and no bound is given.
    plain = client.get("/api/v1/care-plans").json()
    assert "updated_before" not in plain
    assert later["id"] in [p["id"] for p in plain["items"]]


def test_a_native_sync_client_learns_of_deletions_from_tombstones(client: Client) -> None:
    kept, gone, untouched = client.create_plan(), client.create_plan(), client.create_plan()
    first = client.get("/api/v1/care-plans", params={"updated_since": "2000-01-01T00:00:00Z"})
    horizon = first.json()["updated_before"]
    assert client.delete(f"/api/v1/care-plans/{gone['id']}").status_code == 204
    patched = client.patch(
        f"/api/v1/care-plans/{kept['id']}", json={"notes": [{"text": "Seen by the team."}]}
    )
    assert patched.status_code == 200
    since = {"updated_since": horizon}
    plain = client.get("/api/v1/care-plans", params=since).json()
    assert [item["id"] for item in plain["items"]] == [kept["id"]]
    with_deleted = client.get(
        "/api/v1/care-plans", params={**since, "include_deleted": "true"}
    ).json()
    assert [item["id"] for item in with_deleted["items"]] == [kept["id"], gone["id"]]
    assert with_deleted["total"] == 2
    listed, tombstone = with_deleted["items"]
    assert "deleted" not in listed
    assert listed == client.get(f"/api/v1/care-plans/{kept['id']}").json()
    assert tombstone["deleted"] is True
    assert tombstone["id"] == gone["id"]
    assert tombstone["patient"] == gone["patient"]
    assert tombstone["version"] == gone["version"] + 1
    assert tombstone["deleted_at"] == tombstone["updated_at"]
    assert "phases" not in tombstone and "problem_areas" not in tombstone
    # The next page's links keep asking for tombstones.
    assert "include_deleted=true" in with_deleted["links"]["self"]
    assert untouched["id"] not in [item["id"] for item in with_deleted["items"]]
