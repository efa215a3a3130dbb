"""The clinic's outcomes report (GET /api/v1/reports/outcomes, ipt-careplans report outcomes):
its figures on a seeded clinic, the period, small-cell and complementary suppression, CSV
and JSON, its scope and its audit record."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from conftest import Client, Server, plan_url, run_cli, token_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from service import administrations, audit_journal, outcomes
from service.codes import ProblemArea, Variant, values
from service.db import Database
from service.models import AuditRecord

REPORT = "/api/v1/reports/outcomes"
START = date(2026, 1, 5)
# The day the change log stamps a closing with (UTC).
TODAY = datetime.now(UTC).date()


def week(n: int) -> date:
    return START + timedelta(weeks=n)


def seed_plan(
    client: Client,
    database: Database,
    patient: str,
    area: str,
    statuses: list[str],
    scores: dict[int, int] | None = None,
    close: str | None = None,
) -> dict[str, Any]:
    """A standard 8-session plan started on START: sessions 1.. with these statuses (one a
    week), PHQ-9 totals taken in the numbered sessions, then closed as ``close``."""
    plan = client.create_plan(patient=patient, problem_areas=[area], planned_sessions=8)
    for number, status in enumerate(statuses, start=1):
        body = {"number": number, "status": status, "date": week(number - 1).isoformat()}
        made = client.post(plan_url(plan, "sessions"), json=body)
        assert made.status_code == 201, made.text
    for number, total in (scores or {}).items():
        administrations.record_administration(
            database,
            plan["id"],
            {"instrument": "phq-9", "session_number": number, "total": total},
            "dr.rivera",
        )
    if close is not None:
        body: dict[str, Any] = {"status": close}
        if close == "completed":
            body["open_goals"] = "resolve"  # the goals close with what the course reached
        closed = client.patch(plan_url(plan), json=body)
        assert closed.status_code == 200, closed.text
    return plan


def seed_clinic(client: Client, database: Database) -> None:
    """Grief: 6 patients who attended all 8 sessions, PHQ-9 20 at the first and 4, 4, 4, 9,
    9 or 16 at the last, then completed today. Role dispute: 5 patients who attended 3 and
    missed the next 3 (dropped out on the sixth session's day). Role transition: 2 patients
    who attended 2 and were revoked today. Interpersonal deficits: 5 patients who have
    not had a session yet."""
    for n, final in enumerate([4, 4, 4, 9, 9, 16]):
        seed_plan(
            client,
            database,
            f"Patient/g{n}",
            "grief",
            ["attended"] * 8,
            {1: 20, 8: final},
            close="completed",
        )
    for n in range(5):
        seed_plan(
            client,
            database,
            f"Patient/d{n}",
            "role-dispute",
            ["attended"] * 3 + ["no-show"] * 3,
            {1: 18},
        )
    for n in range(2):
        seed_plan(
            client, database, f"Patient/t{n}", "role-transition", ["attended"] * 2, close="revoked"
        )
    for n in range(5):
        seed_plan(client, database, f"Patient/i{n}", "interpersonal-deficits", [])


def report(client: Client, start: date, end: date, **filters: str) -> dict[str, Any]:
    response = client.get(REPORT, params={"from": start, "to": end, **filters})
    assert response.status_code == 200, response.text
    return dict(response.json())


def values_of(figures: dict[str, Any]) -> dict[str, Any]:
    return {name: cell["value"] for name, cell in figures.items()}


def row(body: dict[str, Any], breakdown: str, key: str) -> dict[str, Any]:
    return next(r["figures"] for r in body[breakdown] if r[breakdown.removeprefix("by_")] == key)


SMALL = {"value": None, "suppressed": True, "reason": outcomes.FEWER_THAN}
COMPLEMENT = {"value": None, "suppressed": True, "reason": outcomes.COMPLEMENTARY}


def test_the_figures_of_a_seeded_clinic(client: Client, database: Database) -> None:
    seed_clinic(client, database)

    body = report(client, date(2026, 1, 1), TODAY)

    assert values_of(body["total"]) == {
        "plans_started": 18,
        "plans_closed": 8,
        "courses_ended": 13,  # 6 acute courses, 5 drop-outs by no-shows, 2 revoked
        "dropouts": 7,
        "dropout_rate": round(7 / 13, 4),
        "mean_sessions_attended": round((6 * 8 + 5 * 3 + 2 * 2) / 13, 2),
        "acute_courses_ended": 6,
        "measured": 6,
        "response_rate": round(5 / 6, 4),
        "remission_rate": 0.5,
        "mean_phq9_change": round((3 * -16 + 2 * -11 - 4) / 6, 2),
    }
    assert all(cell["suppressed"] is False for cell in body["total"].values())
    assert type(body["total"]["plans_started"]["value"]) is int  # a count, not 18.0
    grief = row(body, "by_problem_area", "grief")
    assert values_of(grief) == {**values_of(body["total"]), **{
        "plans_started": 6,
        "plans_closed": 6,
        "courses_ended": 6,
        "dropouts": 0,
        "dropout_rate": 0.0,
        "mean_sessions_attended": 8.0,
    }}  # fmt: skip
    dispute = row(body, "by_problem_area", "role-dispute")
    assert values_of(dispute)["dropouts"] == 5
    assert dispute["dropout_rate"] == {"value": 1.0, "suppressed": False}
    assert dispute["mean_sessions_attended"]["value"] == 3.0
    # No acute course of a role dispute ended: nothing to compute them from.
    assert dispute["response_rate"] == dispute["acute_courses_ended"] == SMALL
    transition = row(body, "by_problem_area", "role-transition")
    assert all(cell == SMALL for cell in transition.values())
    # Plans started: only role transition (2 patients) would be suppressed, and the total
    # (18) less the others would give it: the smallest other row (role dispute, 5) goes too.
    deficits = row(body, "by_problem_area", "interpersonal-deficits")
    assert deficits["plans_started"] == {"value": 5, "suppressed": False}
    assert dispute["plans_started"] == COMPLEMENT
    assert deficits["courses_ended"] == SMALL
    standard = row(body, "by_variant", "standard")
    assert standard == body["total"]
    for variant in ("brief", "adolescent", "group", "maintenance"):
        assert all(cell == SMALL for cell in row(body, "by_variant", variant).values())
    assert body["minimum_patients"] == 5
    assert (body["from"], body["to"]) == ("2026-01-01", TODAY.isoformat())


def test_the_period_decides_what_is_counted(client: Client, database: Database) -> None:
    seed_clinic(client, database)

    first_quarter = report(client, date(2026, 1, 1), date(2026, 3, 31))
    total = first_quarter["total"]
    assert total["plans_started"]["value"] == 18
    assert total["plans_closed"] == SMALL  # closed today, after the period
    # Grief's acute courses ended with session 8 (23 February), the disputes' drop-outs
    # with their third no-show (9 February); the revoked plans ended today.
    assert total["courses_ended"]["value"] == 11
    assert total["dropouts"]["value"] == 5
    assert total["acute_courses_ended"]["value"] == 6

    february = report(client, week(5), week(5))  # the day of the disputes' third no-show
    assert february["total"]["courses_ended"]["value"] == 5
    assert february["total"]["dropout_rate"]["value"] == 1.0
    assert february["total"]["plans_started"] == SMALL

    later = report(client, date(2026, 4, 1), TODAY - timedelta(days=1))
    assert all(cell == SMALL for cell in later["total"].values())

    grief_only = report(client, date(2026, 1, 1), TODAY, problem_area="grief")
    assert grief_only["problem_area"] == "grief"
    assert [r["problem_area"] for r in grief_only["by_problem_area"]] == ["grief"]
    assert grief_only["by_problem_area"][0]["figures"] == grief_only["total"]
    assert grief_only["total"]["plans_started"]["value"] == 6
    brief = report(client, date(2026, 1, 1), TODAY, variant="brief")
    assert [r["variant"] for r in brief["by_variant"]] == ["brief"]
    assert all(cell == SMALL for cell in brief["total"].values())


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "2026-03-01", "to": "2026-01-01"}, "to"),
        ({"from": "2026-01-01"}, "to"),
        ({"to": "2026-01-01"}, "from"),
        ({"from": "2026-1-1", "to": "2026-02-01"}, "from"),
        ({"from": "2026-01-01", "to": "2026-02-01", "problem_area": "grieff"}, "problem_area"),
        ({"from": "2026-01-01", "to": "2026-02-01", "variant": "long"}, "variant"),
        ({"from": "2026-01-01", "to": "2026-02-01", "patient": "Patient/1"}, "patient"),
        ({"from": "1990-01-01", "to": "2026-02-01"}, "to"),
    ],
)
def test_a_bad_period_or_filter_is_refused_naming_it(
    client: Client, query: dict[str, str], field: str
) -> None:
    response = client.get(REPORT, params=query)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]]


def test_the_command_line_gives_the_same_report_as_csv_and_json(
    client: Client, database: Database, live: Server
) -> None:
    seed_clinic(client, database)
    env = {"IPT_DATABASE_URL": live.settings.database_url, "IPT_AUTO_MIGRATE": "false"}
    period = ["--from", "2026-01-01", "--to", TODAY.isoformat()]

    as_json = run_cli("report", "outcomes", *period, "--format", "json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stderr.startswith("database: ")
    assert json.loads(as_json.stdout) == report(client, date(2026, 1, 1), TODAY)

    as_csv = run_cli("report", "outcomes", *period, env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    lines = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert list(lines[0]) == list(outcomes.CSV_COLUMNS)
    cells = {(r["breakdown"], r["group"], r["figure"]): r for r in lines}
    assert cells[("total", "all", "plans_started")]["value"] == "18"
    assert cells[("total", "all", "response_rate")]["value"] == str(round(5 / 6, 4))
    suppressed = cells[("problem_area", "role-transition", "plans_started")]
    assert (suppressed["value"], suppressed["suppressed"]) == ("", "true")
    assert suppressed["reason"] == outcomes.FEWER_THAN
    complement = cells[("problem_area", "role-dispute", "plans_started")]
    assert (complement["value"], complement["suppressed"]) == ("", "true")
    assert all(r["value"] == "" for r in lines if r["suppressed"] == "true")
    assert all(r["value"] != "" for r in lines if r["suppressed"] == "false")
    assert not any("Patient/" in line for line in as_csv.stdout.splitlines())

    refused = run_cli("report", "outcomes", "--from", "2026-02-01", "--to", "2026-01-01", env=env)
    assert refused.returncode == 1
    assert "to: 2026-01-01 is before from 2026-02-01" in refused.stderr


def test_a_read_only_report_never_creates_a_database(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    result = run_cli(
        "report", "outcomes", "--from", "2026-01-01", "--to", "2026-02-01",
        env={"IPT_DATABASE_URL": url},
    )  # fmt: skip
    assert result.returncode == 1
    assert "no database at" in result.stderr
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize(
    ("scopes", "patient", "status"),
    [
        (["system/MeasureReport.rs"], None, 200),
        (["user/MeasureReport.r"], None, 200),
        (["system/*.rs"], None, 200),
        (["system/CarePlan.rs", "system/Goal.rs", "system/Observation.rs"], None, 403),
        (["system/MeasureReport.s"], None, 403),
        (["patient/MeasureReport.rs"], "Patient/g1", 403),
        (["system/MeasureReport.rs"], "Patient/g1", 403),
    ],
)
def test_the_report_needs_a_measure_report_scope_and_no_patient_context(
    live: Server,
    database: Database,
    scopes: list[str],
    patient: str | None,
    status: int,
) -> None:
    caller = Client(live.url, token_for(live, database, scopes, patient=patient))

    answer = caller.get(REPORT, params={"from": "2026-01-01", "to": "2026-02-01"})

    assert answer.status_code == status, answer.text
    if status == 403:
        detail = answer.json()["detail"]
        assert "MeasureReport.r" in detail or "confined to one patient" in detail


def test_a_report_read_is_audited_naming_no_patient(client: Client, database: Database) -> None:
    seed_plan(client, database, "Patient/g1", "grief", ["attended"])
    assert client.get(REPORT, params={"from": "2026-01-01", "to": "2026-02-01"}).ok

    audit_journal.move(database)
    with database.reading() as session:
        rows = session.execute(
            select(
                AuditRecord.interaction, AuditRecord.patient, AuditRecord.query, AuditRecord.entity
            ).where(AuditRecord.status == 200, AuditRecord.action == "E")
        ).all()
    reads = [r for r in rows if r.query and "from=2026-01-01" in r.query]
    assert [(r.interaction, r.patient, r.entity) for r in reads] == [("search-type", None, None)]


# --- suppression, for any clinic --------------------------------------------------------------

PERIOD = (date(2026, 1, 1), date(2026, 6, 30))
days = st.one_of(st.none(), st.dates(date(2025, 11, 1), date(2026, 8, 31)))
plan_facts = st.builds(
    outcomes.PlanFacts,
    patient=st.sampled_from([f"Patient/{n}" for n in range(40)]),
    problem_area=st.sampled_from(values(ProblemArea)),
    variant=st.sampled_from(values(Variant)),
    started_on=days,
    closed_on=days,
    acute_end=days,
    dropout_on=days,
    attended=st.integers(0, 16),
    phq9=st.lists(st.integers(0, 27), max_size=4).map(tuple),
)


def _patients(report: outcomes.Report, row: outcomes.Row, plans: list[outcomes.PlanFacts]) -> Any:
    """The distinct patients of each population of a row, counted afresh from the plans."""
    held = outcomes.populations(plans, report.start, report.end)
    return {name: len({p.patient for p in held[name]}) for name in outcomes.POPULATIONS}


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(plan_facts, max_size=80), st.sampled_from([None, "grief"]))
def test_no_published_cell_rests_on_fewer_than_five_patients_and_none_can_be_recomputed(
    plans: list[outcomes.PlanFacts], area: str | None
) -> None:
    found = outcomes.summarise(plans, *PERIOD, problem_area=area)
    chosen = [p for p in plans if area is None or p.problem_area == area]
    breakdowns = [
        (found.by_problem_area, "problem_area"),
        (found.by_variant, "variant"),
    ]
    total_patients = _patients(found, found.total, chosen)
    for rows, attribute in breakdowns:
        for row in [found.total, *rows]:
            members = chosen if row.key is None else [
                p for p in chosen if getattr(p, attribute) == row.key
            ]  # fmt: skip
            patients = _patients(found, row, members)
            for name, cell in row.figures.items():
                population = outcomes.FIGURES[name][0]
                if not cell.suppressed:
                    assert patients[population] >= outcomes.MINIMUM_PATIENTS, (row.key, name)
                else:
                    assert cell.value is None and cell.reason
        for name in outcomes.FIGURES:
            if found.total.figures[name].suppressed:
                continue
            hidden = [r for r in rows if r.figures[name].suppressed]
            # One hidden row would be the total less the rows published.
            assert len(hidden) != 1, (attribute, name)
            if not hidden and name.startswith(("plans_", "courses_", "measured", "dropouts")):
                assert sum(r.figures[name].value or 0 for r in rows) == (
                    found.total.figures[name].value
                )
        assert total_patients == found.total.patients


def test_patients_are_counted_once_however_many_plans_they_have() -> None:
    start, end = PERIOD
    same = [
        outcomes.PlanFacts(
            patient=f"Patient/{n % 4}",
            problem_area="grief",
            variant="standard",
            started_on=start,
            closed_on=None,
            acute_end=None,
            dropout_on=None,
            attended=0,
        )
        for n in range(8)
    ]
    assert outcomes.summarise(same, start, end).total.figures["plans_started"] == (
        outcomes.Cell(None, True, outcomes.FEWER_THAN)
    )
    one_more = outcomes.PlanFacts("Patient/9", "grief", "standard", start, None, None, None, 0)
    another = [*same, one_more]
    assert outcomes.summarise(another, start, end).total.figures["plans_started"] == (
        outcomes.Cell(9)
    )
