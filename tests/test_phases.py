"""Phases through HTTP: the default layout, moving boundaries, status, renegotiated contracts."""

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


def attend(client: Client, plan: dict, number: int) -> None:
    body = {"number": number, "date": on(number), "status": "attended"}
    response = client.post(plan_url(plan, "sessions"), json=body)
    assert response.status_code == 201, response.text


def layout(client: Client, plan: dict) -> list[tuple[str, int, int, str]]:
    items = client.get(plan_url(plan, "phases")).json()["items"]
    return [(p["code"], p["start_session"], p["end_session"], p["status"]) for p in items]


def versions(client: Client, plan: dict) -> dict[str, int]:
    items = client.get(plan_url(plan, "phases")).json()["items"]
    return {p["code"]: p["version"] for p in items}


def patch_phase(client: Client, plan: dict, code: str, /, **body: Any) -> requests.Response:
    return client.patch(plan_url(plan, "phases", code), json=body)


def state(client: Client, database: Database, plan: dict) -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    return {
        "plan": client.get(plan_url(plan)).json(),
        "phases": client.get(plan_url(plan, "phases")).json(),
        "rows": {t: count_rows(database, t) for t in ("sessions", "phases", "plan_changes")},
    }


# --- the default layout -------------------------------------------------------------------


def test_a_12_session_plan_starts_with_initial_middle_and_termination_not_started(
    client: Client, plan: dict
) -> None:
    response = client.get(plan_url(plan, "phases"))
    assert response.status_code == 200
    listing = response.json()
    assert listing["total"] == 3
    assert [
        (p["code"], p["start_session"], p["end_session"], p["status"]) for p in listing["items"]
    ] == [
        ("initial", 1, 3, "not-started"),
        ("middle", 4, 9, "not-started"),
        ("termination", 10, 12, "not-started"),
    ]
    for phase in listing["items"]:
        assert (phase["start_date"], phase["end_date"]) == (None, None)
        assert phase["plan_id"] == plan["id"]
        assert phase["version"] == 1


def test_a_16_session_plan_ends_with_termination_14_to_16(client: Client) -> None:
    plan = client.create_plan(planned_sessions=16)
    assert layout(client, plan) == [
        ("initial", 1, 3, "not-started"),
        ("middle", 4, 13, "not-started"),
        ("termination", 14, 16, "not-started"),
    ]


def test_the_shortest_standard_contract_leaves_one_middle_session(client: Client) -> None:
    plan = client.create_plan(planned_sessions=7)
    assert [p[1:3] for p in layout(client, plan)] == [(1, 3), (4, 4), (5, 7)]


def test_a_maintenance_plan_has_one_maintenance_phase_over_every_session(
    client: Client,
) -> None:
    plan = client.create_plan(variant="maintenance", planned_sessions=12)
    assert layout(client, plan) == [("maintenance", 1, 12, "not-started")]
    assert client.get(plan_url(plan, "phases", "initial")).status_code == 404


def test_the_plan_shows_the_same_phases_as_the_phase_list(client: Client, plan: dict) -> None:
    listing = client.get(plan_url(plan, "phases")).json()["items"]
    assert client.get(plan_url(plan)).json()["phases"] == listing


def test_phases_are_listed_in_pages(client: Client, plan: dict) -> None:
    first = client.get(plan_url(plan, "phases"), params={"page_size": 2}).json()
    assert [p["code"] for p in first["items"]] == ["initial", "middle"]
    assert first["total"] == 3
    second = client.get(first["links"]["next"]).json()
    assert [p["code"] for p in second["items"]] == ["termination"]
    assert second["links"]["next"] is None


# --- reading one ----------------------------------------------------------------------------


def test_a_phase_is_read_by_its_name_with_its_etag(client: Client, plan: dict) -> None:
    response = client.get(plan_url(plan, "phases", "middle"))
    assert response.status_code == 200
    phase = response.json()
    assert (phase["code"], phase["start_session"], phase["end_session"]) == ("middle", 4, 9)
    assert response.headers["ETag"] == f'"{phase["version"]}"'


@pytest.mark.parametrize("name", ["closing", "maintenance", "Initial", "1"])
def test_a_phase_the_plan_does_not_have_is_404(client: Client, plan: dict, name: str) -> None:
    response = client.get(plan_url(plan, "phases", name))
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:ipt-careplans:problem:not-found"
    assert patch_phase(client, plan, name, description="x").status_code == 404


def test_phases_of_an_unknown_plan_are_404_and_of_a_deleted_plan_410(
    client: Client, plan: dict
) -> None:
    assert client.get("/api/v1/care-plans/nope/phases").status_code == 404
    assert client.get("/api/v1/care-plans/nope/phases/initial").status_code == 404
    client.delete(plan_url(plan))
    assert client.get(plan_url(plan, "phases")).status_code == 410
    assert client.get(plan_url(plan, "phases", "initial")).status_code == 410
    assert patch_phase(client, plan, "initial", end_session=4).status_code == 410


def test_if_none_match_with_the_current_phase_version_answers_304(
    client: Client, plan: dict
) -> None:
    url = plan_url(plan, "phases", "initial")
    current = client.get(url, headers={"If-None-Match": '"1"'})
    assert current.status_code == 304
    assert current.headers["ETag"] == '"1"'
    assert current.content == b""
    assert client.get(url, headers={"If-None-Match": '"7", W/"1"'}).status_code == 304
    patch_phase(client, plan, "initial", description="Sick role and inventory")
    stale = client.get(url, headers={"If-None-Match": '"1"'})
    assert stale.status_code == 200
    assert stale.json()["description"] == "Sick role and inventory"


# --- moving boundaries --------------------------------------------------------------------


def test_moving_the_initial_end_moves_the_middle_start_and_bumps_versions(
    client: Client, plan: dict
) -> None:
    response = patch_phase(client, plan, "initial", end_session=4)
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["start_session"], changed["end_session"]) == (1, 4)
    assert changed["version"] == 2
    assert response.headers["ETag"] == '"2"'
    assert layout(client, plan) == [
        ("initial", 1, 4, "not-started"),
        ("middle", 5, 9, "not-started"),
        ("termination", 10, 12, "not-started"),
    ]
    assert versions(client, plan) == {"initial": 2, "middle": 2, "termination": 1}
    assert client.get(plan_url(plan)).json()["version"] == plan["version"] + 1


def test_a_boundary_move_is_logged_for_each_phase_it_moved(client: Client, plan: dict) -> None:
    patch_phase(client, plan, "initial", end_session=4)
    version = client.get(plan_url(plan)).json()["version"]
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    moved = [c for c in changes if c["plan_version"] == version]
    ids = {p["code"]: p["id"] for p in client.get(plan_url(plan, "phases")).json()["items"]}
    assert sorted((c["entity_id"], c["action"], c["fields"]) for c in moved) == sorted(
        [
            (ids["initial"], "update", ["end_session"]),
            (ids["middle"], "update", ["start_session"]),
        ]
    )


def test_moving_the_termination_start_moves_the_middle_end(client: Client, plan: dict) -> None:
    response = patch_phase(client, plan, "termination", start_session=9)
    assert response.status_code == 200, response.text
    assert [p[1:3] for p in layout(client, plan)] == [(1, 3), (4, 8), (9, 12)]
    assert versions(client, plan) == {"initial": 1, "middle": 2, "termination": 2}


def test_moving_both_ends_of_the_middle_moves_both_neighbours(client: Client, plan: dict) -> None:
    response = patch_phase(client, plan, "middle", start_session=3, end_session=10)
    assert response.status_code == 200, response.text
    assert [p[1:3] for p in layout(client, plan)] == [(1, 2), (3, 10), (11, 12)]


def test_shrinking_a_phase_to_one_session_is_allowed(client: Client, plan: dict) -> None:
    assert patch_phase(client, plan, "initial", end_session=8).status_code == 200
    assert [p[1:3] for p in layout(client, plan)] == [(1, 8), (9, 9), (10, 12)]


def test_sending_the_current_range_changes_nothing(client: Client, plan: dict) -> None:
    response = patch_phase(client, plan, "middle", start_session=4, end_session=9)
    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert client.get(plan_url(plan)).json()["version"] == plan["version"]


@pytest.mark.parametrize(
    ("code", "body", "field"),
    [
        ("initial", {"end_session": 9}, "end_session"),
        ("initial", {"end_session": 12}, "end_session"),
        ("termination", {"start_session": 4}, "start_session"),
        ("termination", {"start_session": 2}, "start_session"),
        ("middle", {"start_session": 1}, "start_session"),
        ("middle", {"end_session": 12}, "end_session"),
        ("initial", {"start_session": 2}, "start_session"),
        ("termination", {"end_session": 11}, "end_session"),
        ("termination", {"end_session": 13}, "end_session"),
        ("middle", {"start_session": 7, "end_session": 6}, "end_session"),
        ("middle", {"start_session": 10}, "end_session"),
        ("middle", {"end_session": 0}, "end_session"),
        ("middle", {"start_session": "five"}, "start_session"),
        ("middle", {"status": "paused"}, "status"),
        ("middle", {"description": "   "}, "description"),
        ("middle", {"start_date": "2026-03-01", "end_date": "2026-02-01"}, "end_date"),
        ("middle", {"code": "termination"}, "code"),
        ("middle", {"version": 5}, "version"),
        ("middle", {"sessions": [4, 9]}, "sessions"),
    ],
)
def test_an_invalid_phase_change_is_refused_naming_the_field_and_nothing_changes(
    client: Client,
    database: Database,
    plan: dict,
    code: str,
    body: dict[str, Any],
    field: str,
) -> None:
    before = state(client, database, plan)
    response = patch_phase(client, plan, code, **body)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    assert state(client, database, plan) == before


def test_a_range_that_swallows_a_neighbour_names_it(client: Client, plan: dict) -> None:
    response = patch_phase(client, plan, "initial", end_session=9)
    assert problem_fields(response) == ["end_session"]
    assert "middle phase (sessions 4-9)" in response.json()["errors"][0]["message"]


def test_a_maintenance_phase_always_spans_the_whole_contract(
    client: Client, database: Database
) -> None:
    plan = client.create_plan(variant="maintenance", planned_sessions=12)
    before = state(client, database, plan)
    for body, field in (
        ({"end_session": 11}, "end_session"),
        ({"start_session": 2}, "start_session"),
    ):
        response = patch_phase(client, plan, "maintenance", **body)
        assert response.status_code == 422
        assert problem_fields(response) == [field]
    assert state(client, database, plan) == before


# --- status and dates ----------------------------------------------------------------------


def test_activating_the_middle_phase_completes_the_initial_phase(
    client: Client, plan: dict
) -> None:
    response = patch_phase(client, plan, "middle", status="active", start_date="2026-01-26")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["start_date"]) == ("active", "2026-01-26")
    items = client.get(plan_url(plan, "phases")).json()["items"]
    assert [(p["status"], p["start_date"], p["end_date"]) for p in items] == [
        ("completed", "2026-01-26", "2026-01-26"),
        ("active", "2026-01-26", None),
        ("not-started", None, None),
    ]
    assert versions(client, plan) == {"initial": 2, "middle": 2, "termination": 1}
    assert client.get(plan_url(plan)).json()["version"] == plan["version"] + 1


def test_activating_a_phase_without_a_date_starts_it_today(client: Client, plan: dict) -> None:
    response = patch_phase(client, plan, "middle", status="active")
    assert response.status_code == 200, response.text
    today = datetime.now(UTC).date().isoformat()
    assert response.json()["start_date"] == today


def test_activating_an_earlier_phase_again_resets_the_later_active_one(
    client: Client, plan: dict
) -> None:
    attend(client, plan, 5)
    response = patch_phase(client, plan, "initial", status="active")
    assert response.status_code == 200, response.text
    items = client.get(plan_url(plan, "phases")).json()["items"]
    assert [(p["status"], p["start_date"]) for p in items] == [
        ("active", on(5)),
        ("not-started", None),
        ("not-started", None),
    ]
    assert items[0]["end_date"] is None


def test_completing_a_phase_by_hand_gives_it_an_end_date(client: Client, plan: dict) -> None:
    attend(client, plan, 1)
    response = patch_phase(client, plan, "initial", status="completed")
    assert response.status_code == 200, response.text
    today = datetime.now(UTC).date().isoformat()
    assert (response.json()["status"], response.json()["end_date"]) == ("completed", today)


def test_a_phase_description_and_dates_can_be_set_and_cleared(client: Client, plan: dict) -> None:
    set_ = patch_phase(
        client, plan, "initial", description="Inventory; sick role", start_date="2026-01-05"
    )
    assert set_.status_code == 200, set_.text
    assert (set_.json()["description"], set_.json()["start_date"]) == (
        "Inventory; sick role",
        "2026-01-05",
    )
    cleared = patch_phase(client, plan, "initial", description=None, start_date=None)
    assert cleared.status_code == 200
    assert (cleared.json()["description"], cleared.json()["start_date"]) == (None, None)
    assert cleared.json()["version"] == 3


def test_a_phase_change_records_who_made_it(client: Client, plan: dict) -> None:
    response = client.patch(
        plan_url(plan, "phases", "initial"),
        json={"end_session": 4},
        headers={"X-Actor": "dr.rivera"},
    )
    assert response.json()["updated_by"] == "dr.rivera"
    middle = client.get(plan_url(plan, "phases", "middle")).json()
    assert middle["updated_by"] == "dr.rivera"
    termination = client.get(plan_url(plan, "phases", "termination")).json()
    assert termination["updated_by"] == client.client_id


def test_a_stale_if_match_on_a_phase_is_refused_with_412_and_changes_nothing(
    client: Client, database: Database, plan: dict
) -> None:
    assert patch_phase(client, plan, "initial", end_session=4).status_code == 200
    before = state(client, database, plan)
    stale = client.patch(
        plan_url(plan, "phases", "initial"), json={"end_session": 5}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.headers["ETag"] == '"2"'
    assert stale.headers["Content-Type"].startswith("application/problem+json")
    assert state(client, database, plan) == before
    fresh = client.patch(
        plan_url(plan, "phases", "initial"), json={"end_session": 5}, headers={"If-Match": 'W/"2"'}
    )
    assert fresh.status_code == 200
    assert fresh.json()["end_session"] == 5


def test_the_phases_of_a_closed_plan_cannot_change(
    client: Client, database: Database, plan: dict
) -> None:
    client.patch(plan_url(plan), json={"status": "completed", "open_goals": "resolve"})
    before = state(client, database, plan)
    for body in ({"end_session": 4}, {"status": "active"}, {"description": "late"}):
        response = patch_phase(client, plan, "middle", **body)
        assert response.status_code == 422, response.text
        assert response.headers["Content-Type"].startswith("application/problem+json")
    assert state(client, database, plan) == before


# --- boundaries and attended sessions ---------------------------------------------------------


def test_moving_a_boundary_past_the_last_attended_session_makes_its_phase_current(
    client: Client, plan: dict
) -> None:
    attend(client, plan, 3)
    assert [p[3] for p in layout(client, plan)] == ["active", "not-started", "not-started"]
    response = patch_phase(client, plan, "initial", end_session=2)
    assert response.status_code == 200, response.text
    assert layout(client, plan) == [
        ("initial", 1, 2, "completed"),
        ("middle", 3, 9, "active"),
        ("termination", 10, 12, "not-started"),
    ]


def test_moving_an_active_phase_ahead_of_the_last_attended_session_reopens_the_one_before(
    client: Client, plan: dict
) -> None:
    attend(client, plan, 1)
    attend(client, plan, 4)
    response = patch_phase(client, plan, "initial", end_session=4)
    assert response.status_code == 200, response.text
    assert layout(client, plan) == [
        ("initial", 1, 4, "active"),
        ("middle", 5, 9, "not-started"),
        ("termination", 10, 12, "not-started"),
    ]
    middle = client.get(plan_url(plan, "phases", "middle")).json()
    assert middle["start_date"] is None
    initial = client.get(plan_url(plan, "phases", "initial")).json()
    assert (initial["start_date"], initial["end_date"]) == (on(1), None)


# --- renegotiating the contract -----------------------------------------------------------------


def test_renegotiating_to_16_sessions_moves_termination_and_keeps_the_old_contract(
    client: Client, plan: dict
) -> None:
    response = client.patch(
        plan_url(plan),
        json={"planned_sessions": 16, "contract_change_reason": "slow response at session 8"},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["planned_sessions"] == 16
    assert [
        (c["sequence"], c["planned_sessions"], c["session_frequency"], c["reason"])
        for c in changed["contract_history"]
    ] == [
        (1, 12, "weekly", None),
        (2, 16, "weekly", "slow response at session 8"),
    ]
    assert layout(client, plan) == [
        ("initial", 1, 3, "not-started"),
        ("middle", 4, 13, "not-started"),
        ("termination", 14, 16, "not-started"),
    ]
    moved = versions(client, plan)
    assert moved["initial"] == 1
    assert moved["middle"] > 1
    assert moved["termination"] > 1


def test_a_renegotiated_contract_lets_sessions_beyond_the_old_one_be_recorded(
    client: Client, plan: dict
) -> None:
    client.patch(plan_url(plan), json={"planned_sessions": 16, "contract_change_reason": "more"})
    response = client.post(plan_url(plan, "sessions"), json={"number": 14, "date": on(14)})
    assert response.status_code == 201, response.text


def test_shortening_the_contract_moves_termination_earlier(client: Client, plan: dict) -> None:
    response = client.patch(plan_url(plan), json={"planned_sessions": 10})
    assert response.status_code == 200, response.text
    assert [p[1:3] for p in layout(client, plan)] == [(1, 3), (4, 7), (8, 10)]
    assert len(response.json()["contract_history"]) == 2


def test_shrinking_the_contract_below_a_recorded_session_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    client.post(plan_url(plan, "sessions"), json={"number": 11, "date": on(11)})
    before = state(client, database, plan)
    response = client.patch(
        plan_url(plan), json={"planned_sessions": 10, "contract_change_reason": "faster"}
    )
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["planned_sessions"]
    assert "11" in response.json()["errors"][0]["message"]
    assert state(client, database, plan) == before
    assert len(client.get(plan_url(plan)).json()["contract_history"]) == 1
    allowed = client.patch(plan_url(plan), json={"planned_sessions": 11})
    assert allowed.status_code == 200, allowed.text
    assert [p[1:3] for p in layout(client, plan)] == [(1, 3), (4, 8), (9, 11)]


def test_a_deleted_session_does_not_hold_the_contract_open(client: Client, plan: dict) -> None:
    client.post(plan_url(plan, "sessions"), json={"number": 12, "date": on(12)})
    client.delete(plan_url(plan, "sessions", 12))
    assert client.patch(plan_url(plan), json={"planned_sessions": 10}).status_code == 200


def test_a_contract_too_short_for_the_middle_phase_is_refused(
    client: Client, database: Database, plan: dict
) -> None:
    patch_phase(client, plan, "initial", end_session=8)
    before = state(client, database, plan)
    response = client.patch(plan_url(plan), json={"planned_sessions": 11})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["planned_sessions"]
    assert state(client, database, plan) == before


def test_renegotiating_a_maintenance_contract_resizes_its_one_phase(client: Client) -> None:
    plan = client.create_plan(variant="maintenance", planned_sessions=12)
    response = client.patch(plan_url(plan), json={"planned_sessions": 6})
    assert response.status_code == 200, response.text
    assert layout(client, plan) == [("maintenance", 1, 6, "not-started")]


def test_lengthening_the_contract_during_termination_lengthens_termination(
    client: Client, plan: dict
) -> None:
    attend(client, plan, 1)
    attend(client, plan, 10)
    assert [p[3] for p in layout(client, plan)] == ["completed", "completed", "active"]
    response = client.patch(plan_url(plan), json={"planned_sessions": 16})
    assert response.status_code == 200, response.text
    assert layout(client, plan) == [
        ("initial", 1, 3, "completed"),
        ("middle", 4, 9, "completed"),
        ("termination", 10, 16, "active"),
    ]
    termination = client.get(plan_url(plan, "phases", "termination")).json()
    assert (termination["start_date"], termination["end_date"]) == (on(10), None)


def test_renegotiating_8_to_10_after_session_6_keeps_every_phase_where_it_was(
    client: Client,
) -> None:
    plan = client.create_plan(variant="brief", planned_sessions=8)
    for number in range(1, 7):
        attend(client, plan, number)
    assert layout(client, plan) == [
        ("initial", 1, 3, "completed"),
        ("middle", 4, 5, "completed"),
        ("termination", 6, 8, "active"),
    ]
    response = client.patch(
        plan_url(plan), json={"planned_sessions": 10, "contract_change_reason": "two more"}
    )
    assert response.status_code == 200, response.text
    assert layout(client, plan) == [
        ("initial", 1, 3, "completed"),
        ("middle", 4, 5, "completed"),
        ("termination", 6, 10, "active"),
    ]
    attend(client, plan, 10)
    assert [p[3] for p in layout(client, plan)] == ["completed", "completed", "active"]


def test_shortening_the_middle_phase_past_the_last_session_moves_the_course_forward(
    client: Client, plan: dict
) -> None:
    attend(client, plan, 9)
    response = client.patch(plan_url(plan), json={"planned_sessions": 10})
    assert response.status_code == 200, response.text
    assert layout(client, plan) == [
        ("initial", 1, 3, "completed"),
        ("middle", 4, 7, "completed"),
        ("termination", 8, 10, "active"),
    ]


def test_a_contract_ending_before_a_begun_last_phase_is_refused_with_the_reason(
    client: Client, database: Database, plan: dict
) -> None:
    attend(client, plan, 2)
    assert patch_phase(client, plan, "termination", status="active").status_code == 200
    before = state(client, database, plan)
    response = client.patch(plan_url(plan), json={"planned_sessions": 9})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["planned_sessions"]
    message = response.json()["errors"][0]["message"]
    assert "termination phase is active from session 10" in message
    assert "backwards" in message
    assert state(client, database, plan) == before
