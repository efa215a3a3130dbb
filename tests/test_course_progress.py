"""A plan's progress (GET /api/v1/care-plans/{id}/progress): the course of its scores and
what the rules make of it, its goals, attendance, homework, safety signals and phases;
its ETag, its scopes and its audit record."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, timedelta
from typing import Any

import pytest
from conftest import Client, Server, plan_url, token_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from api.measurement_schemas import PlanProgressSchema
from service import administrations, audit_journal, course
from service.db import Database
from service.models import AuditRecord

START = date(2026, 1, 5)


def record(
    database: Database,
    plan: dict[str, Any],
    total: int | None = None,
    *,
    on: date | None = None,
    answers: dict[str, int] | None = None,
    instrument: str = "phq-9",
    session_number: int | None = None,
) -> None:
    data: dict[str, Any] = {"instrument": instrument, "administered_on": on or START}
    if answers is not None:
        data["answers"] = answers
    else:
        data["total"] = total
    if session_number is not None:
        data["session_number"] = session_number
    administrations.record_administration(database, plan["id"], data, "dr.rivera")


def phq9_answers(total: int, item9: int = 0) -> dict[str, int]:
    """Answers to the nine PHQ-9 items adding up to ``total``, item 9 answered ``item9``."""
    answers = {f"phq-9-{n}": 0 for n in range(1, 10)}
    answers["phq-9-9"] = item9
    left = total - item9
    for n in range(1, 9):
        answers[f"phq-9-{n}"] = min(3, left)
        left -= answers[f"phq-9-{n}"]
    assert left == 0
    return answers


def progress_of(client: Client, plan: dict[str, Any]) -> dict[str, Any]:
    response = client.get(plan_url(plan, "progress"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def phq9_of(body: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in body["instruments"] if i["instrument"] == "phq-9")


def symptom_goal(body: dict[str, Any]) -> dict[str, Any]:
    return next(g for g in body["goals"] if g["kind"] == "symptom")


# totals in order -> change, response, remission, achievement of the template's symptom
# goal (PHQ-9 total below 5)
COURSES = [
    ([20], 0, False, False, "in-progress"),
    ([20, 14], -6, False, False, "improving"),
    ([20, 10], -10, True, False, "improving"),
    ([20, 18], -2, False, False, "no-change"),
    ([12, 18], 6, False, False, "worsening"),
    ([20, 12, 4], -16, True, True, "achieved"),
    ([20, 3, 4], -16, True, True, "sustaining"),
    ([4], 0, False, True, "achieved"),
    ([0, 0], 0, False, True, "sustaining"),
    ([9, 4], -5, True, True, "achieved"),
    ([9, 5], -4, False, False, "no-change"),
]


@pytest.mark.parametrize(("totals", "change", "response", "remission", "achievement"), COURSES)
def test_a_known_course_gives_its_outcome_and_the_goal_its_achievement(
    client: Client,
    database: Database,
    totals: list[int],
    change: int,
    response: bool,
    remission: bool,
    achievement: str,
) -> None:
    plan = client.create_plan()
    for week, total in enumerate(totals):
        record(database, plan, total, on=START + timedelta(weeks=week))

    body = progress_of(client, plan)
    phq9 = phq9_of(body)

    assert [s["total"] for s in phq9["scores"]] == totals
    assert [s["change"] for s in phq9["scores"]] == [t - totals[0] for t in totals]
    assert (phq9["baseline"], phq9["latest"], phq9["change"]) == (totals[0], totals[-1], change)
    assert (phq9["response"], phq9["remission"]) == (response, remission)
    assert phq9["band_code"] == next(
        code
        for code, low, high in [
            ("none", 0, 4),
            ("mild", 5, 9),
            ("moderate", 10, 14),
            ("moderately-severe", 15, 19),
            ("severe", 20, 27),
        ]
        if low <= totals[-1] <= high
    )
    goal = symptom_goal(body)
    assert goal["achievement_status"] == achievement
    assert goal["achievement_source"] == "rules"
    assert goal["target"]["measure"] == "44261-6"
    assert (goal["target"]["comparator"], goal["target"]["value"]) == ("<", 5)
    gad7 = next(i for i in body["instruments"] if i["instrument"] == "gad-7")
    assert gad7["scores"] == [] and gad7["baseline"] is None and gad7["response"] is None


def test_scores_are_in_the_order_taken_with_bands_sources_and_safety_flags(
    client: Client, database: Database
) -> None:
    plan = client.create_plan()
    # Recorded out of order: the progress lists them by the day they were taken.
    record(database, plan, 8, on=START + timedelta(weeks=2))
    record(database, plan, answers=phq9_answers(19, item9=2), on=START)
    record(database, plan, 13, on=START + timedelta(weeks=1))
    record(database, plan, instrument="gad-7", total=11, on=START)

    body = progress_of(client, plan)
    scores = phq9_of(body)["scores"]

    assert [s["administered_on"] for s in scores] == [
        START.isoformat(),
        (START + timedelta(weeks=1)).isoformat(),
        (START + timedelta(weeks=2)).isoformat(),
    ]
    assert [(s["total"], s["band_code"], s["band_display"]) for s in scores] == [
        (19, "moderately-severe", "Moderately severe"),
        (13, "moderate", "Moderate"),
        (8, "mild", "Mild"),
    ]
    assert [s["source"] for s in scores] == ["items", "total-only", "total-only"]
    assert [s["flagged"] for s in scores] == [True, False, False]
    signals = body["open_safety_signals"]
    assert [(s["instrument"], s["item"], s["score"]) for s in signals] == [("phq-9", "phq-9-9", 2)]
    assert signals[0]["administration_id"] == scores[0]["id"]
    gad7 = next(i for i in body["instruments"] if i["instrument"] == "gad-7")
    assert (gad7["baseline"], gad7["band_code"], gad7["scores"][0]["flagged"]) == (
        11,
        "moderate",
        False,
    )


def test_a_clinicians_achievement_status_is_named_as_theirs_until_the_next_score(
    client: Client, database: Database
) -> None:
    plan = client.create_plan()
    record(database, plan, 20)
    goal = symptom_goal(progress_of(client, plan))
    changed = client.patch(
        plan_url(plan, "goals", goal["id"]), json={"achievement_status": "not-attainable"}
    )
    assert changed.status_code == 200, changed.text

    goal = symptom_goal(progress_of(client, plan))
    assert (goal["achievement_status"], goal["achievement_source"]) == (
        "not-attainable",
        "clinician",
    )
    area = next(g for g in progress_of(client, plan)["goals"] if g["kind"] == "problem-area")
    assert area["achievement_source"] in (None, "clinician")

    record(database, plan, 9, on=START + timedelta(weeks=1))
    goal = symptom_goal(progress_of(client, plan))
    assert (goal["achievement_status"], goal["achievement_source"]) == ("improving", "rules")


def _statements(database: Database, plan_id: str) -> int:
    counted = []

    def count(*_args: Any) -> None:
        counted.append(1)

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        course.plan_progress(database, plan_id)
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    return len(counted)


def test_forty_scores_are_read_with_as_few_statements_as_four(
    client: Client, database: Database
) -> None:
    few, many = client.create_plan(), client.create_plan(patient="Patient/456")
    for n in range(4):
        record(database, few, 20 - n, on=START + timedelta(days=n))
    for n in range(40):
        record(database, many, 27 - n % 28, on=START + timedelta(days=n))
        if n % 10 == 0:
            record(database, many, instrument="gad-7", total=n % 21, on=START + timedelta(days=n))

    body = progress_of(client, many)
    phq9 = phq9_of(body)
    assert len(phq9["scores"]) == 40
    assert [s["total"] for s in phq9["scores"]] == [27 - n % 28 for n in range(40)]
    assert (phq9["baseline"], phq9["latest"]) == (27, 27 - 39 % 28)
    assert len(next(i for i in body["instruments"] if i["instrument"] == "gad-7")["scores"]) == 4

    assert _statements(database, many["id"]) == _statements(database, few["id"]) <= 9


def test_attendance_counts_each_status_and_the_longest_run_of_no_shows(
    client: Client, database: Database
) -> None:
    plan = client.create_plan(planned_sessions=14)
    statuses = [
        "attended",
        "no-show",
        "no-show",
        "attended",
        "no-show",
        "cancelled",
        "no-show",
        "no-show",
        "attended",
        "scheduled",
    ]
    for number, status in enumerate(statuses, start=1):
        day = START + timedelta(weeks=number)
        body: dict[str, Any] = {"number": number, "status": status, "date": day.isoformat()}
        made = client.post(plan_url(plan, "sessions"), json=body)
        assert made.status_code == 201, made.text

    attendance = progress_of(client, plan)["attendance"]

    assert attendance == {
        "attended": 3,
        "no_show": 5,
        "cancelled": 1,
        "scheduled": 1,
        "planned_sessions": 14,
        # 5, 7 and 8: the cancelled session 6 did not take place, so it breaks no run.
        "longest_no_show_run": 3,
    }


@pytest.mark.parametrize(
    ("statuses", "run"),
    [
        ([], 0),
        (["attended"] * 4, 0),
        (["no-show"], 1),
        (["no-show", "attended", "no-show", "no-show"], 2),
        (["no-show", "scheduled", "no-show", "cancelled", "no-show", "attended"], 3),
    ],
)
def test_the_longest_run_of_no_shows(statuses: list[str], run: int) -> None:
    held = list(enumerate(statuses, start=1))
    assert course.longest_no_show_run(list(reversed(held))) == run


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(["attended", "no-show", "cancelled", "scheduled"]), max_size=30))
def test_the_longest_run_is_the_longest_stretch_of_no_shows_between_attended_sessions(
    statuses: list[str],
) -> None:
    held = list(enumerate(statuses, start=1))
    # Sessions that did not take place are left out; what remains splits at each attendance.
    held_only = [s for s in statuses if s in ("attended", "no-show")]
    taken = "".join("A" if s == "attended" else "N" for s in held_only)
    expected = max((len(stretch) for stretch in taken.split("A")), default=0)
    assert course.longest_no_show_run(held) == expected


def test_homework_completion_counts_the_tasks_that_are_due(client: Client) -> None:
    plan = client.create_plan()
    past = (date.today() - timedelta(days=2)).isoformat()
    ahead = (date.today() + timedelta(days=20)).isoformat()
    tasks = [
        ("completed", past),
        ("completed", ahead),
        ("not-done", past),
        ("assigned", past),  # due and not done yet
        ("assigned", ahead),  # not due
        ("in-progress", None),  # no due date: not due
        ("cancelled", past),  # never due
    ]
    for status, due in tasks:
        body = {"kind": "reconnect", "phase": "initial", "description": "Call a friend"}
        body["assigned_on"] = START.isoformat()
        if due is not None:
            body["due_on"] = due
        made = client.post(plan_url(plan, "homework"), json=body)
        assert made.status_code == 201, made.text
        if status != "assigned":
            changed = client.patch(
                plan_url(plan, "homework", made.json()["id"]), json={"status": status}
            )
            assert changed.status_code == 200, changed.text

    homework = progress_of(client, plan)["homework"]

    assert homework == {
        "assigned": 2,
        "in_progress": 1,
        "completed": 2,
        "not_done": 1,
        "cancelled": 1,
        "due": 4,
        "completion_rate": 0.5,
    }


def test_phases_are_listed_with_their_sessions_and_dates(client: Client) -> None:
    plan = client.create_plan()
    held = client.post(
        plan_url(plan, "sessions"),
        json={"number": 4, "status": "attended", "date": "2026-02-02"},
    )
    assert held.status_code == 201, held.text

    phases = progress_of(client, plan)["phases"]

    assert [(p["code"], p["start_session"], p["end_session"]) for p in phases] == [
        ("initial", 1, 3),
        ("middle", 4, 9),
        ("termination", 10, 12),
    ]
    assert [p["status"] for p in phases] == ["completed", "active", "not-started"]
    assert phases[1]["start_date"] == "2026-02-02"


def progress_etag(body: dict[str, Any]) -> str:
    """The ETag a progress document is served with: its version and its day."""
    return f'"{body["version"]}-{body["as_of"].replace("-", "")}"'


def test_the_etag_is_the_plans_version_and_day_and_a_new_score_changes_it(
    client: Client, database: Database
) -> None:
    plan = client.create_plan()
    first = client.get(plan_url(plan, "progress"))
    assert first.json()["version"] == plan["version"]
    assert first.headers["ETag"] == progress_etag(first.json())

    again = client.get(plan_url(plan, "progress"), headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    weak_tag = "W/" + first.headers["ETag"]
    weak = client.get(plan_url(plan, "progress"), headers={"If-None-Match": weak_tag})
    assert weak.status_code == 304

    record(database, plan, 15)
    after = client.get(plan_url(plan, "progress"), headers={"If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200
    assert after.headers["ETag"] != first.headers["ETag"]
    assert phq9_of(after.json())["latest"] == 15


def test_a_document_of_another_day_is_not_answered_304(client: Client) -> None:
    """The document depends on the day (``as_of``, homework coming due): a client holding
    the plan's current version as computed on another day, or the version alone, is sent
    today's."""
    plan = client.create_plan()
    today = client.get(plan_url(plan, "progress"))
    version, as_of = today.json()["version"], date.fromisoformat(today.json()["as_of"])
    for held in (
        f'"{version}-{as_of - timedelta(days=1):%Y%m%d}"',
        f'"{version}"',
        f'W/"{version}"',
    ):
        answer = client.get(plan_url(plan, "progress"), headers={"If-None-Match": held})
        assert answer.status_code == 200, held
        assert answer.headers["ETag"] == today.headers["ETag"]
        assert answer.content == today.content


def test_a_missing_or_deleted_plan_answers_as_a_plan_read_does(client: Client) -> None:
    missing = client.get("/api/v1/care-plans/no-such-plan/progress")
    assert missing.status_code == 404
    assert "no-such-plan" in missing.json()["detail"]
    plan = client.create_plan()
    assert client.delete(plan_url(plan)).status_code == 204
    assert client.get(plan_url(plan, "progress")).status_code == 410


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (["system/CarePlan.rs", "system/Observation.rs"], True),
        (["user/CarePlan.r", "user/Observation.r"], True),
        (["system/*.rs"], True),
        (["system/CarePlan.rs", "system/Goal.rs"], False),
        (["system/Observation.rs"], False),
        (["system/CarePlan.s", "system/Observation.r"], False),
    ],
)
def test_progress_needs_read_of_care_plans_and_of_observations(
    live: Server, database: Database, client: Client, scopes: list[str], allowed: bool
) -> None:
    plan = client.create_plan()
    caller = Client(live.url, token_for(live, database, scopes))

    answer = caller.get(plan_url(plan, "progress"))

    if allowed:
        assert answer.status_code == 200, answer.text
    else:
        assert answer.status_code == 403, answer.text
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        missing = "Observation.r" if "Observation" not in " ".join(scopes) else "CarePlan.r"
        assert missing in answer.json()["detail"]
        assert "score" not in answer.text


def test_a_patient_bound_token_sees_only_its_patients_progress(
    live: Server, database: Database, client: Client
) -> None:
    own = client.create_plan(patient="Patient/own")
    other = client.create_plan(patient="Patient/other")
    scopes = ["patient/CarePlan.rs", "patient/Observation.rs"]
    caller = Client(live.url, token_for(live, database, scopes, patient="Patient/own"))

    assert caller.get(plan_url(own, "progress")).status_code == 200
    hidden = caller.get(plan_url(other, "progress"))
    assert hidden.status_code == 404
    assert hidden.json()["detail"] == f"care plan {other['id']!r} does not exist"


def test_a_progress_read_is_audited_naming_the_patient(client: Client, database: Database) -> None:
    plan = client.create_plan(patient="Patient/audited")
    assert client.get(plan_url(plan, "progress")).status_code == 200

    audit_journal.move(database)
    with database.reading() as session:
        rows = session.execute(
            select(AuditRecord.interaction, AuditRecord.patient, AuditRecord.outcome).where(
                AuditRecord.entity == f"CarePlan/{plan['id']}", AuditRecord.action == "R"
            )
        ).all()
    assert [tuple(r) for r in rows] == [("read", "Patient/audited", "0")]


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    phq9=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 3)), max_size=6),
    gad7=st.lists(st.integers(0, 21), max_size=3),
    target=st.sampled_from([None, 4, 4.5, 9.125]),
)
def test_the_document_is_the_one_its_schema_describes(
    client: Client,
    database: Database,
    phq9: list[tuple[int, int]],
    gad7: list[int],
    target: float | None,
) -> None:
    """Field by field, in order, each value written as the schema writes it."""
    plan = client.create_plan()
    for n, (rest, item9) in enumerate(phq9):
        record(
            database,
            plan,
            answers=phq9_answers(rest + item9, item9),
            on=START + timedelta(days=n),
        )
    for n, total in enumerate(gad7):
        record(database, plan, total, instrument="gad-7", on=START + timedelta(days=n))
    if target is not None:
        goal = symptom_goal(progress_of(client, plan))
        changed = client.patch(
            plan_url(plan, "goals", goal["id"]),
            json={"target": {"measure": "44261-6", "comparator": "<", "value": target}},
        )
        assert changed.status_code == 200, changed.text

    served = client.get(plan_url(plan, "progress"))

    assert served.status_code == 200, served.text
    described = PlanProgressSchema().dump(asdict(course.plan_progress(database, plan["id"])))
    assert json.dumps(served.json()) == json.dumps(described)
    assert served.headers["ETag"] == progress_etag(described)


def test_a_reader_holding_the_current_version_is_answered_from_the_plan_row(
    client: Client, database: Database
) -> None:
    plan = client.create_plan()
    for n in range(6):
        record(database, plan, 20 - n, on=START + timedelta(days=n))
    version = progress_of(client, plan)["version"]
    counted: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counted.append(statement)

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        held = course.progress_unless(database, plan["id"], lambda head: head.version == version)
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    assert isinstance(held, course.PlanHead)
    assert (held.plan_id, held.patient, held.version) == (plan["id"], "Patient/123", version)
    assert [s for s in counted if not s.startswith("BEGIN")] == [counted[-1]]
