"""Safety signals through HTTP: raised by PHQ-9 item 9 above 0, shown on the plan, closed
only by a clinician's acknowledgement, every change logged and audited."""

from __future__ import annotations

from typing import Any

from conftest import Client, count_rows, plan_url, problem_fields

from service.db import Database

AUDITOR = {"X-Actor": "auditor"}


def phq9(item9: int, rest: int = 1) -> dict[str, int]:
    scores = {f"phq-9-{n}": rest for n in range(1, 9)}
    return {**scores, "phq-9-9": item9}


def administer(client: Client, plan: dict, item9: int, **fields: Any) -> dict[str, Any]:
    body = {"instrument": "phq-9", "administered_on": "2026-01-12", "answers": phq9(item9)}
    response = client.post(plan_url(plan, "administrations"), json={**body, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def signals(client: Client, plan: dict, **params: str) -> list[dict[str, Any]]:
    response = client.get(plan_url(plan, "safety-signals"), params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_item_9_above_0_raises_an_open_signal_the_plan_shows(client: Client, plan: dict) -> None:
    assert client.get(plan_url(plan)).json()["open_safety_signals"] == []
    administer(client, plan, 0)
    assert signals(client, plan) == []
    record = administer(client, plan, 2)
    [signal] = signals(client, plan)
    assert (signal["administration_id"], signal["instrument"], signal["item"]) == (
        record["id"],
        "phq-9",
        "phq-9-9",
    )
    assert (signal["score"], signal["raised_on"], signal["status"]) == (2, "2026-01-12", "open")
    assert signal["acknowledged_by"] is None
    shown = client.get(plan_url(plan)).json()["open_safety_signals"]
    assert shown == [
        {
            "id": signal["id"],
            "instrument": "phq-9",
            "item": "phq-9-9",
            "score": 2,
            "raised_on": "2026-01-12",
            "administration_id": record["id"],
        }
    ]
    listed = client.get("/api/v1/care-plans", params={"patient": plan["patient"]}).json()
    assert listed["items"][0]["open_safety_signals"] == shown
    one = client.get(plan_url(plan, "safety-signals", signal["id"]))
    assert one.json() == signal and one.headers["ETag"] == '"1"'


def test_a_total_only_score_raises_no_signal(client: Client, plan: dict) -> None:
    client.post(
        plan_url(plan, "administrations"),
        json={"instrument": "phq-9", "administered_on": "2026-01-12", "total": 27},
    )
    assert signals(client, plan) == []


def test_acknowledging_closes_the_signal_naming_who_when_and_what(
    client: Client, database: Database, plan: dict
) -> None:
    administer(client, plan, 1)
    [signal] = signals(client, plan)
    url = plan_url(plan, "safety-signals", signal["id"], "acknowledge")
    stale = client.post(url, json={"action_taken": "x"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    action = "Risk assessed: passive thoughts, no plan; safety plan reviewed."
    response = client.post(
        url, json={"action_taken": action}, headers={"If-Match": '"1"', "X-Actor": "dr.rivera"}
    )
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["status"], done["acknowledged_by"], done["action_taken"]) == (
        "acknowledged",
        "dr.rivera",
        action,
    )
    assert done["acknowledged_at"] is not None and done["version"] == 2
    assert response.headers["ETag"] == '"2"'
    assert client.get(plan_url(plan)).json()["open_safety_signals"] == []
    assert signals(client, plan, status="open") == []
    assert [s["id"] for s in signals(client, plan, status="acknowledged")] == [signal["id"]]
    # Once only.
    rows = count_rows(database, "plan_changes")
    again = client.post(url, json={"action_taken": "again"})
    assert again.status_code == 422
    assert problem_fields(again) == ["status"]
    assert count_rows(database, "plan_changes") == rows
    changes = client.get(plan_url(plan, "changes"), params={"page_size": 100}).json()["items"]
    logged = [
        (c["action"], c["fields"], c["actor"]) for c in changes if c["entity_id"] == signal["id"]
    ]
    assert logged == [
        ("create", [], client.client_id),
        (
            "update",
            ["acknowledged_at", "acknowledged_by", "action_taken", "status"],
            "dr.rivera",
        ),
    ]


def test_an_acknowledgement_says_what_was_done(client: Client, plan: dict) -> None:
    administer(client, plan, 3)
    [signal] = signals(client, plan)
    url = plan_url(plan, "safety-signals", signal["id"], "acknowledge")
    for body, field in (({}, "action_taken"), ({"action_taken": ""}, "action_taken")):
        response = client.post(url, json=body)
        assert response.status_code == 422, response.text
        assert field in problem_fields(response)
    assert signals(client, plan)[0]["status"] == "open"


def test_only_an_acknowledgement_closes_a_signal(client: Client, plan: dict) -> None:
    record = administer(client, plan, 2)
    url = plan_url(plan, "administrations", record["id"])
    assert client.patch(url, json={"answers": phq9(0)}).status_code == 200
    assert client.delete(url).status_code == 204
    assert [s["status"] for s in signals(client, plan)] == ["open"]


def test_a_higher_answer_raises_a_new_signal_once_the_first_is_acknowledged(
    client: Client, plan: dict
) -> None:
    record = administer(client, plan, 1)
    url = plan_url(plan, "administrations", record["id"])
    client.patch(url, json={"answers": phq9(2)})
    assert len(signals(client, plan)) == 1  # still open: covered
    [signal] = signals(client, plan)
    client.post(
        plan_url(plan, "safety-signals", signal["id"], "acknowledge"),
        json={"action_taken": "Called the patient the same day."},
    )
    client.patch(url, json={"answers": phq9(3)})
    assert [(s["status"], s["score"]) for s in signals(client, plan)] == [
        ("acknowledged", 1),
        ("open", 3),
    ]


def test_unknown_signals_and_bad_filters(client: Client, plan: dict) -> None:
    assert client.get(plan_url(plan, "safety-signals", "nope")).status_code == 404
    bad = client.get(plan_url(plan, "safety-signals"), params={"status": "closed"})
    assert bad.status_code == 422


def test_reads_and_acknowledgements_are_audited_for_the_patient(client: Client, plan: dict) -> None:
    administer(client, plan, 1)
    [signal] = signals(client, plan)
    client.post(
        plan_url(plan, "safety-signals", signal["id"], "acknowledge"),
        json={"action_taken": "Risk assessed."},
        headers={"X-Request-ID": "ack-1"},
    )
    client.get(plan_url(plan, "safety-signals", signal["id"]), headers={"X-Request-ID": "read-1"})
    trail = client.get(
        "/fhir/AuditEvent",
        params={"patient": plan["patient"], "_count": "1000"},
        headers=AUDITOR,
    ).json()
    by_request = {}
    for entry in trail["entry"]:
        event = entry["resource"]
        for entity in event.get("entity", []):
            if entity.get("type", {}).get("code") == "XrequestId":
                by_request[entity["what"]["identifier"]["value"]] = event
    assert by_request["ack-1"]["action"] == "U"  # the signal changes
    assert by_request["read-1"]["action"] == "R"


def test_signals_need_flag_scopes(live: Any, database: Database, plan: dict) -> None:
    from conftest import token_for

    administer_client = Client(live.url, token_for(live, database, ["system/Observation.c"]))
    response = administer_client.post(
        plan_url(plan, "administrations"),
        json={"instrument": "phq-9", "administered_on": "2026-01-12", "answers": phq9(1)},
    )
    assert response.status_code == 201, response.text
    readers = Client(live.url, token_for(live, database, ["system/Flag.rs"]))
    [signal] = readers.get(plan_url(plan, "safety-signals")).json()["items"]
    refused = readers.post(
        plan_url(plan, "safety-signals", signal["id"], "acknowledge"),
        json={"action_taken": "x"},
    )
    assert refused.status_code == 403
    assert "Flag.u" in refused.json()["detail"]
