"""Therapy sessions through HTTP: recording, the IPT rules, status changes, phases, deletion."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from conftest import Client, count_rows, plan_url, problem_fields

from service.db import Database

START = date(2026, 1, 5)  # the start_date of the `plan` fixture


def on(number: int) -> str:
    """The date of session ``number`` on the plan's weekly schedule."""
    return (START + timedelta(weeks=number - 1)).isoformat()


def record(client: Client, plan: dict, number: int, **fields: Any) -> requests.Response:
    """POST a session; fields default to an attended session on its scheduled date."""
    body = {"number": number, "date": on(number), "status": "attended", **fields}
    return client.post(plan_url(plan, "sessions"), json=body)


def phases(client: Client, plan: dict) -> list[tuple[str, str, str | None, str | None]]:
    items = client.get(plan_url(plan, "phases")).json()["items"]
    return [(p["code"], p["status"], p["start_date"], p["end_date"]) for p in items]


def state(client: Client, database: Database, plan: dict) -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    return {
        "plan": client.get(plan_url(plan)).json(),
        "sessions": client.get(plan_url(plan, "sessions"), params={"page_size": 100}).json(),
        "rows": {t: count_rows(database, t) for t in ("sessions", "phases", "plan_changes")},
    }


# --- recording ------------------------------------------------------------------------


def test_a_scheduled_session_is_stored_with_its_etag_and_location(
    client: Client, plan: dict
) -> None:
    response = client.post(plan_url(plan, "sessions"), json={"number": 3, "date": on(3)})
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["status"] == "scheduled"
    assert (session["number"], session["date"]) == (3, "2026-01-19")
    assert (session["phq9_total"], session["techniques"], session["note"]) == (None, [], None)
    assert session["plan_id"] == plan["id"]
    assert session["version"] == 1
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == plan_url(plan, "sessions", 3)
    read = client.get(response.headers["Location"])
    assert read.status_code == 200
    assert read.json() == session
    assert read.headers["ETag"] == '"1"'


def test_an_attended_session_keeps_its_score_techniques_note_and_author(
    client: Client, plan: dict
) -> None:
    response = client.post(
        plan_url(plan, "sessions"),
        json={
            "number": 1,
            "date": on(1),
            "status": "attended",
            "phq9_total": 17,
            "techniques": ["interpersonal-inventory", "psychoeducation"],
            "note": "Sick role given; inventory started.",
        },
        headers={"X-Actor": "dr.rivera"},
    )
    assert response.status_code == 201, response.text
    stored = client.get(plan_url(plan, "sessions", 1)).json()
    assert stored["phq9_total"] == 17
    assert stored["techniques"] == ["interpersonal-inventory", "psychoeducation"]
    assert stored["note"] == "Sick role given; inventory started."
    assert (stored["created_by"], stored["updated_by"]) == ("dr.rivera", "dr.rivera")


def test_phq9_scores_at_both_ends_of_the_scale_are_accepted(client: Client, plan: dict) -> None:
    assert record(client, plan, 1, phq9_total=0).json()["phq9_total"] == 0
    assert record(client, plan, 2, phq9_total=27).json()["phq9_total"] == 27


def test_a_session_can_be_dated_one_day_ahead_for_clinics_ahead_of_utc(
    client: Client, plan: dict
) -> None:
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    response = record(client, plan, 1, date=tomorrow)
    assert response.status_code == 201, response.text


def test_a_scheduled_session_may_lie_in_the_future(client: Client, plan: dict) -> None:
    response = record(client, plan, 12, status="scheduled", date="2099-01-01")
    assert response.status_code == 201, response.text
    assert response.json()["date"] == "2099-01-01"


def test_a_session_numbered_at_the_end_of_the_contract_is_accepted(
    client: Client, plan: dict
) -> None:
    assert record(client, plan, 12, status="scheduled").status_code == 201


def test_recording_a_session_bumps_the_plan_version_and_logs_the_change(
    client: Client, plan: dict
) -> None:
    record(client, plan, 2, status="scheduled", date=None)
    after = client.get(plan_url(plan)).json()
    assert after["version"] == plan["version"] + 1
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    sessions = [(c["entity"], c["action"], c["plan_version"]) for c in changes]
    assert ("session", "create", after["version"]) in sessions


# --- sessions move the phases -------------------------------------------------------------


def test_attending_session_1_makes_the_initial_phase_active_from_that_date(
    client: Client, plan: dict
) -> None:
    assert record(client, plan, 1).status_code == 201
    assert phases(client, plan) == [
        ("initial", "active", "2026-01-05", None),
        ("middle", "not-started", None, None),
        ("termination", "not-started", None, None),
    ]


def test_attending_session_5_completes_the_initial_phase_and_activates_the_middle(
    client: Client, plan: dict
) -> None:
    record(client, plan, 1)
    assert record(client, plan, 5).status_code == 201
    assert phases(client, plan) == [
        ("initial", "completed", on(1), on(5)),
        ("middle", "active", on(5), None),
        ("termination", "not-started", None, None),
    ]


def test_attending_the_last_session_first_completes_every_earlier_phase(
    client: Client, plan: dict
) -> None:
    assert record(client, plan, 12).status_code == 201
    assert phases(client, plan) == [
        ("initial", "completed", on(12), on(12)),
        ("middle", "completed", on(12), on(12)),
        ("termination", "active", on(12), None),
    ]


def test_an_earlier_session_attended_later_does_not_move_the_phases_back(
    client: Client, plan: dict
) -> None:
    record(client, plan, 5)
    before = phases(client, plan)
    assert record(client, plan, 2).status_code == 201
    assert phases(client, plan) == before
    assert [p[1] for p in before] == ["completed", "active", "not-started"]


def test_scheduled_cancelled_and_missed_sessions_do_not_move_the_phases(
    client: Client, plan: dict
) -> None:
    before = client.get(plan_url(plan, "phases")).json()["items"]
    record(client, plan, 1, status="scheduled")
    record(client, plan, 5, status="cancelled")
    record(client, plan, 10, status="no-show")
    assert client.get(plan_url(plan, "phases")).json()["items"] == before


def test_a_scheduled_session_marked_attended_moves_the_phases(client: Client, plan: dict) -> None:
    record(client, plan, 4, status="scheduled")
    response = client.patch(plan_url(plan, "sessions", 4), json={"status": "attended"})
    assert response.status_code == 200, response.text
    assert [p[1] for p in phases(client, plan)] == ["completed", "active", "not-started"]


# --- refused recordings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"number": 13}, "number"),
        ({"number": 0}, "number"),
        ({"number": -1}, "number"),
        ({"number": None}, "number"),
        ({"number": "one"}, "number"),
        ({"phq9_total": 28}, "phq9_total"),
        ({"phq9_total": -1}, "phq9_total"),
        ({"status": "scheduled", "phq9_total": 10}, "phq9_total"),
        ({"status": "no-show", "phq9_total": 10}, "phq9_total"),
        ({"status": "scheduled", "techniques": ["role-play"]}, "techniques"),
        ({"techniques": ["hypnosis"]}, "techniques.0"),
        ({"techniques": ["role-play", "role-play"]}, "techniques.1"),
        ({"date": "2099-01-01"}, "date"),
        ({"status": "no-show", "date": "2099-01-01"}, "date"),
        ({"date": "2026-01-04"}, "date"),
        ({"status": "scheduled", "date": "2025-12-01"}, "date"),
        ({"date": None}, "date"),
        ({"status": "no-show", "date": None}, "date"),
        ({"date": "05/01/2026"}, "date"),
        ({"status": "held"}, "status"),
        ({"note": "   "}, "note"),
        ({"note": "x" * 2001}, "note"),
        ({"plan_id": "another"}, "plan_id"),
        ({"version": 3}, "version"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_an_invalid_session_is_refused_naming_the_field_and_nothing_changes(
    client: Client, database: Database, plan: dict, body: dict[str, Any], field: str
) -> None:
    before = state(client, database, plan)
    body = {"number": 1, "date": on(1), "status": "attended", **body}
    response = client.post(plan_url(plan, "sessions"), json=body)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    assert state(client, database, plan) == before


def test_every_problem_of_a_session_is_named_at_once(client: Client, plan: dict) -> None:
    response = record(client, plan, 13, status="no-show", date="2099-01-01", phq9_total=5)
    assert response.status_code == 422
    assert set(problem_fields(response)) == {"number", "date", "phq9_total"}


def test_a_session_beyond_the_contract_names_the_contract(client: Client, plan: dict) -> None:
    response = record(client, plan, 13)
    assert problem_fields(response) == ["number"]
    assert "12" in response.json()["errors"][0]["message"]


def test_recording_the_same_number_twice_is_a_conflict(
    client: Client, database: Database, plan: dict
) -> None:
    first = record(client, plan, 1, phq9_total=20).json()
    before = state(client, database, plan)
    again = record(client, plan, 1, status="scheduled", date=on(2))
    assert again.status_code == 409
    assert again.headers["Content-Type"].startswith("application/problem+json")
    assert again.json()["type"] == "urn:ipt-careplans:problem:conflict"
    assert state(client, database, plan) == before
    assert client.get(plan_url(plan, "sessions", 1)).json() == first


def test_the_same_number_in_another_plan_is_no_conflict(client: Client, plan: dict) -> None:
    other = client.create_plan(patient="Patient/456")
    assert record(client, plan, 1).status_code == 201
    assert record(client, other, 1).status_code == 201


def test_a_draft_plan_refuses_held_sessions_but_accepts_scheduled_ones(
    client: Client, database: Database
) -> None:
    draft = client.create_plan(status="draft")
    before = state(client, database, draft)
    for status in ("attended", "no-show"):
        refused = record(client, draft, 1, status=status)
        assert refused.status_code == 422, refused.text
        assert problem_fields(refused) == ["status"]
    assert state(client, database, draft) == before
    scheduled = record(client, draft, 1, status="scheduled")
    assert scheduled.status_code == 201, scheduled.text
    assert [p[1] for p in phases(client, draft)] == ["not-started"] * 3
    marked = client.patch(plan_url(draft, "sessions", 1), json={"status": "attended"})
    assert marked.status_code == 422
    assert problem_fields(marked) == ["status"]
    assert client.get(plan_url(draft, "sessions", 1)).json()["status"] == "scheduled"


def test_a_completed_plan_refuses_every_change_to_its_sessions(
    client: Client, database: Database, plan: dict
) -> None:
    record(client, plan, 1)
    assert (
        client.patch(
            plan_url(plan), json={"status": "completed", "open_goals": "resolve"}
        ).status_code
        == 200
    )
    before = state(client, database, plan)
    new = record(client, plan, 2)
    assert new.status_code == 422
    assert new.headers["Content-Type"].startswith("application/problem+json")
    scheduled = record(client, plan, 3, status="scheduled")
    assert scheduled.status_code == 422
    changed = client.patch(plan_url(plan, "sessions", 1), json={"note": "late note"})
    assert changed.status_code == 422
    deleted = client.delete(plan_url(plan, "sessions", 1))
    assert deleted.status_code == 422
    assert state(client, database, plan) == before


def test_an_on_hold_plan_refuses_held_sessions(client: Client, plan: dict) -> None:
    client.patch(plan_url(plan), json={"status": "on-hold"})
    refused = record(client, plan, 1)
    assert refused.status_code == 422
    assert problem_fields(refused) == ["status"]
    assert record(client, plan, 1, status="scheduled").status_code == 201


def test_sessions_of_an_unknown_plan_are_404_and_of_a_deleted_plan_410(
    client: Client, plan: dict
) -> None:
    missing = client.post("/api/v1/care-plans/nope/sessions", json={"number": 1})
    assert missing.status_code == 404
    assert client.get("/api/v1/care-plans/nope/sessions").status_code == 404
    record(client, plan, 1)
    client.delete(plan_url(plan))
    assert client.get(plan_url(plan, "sessions")).status_code == 410
    assert client.get(plan_url(plan, "sessions", 1)).status_code == 410
    assert record(client, plan, 2).status_code == 410


def test_an_unrecorded_session_number_is_404(client: Client, plan: dict) -> None:
    response = client.get(plan_url(plan, "sessions", 4))
    assert response.status_code == 404
    assert response.json()["type"] == "urn:ipt-careplans:problem:not-found"
    assert client.patch(plan_url(plan, "sessions", 4), json={"note": "x"}).status_code == 404
    assert client.delete(plan_url(plan, "sessions", 4)).status_code == 404


# --- changing a session -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "change"),
    [
        ({"status": "scheduled"}, {"status": "attended", "date": on(1)}),
        ({"status": "scheduled"}, {"status": "no-show", "date": on(1)}),
        ({"status": "scheduled"}, {"status": "cancelled"}),
        ({"status": "cancelled"}, {"status": "scheduled"}),
        ({"status": "attended"}, {"status": "no-show"}),
        ({"status": "no-show"}, {"status": "attended"}),
    ],
)
def test_allowed_status_changes(
    client: Client, plan: dict, start: dict[str, Any], change: dict[str, Any]
) -> None:
    record(client, plan, 1, **start)
    response = client.patch(plan_url(plan, "sessions", 1), json=change)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == change["status"]
    assert response.json()["version"] == 2
    assert client.get(plan_url(plan, "sessions", 1)).json()["status"] == change["status"]


@pytest.mark.parametrize(
    ("start", "new"),
    [
        ("attended", "scheduled"),
        ("attended", "cancelled"),
        ("no-show", "scheduled"),
        ("no-show", "cancelled"),
        ("cancelled", "attended"),
        ("cancelled", "no-show"),
    ],
)
def test_refused_status_changes_name_status_and_change_nothing(
    client: Client, database: Database, plan: dict, start: str, new: str
) -> None:
    record(client, plan, 1, status=start)
    before = state(client, database, plan)
    response = client.patch(plan_url(plan, "sessions", 1), json={"status": new})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["status"]
    assert state(client, database, plan) == before


def test_turning_an_attended_session_into_a_no_show_clears_its_score_and_techniques(
    client: Client, plan: dict
) -> None:
    record(client, plan, 1, phq9_total=15, techniques=["psychoeducation"], note="Came late")
    response = client.patch(plan_url(plan, "sessions", 1), json={"status": "no-show"})
    assert response.status_code == 200, response.text
    corrected = client.get(plan_url(plan, "sessions", 1)).json()
    assert corrected["status"] == "no-show"
    assert (corrected["phq9_total"], corrected["techniques"]) == (None, [])
    assert (corrected["date"], corrected["note"]) == (on(1), "Came late")


def test_a_no_show_corrected_to_attended_moves_the_phases_and_takes_a_score(
    client: Client, plan: dict
) -> None:
    record(client, plan, 4, status="no-show")
    assert [p[1] for p in phases(client, plan)] == ["not-started"] * 3
    response = client.patch(
        plan_url(plan, "sessions", 4), json={"status": "attended", "phq9_total": 9}
    )
    assert response.status_code == 200, response.text
    assert response.json()["phq9_total"] == 9
    assert phases(client, plan)[1] == ("middle", "active", on(4), None)


def test_a_cancelled_session_can_be_booked_again_on_a_new_date(client: Client, plan: dict) -> None:
    record(client, plan, 2, status="cancelled")
    again = client.patch(
        plan_url(plan, "sessions", 2), json={"status": "scheduled", "date": "2026-01-14"}
    )
    assert again.status_code == 200, again.text
    assert (again.json()["status"], again.json()["date"]) == ("scheduled", "2026-01-14")


@pytest.mark.parametrize(
    ("start", "change", "field"),
    [
        ("scheduled", {"status": "attended", "date": None}, "date"),
        ("scheduled", {"status": "attended", "date": "2099-01-01"}, "date"),
        ("scheduled", {"phq9_total": 5}, "phq9_total"),
        ("scheduled", {"techniques": ["role-play"]}, "techniques"),
        ("scheduled", {"date": "2025-12-31"}, "date"),
        ("attended", {"date": None}, "date"),
        ("attended", {"date": "2099-01-01"}, "date"),
        ("attended", {"phq9_total": 28}, "phq9_total"),
        ("attended", {"techniques": ["mindfulness"]}, "techniques.0"),
        ("attended", {"status": "no-show", "phq9_total": 4}, "phq9_total"),
        ("attended", {"status": "held"}, "status"),
        ("attended", {"note": ""}, "note"),
        ("attended", {"number": 2}, "number"),
        ("attended", {"id": "other"}, "id"),
    ],
)
def test_an_invalid_session_change_is_refused_and_changes_nothing(
    client: Client,
    database: Database,
    plan: dict,
    start: str,
    change: dict[str, Any],
    field: str,
) -> None:
    record(client, plan, 1, status=start, phq9_total=12 if start == "attended" else None)
    before = state(client, database, plan)
    response = client.patch(plan_url(plan, "sessions", 1), json=change)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    assert state(client, database, plan) == before


def test_a_session_number_cannot_be_changed(client: Client, plan: dict) -> None:
    record(client, plan, 1)
    response = client.patch(plan_url(plan, "sessions", 1), json={"number": 2})
    assert response.status_code == 422
    assert problem_fields(response) == ["number"]
    assert "unknown field" in response.json()["errors"][0]["message"]
    assert client.get(plan_url(plan, "sessions", 2)).status_code == 404


def test_a_session_change_bumps_versions_and_records_who(client: Client, plan: dict) -> None:
    record(client, plan, 1)
    plan_version = client.get(plan_url(plan)).json()["version"]
    response = client.patch(
        plan_url(plan, "sessions", 1),
        json={"note": "Discussed the funeral", "phq9_total": 14},
        headers={"X-Actor": "dr.rivera"},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["note"], changed["phq9_total"]) == ("Discussed the funeral", 14)
    assert changed["version"] == 2
    assert response.headers["ETag"] == '"2"'
    assert (changed["created_by"], changed["updated_by"]) == (client.client_id, "dr.rivera")
    assert client.get(plan_url(plan)).json()["version"] == plan_version + 1


def test_a_session_patch_with_nothing_new_keeps_the_versions(client: Client, plan: dict) -> None:
    created = record(client, plan, 1, note="same").json()
    plan_version = client.get(plan_url(plan)).json()["version"]
    response = client.patch(plan_url(plan, "sessions", 1), json={"note": "same"})
    assert response.status_code == 200
    assert response.json()["version"] == created["version"]
    assert client.get(plan_url(plan)).json()["version"] == plan_version


def test_a_stale_if_match_on_a_session_is_refused_with_412_and_changes_nothing(
    client: Client, database: Database, plan: dict
) -> None:
    record(client, plan, 1, note="first")
    client.patch(plan_url(plan, "sessions", 1), json={"note": "second"})
    before = state(client, database, plan)
    stale = client.patch(
        plan_url(plan, "sessions", 1), json={"note": "third"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.headers["ETag"] == '"2"'
    assert stale.headers["Content-Type"].startswith("application/problem+json")
    assert state(client, database, plan) == before
    fresh = client.patch(
        plan_url(plan, "sessions", 1), json={"note": "third"}, headers={"If-Match": '"2"'}
    )
    assert fresh.status_code == 200
    assert fresh.json()["note"] == "third"


def test_if_none_match_with_the_current_session_version_answers_304(
    client: Client, plan: dict
) -> None:
    record(client, plan, 1)
    current = client.get(plan_url(plan, "sessions", 1), headers={"If-None-Match": '"1"'})
    assert current.status_code == 304
    assert current.headers["ETag"] == '"1"'
    assert current.content == b""
    client.patch(plan_url(plan, "sessions", 1), json={"note": "changed"})
    stale = client.get(plan_url(plan, "sessions", 1), headers={"If-None-Match": '"1"'})
    assert stale.status_code == 200
    assert stale.json()["note"] == "changed"


# --- deleting -----------------------------------------------------------------------------


def test_a_deleted_session_answers_410_and_its_number_can_be_recorded_again(
    client: Client, database: Database, plan: dict
) -> None:
    record(client, plan, 2, phq9_total=20)
    deleted = client.delete(plan_url(plan, "sessions", 2), headers={"If-Match": '"1"'})
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = client.get(plan_url(plan, "sessions", 2))
    assert gone.status_code == 410
    assert gone.json()["type"] == "urn:ipt-careplans:problem:gone"
    assert client.patch(plan_url(plan, "sessions", 2), json={"note": "x"}).status_code == 410
    assert client.delete(plan_url(plan, "sessions", 2)).status_code == 410
    assert client.get(plan_url(plan, "sessions")).json()["total"] == 0
    again = record(client, plan, 2, phq9_total=11)
    assert again.status_code == 201, again.text
    read = client.get(plan_url(plan, "sessions", 2))
    assert read.status_code == 200
    assert read.json()["phq9_total"] == 11
    assert read.json()["id"] == again.json()["id"]
    assert count_rows(database, "sessions") == 2
    assert client.get(plan_url(plan, "sessions")).json()["total"] == 1


def test_deleting_a_session_with_a_stale_if_match_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    record(client, plan, 1)
    client.patch(plan_url(plan, "sessions", 1), json={"note": "edited"})
    before = state(client, database, plan)
    refused = client.delete(plan_url(plan, "sessions", 1), headers={"If-Match": '"1"'})
    assert refused.status_code == 412
    assert state(client, database, plan) == before
    assert client.get(plan_url(plan, "sessions", 1)).status_code == 200


# --- listing ------------------------------------------------------------------------------


def test_sessions_are_listed_in_number_order(client: Client, plan: dict) -> None:
    for number in (7, 2, 11, 4, 9):
        assert record(client, plan, number, status="scheduled").status_code == 201
    listing = client.get(plan_url(plan, "sessions")).json()
    assert [s["number"] for s in listing["items"]] == [2, 4, 7, 9, 11]
    assert (listing["total"], listing["page"], listing["page_size"]) == (5, 1, 20)


def test_sessions_are_listed_in_pages_with_links(client: Client, plan: dict) -> None:
    for number in (7, 2, 11, 4, 9):
        record(client, plan, number, status="scheduled")
    first = client.get(plan_url(plan, "sessions"), params={"page_size": 2}).json()
    assert first["total"] == 5
    assert first["links"]["prev"] is None
    assert first["links"]["last"].endswith("page=3&page_size=2")
    pages = [[s["number"] for s in first["items"]]]
    link = first["links"]["next"]
    while link:
        page = client.get(link).json()
        pages.append([s["number"] for s in page["items"]])
        link = page["links"]["next"]
    assert pages == [[2, 4], [7, 9], [11]]
    beyond = client.get(plan_url(plan, "sessions"), params={"page": 4, "page_size": 2}).json()
    assert (beyond["items"], beyond["total"]) == ([], 5)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"page": 0}, "page"), ({"page_size": 101}, "page_size"), ({"number": 1}, "number")],
)
def test_an_invalid_session_list_query_is_refused(
    client: Client, plan: dict, params: dict[str, Any], field: str
) -> None:
    response = client.get(plan_url(plan, "sessions"), params=params)
    assert response.status_code == 422
    assert problem_fields(response) == [field]
    assert response.json()["errors"][0]["location"] == "query"


def test_note_of_a_held_session_can_be_corrected_while_the_plan_is_on_hold(
    client: Client, plan: dict
) -> None:
    client.post(
        plan_url(plan, "sessions"), json={"number": 1, "date": "2026-01-05", "status": "attended"}
    )
    client.patch(plan_url(plan), json={"status": "on-hold"})
    corrected = client.patch(plan_url(plan, "sessions", 1), json={"note": "Inventory done."})
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["note"] == "Inventory done."
    refused = client.post(
        plan_url(plan, "sessions"), json={"number": 2, "date": "2026-01-12", "status": "attended"}
    )
    assert refused.status_code == 422


def test_plan_cannot_start_after_a_session_it_held(client: Client, plan: dict) -> None:
    client.post(
        plan_url(plan, "sessions"), json={"number": 1, "date": "2026-01-05", "status": "attended"}
    )
    refused = client.patch(plan_url(plan), json={"start_date": "2026-01-06"})
    assert refused.status_code == 422
    assert problem_fields(refused) == ["start_date"]
    assert client.patch(plan_url(plan), json={"start_date": "2026-01-04"}).status_code == 200
