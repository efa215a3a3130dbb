"""``ipt-careplans demo``: realistic demonstration plans, written as any write is."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Client, plan_url
from test_cli import cli

from service.codes import ProblemArea, values

pytestmark = pytest.mark.slow


def items(client: Client, path: str) -> list[dict[str, Any]]:
    response = client.get(path, params={"page_size": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_demo_loads_one_course_per_problem_area(client: Client, database_url: str) -> None:
    result = cli("demo", env={"IPT_DATABASE_URL": database_url})

    assert result.returncode == 0, result.stderr
    assert "database: " in result.stderr
    plans = items(client, "/api/v1/care-plans")
    assert [line.split()[1] for line in result.stdout.splitlines()] == [p["id"] for p in plans]
    assert sorted(p["problem_areas"][0] for p in plans) == sorted(values(ProblemArea))
    renegotiated = [p for p in plans if len(p["contract_history"]) > 1]
    assert len(renegotiated) == 1
    assert (
        renegotiated[0]["planned_sessions"]
        == renegotiated[0]["contract_history"][-1]["planned_sessions"]
    )
    for plan in plans:
        assert plan["status"] == "active" and plan["formulation"]
        sessions = items(client, plan_url(plan, "sessions"))
        scores = [s["phq9_total"] for s in sessions if s["status"] == "attended"]
        assert len(scores) >= 4 and all(score is not None for score in scores)
        assert scores[-1] < scores[0]  # a course that improves
        dates = [s["date"] for s in sessions]
        assert dates == sorted(dates)
        homework = items(client, plan_url(plan, "homework"))
        assert homework and any(h["patient_report"] for h in homework)
        assert all(h["status"] in ("assigned", "completed") for h in homework)
        phases = {p["code"]: p["status"] for p in items(client, plan_url(plan, "phases"))}
        assert phases["initial"] in ("active", "completed")
        # Published to the FHIR views as any write is.
        assert client.get(f"/fhir/CarePlan/{plan['id']}").status_code == 200
    changes = items(client, plan_url(plans[0], "changes"))
    assert {change["actor"] for change in changes} == {"ipt-careplans demo"}


def test_demo_is_refused_where_plans_exist_unless_forced(client: Client, database_url: str) -> None:
    existing = client.create_plan(patient="Patient/real-1")
    env = {"IPT_DATABASE_URL": database_url}

    refused = cli("demo", env=env)

    assert refused.returncode == 1
    assert "already holds 1 care plan(s)" in refused.stderr and "--force" in refused.stderr
    assert [p["id"] for p in items(client, "/api/v1/care-plans")] == [existing["id"]]

    forced = cli("demo", "--force", env=env)
    again = cli("demo", "--force", env=env)

    assert forced.returncode == 0, forced.stderr
    assert again.returncode == 0, again.stderr
    created = len(forced.stdout.splitlines())
    assert created == len(again.stdout.splitlines()) == 4
    assert len(items(client, "/api/v1/care-plans")) == 1 + 2 * created
