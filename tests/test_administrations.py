"""Administrations of PHQ-9 and GAD-7 through HTTP: recording, correcting, deleting, the
instrument declarations, and the session's PHQ-9 total they stand behind."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
import requests
from conftest import Client, count_rows, plan_url, problem_fields
from sqlalchemy import event

from service import administrations
from service.db import Database
from service.instruments import GAD7, PHQ9

START = date(2026, 1, 5)  # the start_date of the `plan` fixture


def on(number: int) -> str:
    return (START + timedelta(weeks=number - 1)).isoformat()


def answers(*scores: int, instrument: Any = PHQ9) -> dict[str, int]:
    """Answers to the scored items, in order; the rest 0."""
    padded = list(scores) + [0] * (len(instrument.items) - len(scores))
    return {item.link_id: score for item, score in zip(instrument.items, padded, strict=True)}


def attend(client: Client, plan: dict, number: int, **fields: Any) -> dict[str, Any]:
    body = {"number": number, "date": on(number), "status": "attended", **fields}
    response = client.post(plan_url(plan, "sessions"), json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def administer(client: Client, plan: dict, **fields: Any) -> requests.Response:
    body = {"instrument": "phq-9", "administered_on": on(1), **fields}
    body = {k: v for k, v in body.items() if v is not None}
    return client.post(plan_url(plan, "administrations"), json=body)


def recorded(client: Client, plan: dict, **fields: Any) -> dict[str, Any]:
    response = administer(client, plan, **fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


def state(client: Client, database: Database, plan: dict) -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    return {
        "plan": client.get(plan_url(plan)).json(),
        "administrations": client.get(plan_url(plan, "administrations")).json(),
        "goals": client.get(plan_url(plan, "goals")).json(),
        "rows": {
            t: count_rows(database, t)
            for t in ("administrations", "safety_signals", "plan_changes", "sessions")
        },
    }


# --- recording ----------------------------------------------------------------------------


def test_an_administration_answered_item_by_item_gets_its_total_and_band(
    client: Client, plan: dict
) -> None:
    given = {**answers(2, 2, 1, 2, 1, 1, 1, 0, 0), "phq-9-difficulty": 2}
    response = administer(client, plan, answers=given, note="first visit")
    assert response.status_code == 201, response.text
    record = response.json()
    assert (record["total"], record["band"]) == (10, {"code": "moderate", "display": "Moderate"})
    assert (record["source"], record["answered_by"], record["instrument"]) == (
        "items",
        "patient",
        "phq-9",
    )
    assert record["answers"] == given
    assert (record["administered_on"], record["session_number"], record["note"]) == (
        on(1),
        None,
        "first visit",
    )
    assert record["version"] == 1 and response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == plan_url(plan, "administrations", record["id"])
    assert client.get(response.headers["Location"]).json() == record


def test_a_total_alone_is_recorded_as_total_only(client: Client, plan: dict) -> None:
    record = recorded(client, plan, total=21, answered_by="clinician")
    assert (record["source"], record["total"], record["answers"]) == ("total-only", 21, None)
    assert record["band"]["code"] == "severe"


def test_a_session_number_gives_its_date_and_the_session_lists_the_score(
    client: Client, plan: dict
) -> None:
    attend(client, plan, 2)
    record = recorded(client, plan, administered_on=None, session_number=2, answers=answers(3, 3))
    assert record["administered_on"] == on(2)
    session = client.get(plan_url(plan, "sessions", 2)).json()
    assert session["phq9_total"] == 6
    assert session["administrations"] == [
        {
            "id": record["id"],
            "instrument": "phq-9",
            "source": "items",
            "total": 6,
            "band": {"code": "mild", "display": "Mild"},
        }
    ]


def test_gad7_is_recorded_with_its_own_items_and_bands(client: Client, plan: dict) -> None:
    record = recorded(
        client, plan, instrument="gad-7", answers=answers(3, 3, 3, 3, 3, instrument=GAD7)
    )
    assert (record["total"], record["band"]["code"]) == (15, "severe")


def test_the_list_is_in_the_order_scores_were_taken_and_filters_by_instrument(
    client: Client, plan: dict
) -> None:
    later = recorded(client, plan, administered_on=on(3), total=12)
    earlier = recorded(client, plan, administered_on=on(1), total=18)
    anxiety = recorded(client, plan, instrument="gad-7", administered_on=on(2), total=9)
    listed = client.get(plan_url(plan, "administrations")).json()
    assert [a["id"] for a in listed["items"]] == [earlier["id"], anxiety["id"], later["id"]]
    assert listed["total"] == 3
    only = client.get(plan_url(plan, "administrations"), params={"instrument": "gad-7"}).json()
    assert [a["id"] for a in only["items"]] == [anxiety["id"]]
    paged = client.get(plan_url(plan, "administrations"), params={"page_size": 1, "page": 2})
    assert [a["id"] for a in paged.json()["items"]] == [anxiety["id"]]
    assert "instrument=" not in paged.json()["links"]["next"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"instrument": "bdi-ii", "total": 3}, "instrument"),
        ({"answers": {"phq-9-1": 1}}, "answers"),
        ({"answers": {**answers(), "phq-9-1": 4}}, "answers.phq-9-1"),
        ({"answers": {**answers(), "phq-9-1": -1}}, "answers.phq-9-1"),
        ({"answers": {**answers(), "gad-7-1": 1}}, "answers.gad-7-1"),
        ({"answers": answers(1), "total": 5}, "total"),
        ({"total": 28}, "total"),
        ({"total": -1}, "total"),
        ({}, "answers"),
        ({"administered_on": None, "total": 3}, "administered_on"),
        ({"administered_on": "2025-12-31", "total": 3}, "administered_on"),
        ({"administered_on": "2999-01-01", "total": 3}, "administered_on"),
        ({"session_number": 4, "total": 3}, "session_number"),
        ({"answered_by": "neighbour", "total": 3}, "answered_by"),
        ({"total": 3, "note": "x" * 2001}, "note"),
    ],
)
def test_a_bad_administration_is_refused_naming_the_field_and_changes_nothing(
    client: Client, database: Database, plan: dict, fields: dict, named: str
) -> None:
    before = state(client, database, plan)
    response = client.post(
        plan_url(plan, "administrations"),
        json={"instrument": "phq-9", "administered_on": on(1), **fields},
    )
    assert response.status_code == 422, response.text
    assert named in problem_fields(response), response.text
    assert state(client, database, plan) == before


def test_one_administration_of_an_instrument_per_session(client: Client, plan: dict) -> None:
    attend(client, plan, 1)
    first = recorded(client, plan, session_number=1, total=14)
    second = administer(client, plan, session_number=1, answers=answers(1))
    assert second.status_code == 422
    assert problem_fields(second) == ["session_number"]
    assert first["id"] in second.json()["detail"]
    # Another instrument in the same session is fine.
    assert (
        administer(client, plan, instrument="gad-7", session_number=1, total=4).status_code == 201
    )


def test_a_score_is_taken_in_an_attended_session_only(client: Client, plan: dict) -> None:
    client.post(plan_url(plan, "sessions"), json={"number": 2, "date": on(2)})
    response = administer(client, plan, session_number=2, administered_on=None, total=5)
    assert response.status_code == 422
    assert "session_number" in problem_fields(response)


# --- correcting and deleting --------------------------------------------------------------


def test_new_answers_replace_the_old_and_the_total_follows(client: Client, plan: dict) -> None:
    record = recorded(client, plan, answers=answers(3, 3, 3))
    url = plan_url(plan, "administrations", record["id"])
    response = client.patch(url, json={"answers": answers(1)}, headers={"If-Match": '"1"'})
    assert response.status_code == 200, response.text
    assert (response.json()["total"], response.json()["version"]) == (1, 2)
    assert response.headers["ETag"] == '"2"'
    stale = client.patch(url, json={"note": "late"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    total_only = client.patch(url, json={"total": 20})
    assert (total_only.json()["source"], total_only.json()["answers"]) == ("total-only", None)


def test_the_instrument_of_an_administration_does_not_change(client: Client, plan: dict) -> None:
    record = recorded(client, plan, total=3)
    url = plan_url(plan, "administrations", record["id"])
    response = client.patch(url, json={"instrument": "gad-7"})
    assert response.status_code == 422
    assert problem_fields(response) == ["instrument"]


def test_a_deleted_administration_is_gone_and_leaves_the_list(client: Client, plan: dict) -> None:
    record = recorded(client, plan, total=3)
    url = plan_url(plan, "administrations", record["id"])
    assert client.delete(url, headers={"If-Match": '"9"'}).status_code == 412
    assert client.delete(url, headers={"If-Match": '"1"'}).status_code == 204
    assert client.get(url).status_code == 410
    assert client.get(plan_url(plan, "administrations")).json()["items"] == []
    assert client.get(plan_url(plan, "administrations", "nope")).status_code == 404


def test_every_change_is_in_the_change_log_with_its_actor(client: Client, plan: dict) -> None:
    actor = {"X-Actor": "dr.rivera"}
    response = client.post(
        plan_url(plan, "administrations"),
        json={"instrument": "phq-9", "administered_on": on(1), "total": 12},
        headers=actor,
    )
    record = response.json()
    assert record["created_by"] == "dr.rivera"
    url = plan_url(plan, "administrations", record["id"])
    client.patch(url, json={"total": 9}, headers=actor)
    client.delete(url, headers=actor)
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    mine = [
        (c["action"], c["fields"], c["actor"]) for c in changes if c["entity_id"] == record["id"]
    ]
    assert mine == [
        ("create", [], "dr.rivera"),
        ("update", ["total"], "dr.rivera"),
        ("delete", [], "dr.rivera"),
    ]
    assert all(c["entity"] == "administration" for c in changes if c["entity_id"] == record["id"])


def test_a_closed_plan_keeps_its_scores(client: Client, plan: dict) -> None:
    record = recorded(client, plan, total=3)
    client.patch(plan_url(plan), json={"status": "revoked"})
    response = client.patch(plan_url(plan, "administrations", record["id"]), json={"total": 4})
    assert response.status_code == 422
    assert administer(client, plan, total=4).status_code == 422


# --- the instruments ------------------------------------------------------------------------


def test_the_instruments_are_declared_for_building_forms(client: Client) -> None:
    listed = client.get("/api/v1/instruments")
    assert listed.status_code == 200
    assert [i["key"] for i in listed.json()["items"]] == ["phq-9", "gad-7"]
    phq9 = client.get("/api/v1/instruments/phq-9").json()
    assert phq9 == listed.json()["items"][0]
    assert (phq9["panel_code"], phq9["total_code"], phq9["max_score"]) == ("44249-1", "44261-6", 27)
    assert [i["link_id"] for i in phq9["items"]] == [
        *(f"phq-9-{n}" for n in range(1, 10)),
        "phq-9-difficulty",
    ]
    first = phq9["items"][0]
    assert (first["code"], first["scored"]) == ("44250-9", True)
    assert first["answers"][3] == {"code": "LA6571-9", "display": "Nearly every day", "score": 3}
    assert phq9["items"][-1]["scored"] is False
    assert [b["code"] for b in phq9["bands"]] == [
        "none",
        "mild",
        "moderate",
        "moderately-severe",
        "severe",
    ]
    assert (phq9["minimal_important_change"], phq9["remission_below"]) == (5, 5)
    assert (phq9["response_fraction"], phq9["safety_item"]) == (0.5, "phq-9-9")
    gad7 = client.get("/api/v1/instruments/gad-7").json()
    assert (gad7["safety_item"], gad7["minimal_important_change"]) == (None, 4)
    missing = client.get("/api/v1/instruments/bdi-ii")
    assert missing.status_code == 404
    assert "phq-9" in missing.json()["detail"]


def test_any_authenticated_client_reads_the_instruments_and_no_one_else(
    live: Any, database: Database, anonymous: Client
) -> None:
    from conftest import token_for

    narrow = Client(live.url, token_for(live, database, ["patient/Goal.r"], patient="Patient/1"))
    assert narrow.get("/api/v1/instruments/phq-9").status_code == 200
    assert anonymous.get("/api/v1/instruments").status_code == 401


def test_administrations_need_observation_scopes(live: Any, database: Database, plan: dict) -> None:
    from conftest import token_for

    readers = Client(live.url, token_for(live, database, ["system/Observation.rs"]))
    assert readers.get(plan_url(plan, "administrations")).status_code == 200
    refused = readers.post(
        plan_url(plan, "administrations"),
        json={"instrument": "phq-9", "administered_on": on(1), "total": 3},
    )
    assert refused.status_code == 403
    assert "Observation.c" in refused.json()["detail"]
    plans_only = Client(live.url, token_for(live, database, ["system/CarePlan.cruds"]))
    assert plans_only.get(plan_url(plan, "administrations")).status_code == 403


# --- the session's PHQ-9 total ----------------------------------------------------------------


def session_scores(client: Client, plan: dict, number: int) -> tuple[int | None, list[tuple]]:
    session = client.get(plan_url(plan, "sessions", number)).json()
    return session["phq9_total"], [
        (a["instrument"], a["source"], a["total"]) for a in session["administrations"]
    ]


def test_a_session_phq9_total_records_a_total_only_administration(
    client: Client, plan: dict
) -> None:
    attend(client, plan, 1, phq9_total=17)
    assert session_scores(client, plan, 1) == (17, [("phq-9", "total-only", 17)])
    [record] = client.get(plan_url(plan, "administrations")).json()["items"]
    assert (record["session_number"], record["administered_on"]) == (1, on(1))
    url = plan_url(plan, "sessions", 1)
    assert client.patch(url, json={"phq9_total": 12}).json()["phq9_total"] == 12
    assert session_scores(client, plan, 1) == (12, [("phq-9", "total-only", 12)])
    again = client.get(plan_url(plan, "administrations", record["id"])).json()
    assert (again["total"], again["version"]) == (12, 2)
    assert client.patch(url, json={"phq9_total": None}).json()["phq9_total"] is None
    assert session_scores(client, plan, 1) == (None, [])
    assert client.get(plan_url(plan, "administrations", record["id"])).status_code == 410


def test_the_session_write_and_its_score_are_one_change(client: Client, plan: dict) -> None:
    attend(client, plan, 1, phq9_total=17)
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    last = [c for c in changes if c["plan_version"] == changes[-1]["plan_version"]]
    assert {(c["entity"], c["action"]) for c in last} >= {
        ("session", "create"),
        ("administration", "create"),
    }
    session = client.get(plan_url(plan, "sessions", 1)).json()
    assert session["version"] == 1  # written once, with its total


def test_a_session_answered_item_by_item_refuses_another_total(
    client: Client, database: Database, plan: dict
) -> None:
    attend(client, plan, 1)
    record = recorded(client, plan, session_number=1, administered_on=None, answers=answers(3, 2))
    url = plan_url(plan, "sessions", 1)
    before = state(client, database, plan)
    for total in (4, None):
        response = client.patch(url, json={"phq9_total": total})
        assert response.status_code == 422, response.text
        assert problem_fields(response) == ["phq9_total"]
        assert record["id"] in response.json()["detail"]
    no_show = client.patch(url, json={"status": "no-show"})
    assert no_show.status_code == 422
    assert "status" in problem_fields(no_show)
    assert client.delete(url).status_code == 409
    assert state(client, database, plan) == before
    # The same total is no change at all (a FHIR client sends the session back as it read it).
    same = client.patch(url, json={"phq9_total": 5, "note": "ok"})
    assert same.status_code == 200, same.text
    assert client.get(plan_url(plan, "administrations", record["id"])).json()["version"] == 1


def test_a_no_show_or_deleted_session_loses_its_total_only_score(
    client: Client, plan: dict
) -> None:
    attend(client, plan, 1, phq9_total=9)
    attend(client, plan, 2, phq9_total=8)
    no_show = client.patch(plan_url(plan, "sessions", 1), json={"status": "no-show"})
    assert no_show.status_code == 200, no_show.text
    assert session_scores(client, plan, 1) == (None, [])
    assert client.delete(plan_url(plan, "sessions", 2)).status_code == 204
    assert client.get(plan_url(plan, "administrations")).json()["items"] == []
    # The number is free again, with no score left behind.
    attend(client, plan, 2)
    assert session_scores(client, plan, 2) == (None, [])


def test_a_session_moved_to_another_date_moves_its_scores(client: Client, plan: dict) -> None:
    attend(client, plan, 2, phq9_total=14)
    recorded(client, plan, instrument="gad-7", session_number=2, administered_on=None, total=7)
    moved = client.patch(plan_url(plan, "sessions", 2), json={"date": "2026-01-14"})
    assert moved.status_code == 200, moved.text
    listed = client.get(plan_url(plan, "administrations")).json()["items"]
    assert {a["administered_on"] for a in listed} == {"2026-01-14"}


def test_fhir_phase_writes_keep_recording_session_totals(client: Client, plan: dict) -> None:
    import json

    attend(client, plan, 1, phq9_total=16)
    headers = {"Content-Type": "application/fhir+json"}
    phase_id = plan["phases"][0]["id"]
    phase = client.get(f"/fhir/CarePlan/{phase_id}").json()
    put = client.request(
        "PUT", f"/fhir/CarePlan/{phase_id}", data=json.dumps(phase), headers=headers
    )
    assert put.status_code == 200, put.text
    assert session_scores(client, plan, 1) == (16, [("phq-9", "total-only", 16)])


# --- goals follow the scores ------------------------------------------------------------------


def symptom_goal(client: Client, plan: dict) -> dict[str, Any]:
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    return next(g for g in goals if g["kind"] == "symptom")


def test_a_clinician_status_stands_until_the_next_score_changes(client: Client, plan: dict) -> None:
    goal = symptom_goal(client, plan)
    assert (goal["achievement_status"], goal["achievement_source"]) == ("in-progress", "rules")
    first = recorded(client, plan, administered_on=on(1), total=20)
    recorded(client, plan, administered_on=on(2), total=14)
    assert symptom_goal(client, plan)["achievement_status"] == "improving"
    url = plan_url(plan, "goals", goal["id"])
    set_by_hand = client.patch(url, json={"achievement_status": "no-progress"})
    assert set_by_hand.json()["achievement_source"] == "clinician"
    # Unrelated changes leave the clinician's status alone.
    recorded(client, plan, instrument="gad-7", administered_on=on(2), total=9)
    assert symptom_goal(client, plan)["achievement_status"] == "no-progress"
    for change in (
        lambda: recorded(client, plan, administered_on=on(3), total=4),
        lambda: client.patch(plan_url(plan, "administrations", first["id"]), json={"total": 22}),
        lambda: client.delete(plan_url(plan, "administrations", first["id"])),
    ):
        client.patch(url, json={"achievement_status": "no-progress"})
        assert symptom_goal(client, plan)["achievement_source"] == "clinician"
        change()
        goal = symptom_goal(client, plan)
        assert goal["achievement_source"] == "rules"
        assert goal["achievement_status"] != "no-progress"
    # 14 then 4: the target (below 5) is met by the latest.
    assert symptom_goal(client, plan)["achievement_status"] == "achieved"


def test_a_token_bound_to_another_patient_finds_no_scores_here(
    live: Any, database: Database, plan: dict
) -> None:
    record = recorded(client_of(live, database, plan["patient"]), plan, total=7)
    other = client_of(live, database, "Patient/someone-else")
    for path in (
        plan_url(plan, "administrations"),
        plan_url(plan, "administrations", record["id"]),
        plan_url(plan, "safety-signals"),
    ):
        response = other.get(path)
        assert response.status_code == 404, (path, response.text)
    refused = other.post(
        plan_url(plan, "administrations"),
        json={"instrument": "phq-9", "administered_on": on(1), "total": 3},
    )
    assert refused.status_code == 404


def client_of(live: Any, database: Database, patient: str) -> Client:
    from conftest import token_for

    scopes = ["patient/Observation.cruds", "patient/Flag.rs"]
    return Client(live.url, token_for(live, database, scopes, patient=patient))


# --- what a score costs -------------------------------------------------------------------


def _statements_to_record(database: Database, plan: dict, total: int, day: int) -> int:
    """The statements recording one PHQ-9 total in the plan runs (through the service)."""
    counted: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counted.append(statement)

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        administrations.record_administration(
            database,
            plan["id"],
            {"instrument": "phq-9", "administered_on": date.fromisoformat(on(day)), "total": total},
            "dr.rivera",
        )
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    return len(counted)


def test_a_score_costs_as_many_statements_after_forty_scores_as_after_four(
    client: Client, database: Database
) -> None:
    few, many = client.create_plan(), client.create_plan(patient="Patient/456")
    for plan, course in ((few, 4), (many, 40)):
        for n in range(course):
            administrations.record_administration(
                database,
                plan["id"],
                {
                    "instrument": "phq-9",
                    "administered_on": date.fromisoformat(on(1 + n % 10)),
                    "total": 20,
                },
                "dr.rivera",
            )
    # The same score and what it does to the symptom goal in both: first nothing (20 again,
    # no change), then a remission that achieves it.
    unchanged = [_statements_to_record(database, plan, 20, 11) for plan in (few, many)]
    achieved = [_statements_to_record(database, plan, 3, 12) for plan in (few, many)]
    # One of them finds the subscriptions to the topics the score may raise (the outbox).
    assert unchanged[0] == unchanged[1] <= 19
    assert achieved[0] == achieved[1] <= 21


def test_a_score_republishes_its_goals_but_not_the_plan_they_belong_to(
    client: Client, plan: dict
) -> None:
    goals = client.get(plan_url(plan, "goals")).json()["items"]
    goal = next(g for g in goals if g["kind"] == "symptom")
    recorded(client, plan, total=20)
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()["meta"]["versionId"]
    before = client.get(f"/fhir/Goal/{goal['id']}").json()

    latest = recorded(client, plan, administered_on=on(2), total=3)

    after = client.get(f"/fhir/Goal/{goal['id']}").json()
    assert after["achievementStatus"]["coding"][0]["code"] == "achieved"
    assert after["outcomeReference"] == [{"reference": f"Observation/{latest['id']}"}]
    assert int(after["meta"]["versionId"]) == int(before["meta"]["versionId"]) + 1
    assert client.get(f"/fhir/CarePlan/{plan['id']}").json()["meta"]["versionId"] == episode
