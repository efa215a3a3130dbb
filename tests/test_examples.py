"""The example scripts, run as a clinic administrator runs them, against the live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Client, plan_url

PLANS = "/api/v1/care-plans"
SYSTEM = "urn:oid:1.2.3.4.5"


TOKEN: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _token(admin_token: str) -> None:
    """The scripts read their access token from IPT_TOKEN, as an administrator's would."""
    TOKEN["value"] = admin_token


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        env={**os.environ, "IPT_TOKEN": TOKEN["value"]},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plans_with(client: Client, **query: Any) -> list[dict[str, Any]]:
    response = client.get(PLANS, params={**query, "page_size": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


CSV = """\
patient,problem_areas,planned_sessions,start_date,variant,therapist,identifier
Patient/501,grief,12,2026-01-05,,Practitioner/42,IPT-0001
Patient/502, role-dispute ; role-transition ,,2026-01-12,brief,,IPT-0002
Patient/503,sadness,12,2026-01-19,,,
"""


def test_csv_import_creates_plans_and_reports_the_invalid_row(
    client: Client, tmp_path: Path
) -> None:
    csv_file = tmp_path / "plans.csv"
    csv_file.write_text(CSV, encoding="utf-8")
    args = ("--base-url", client.base_url, "--identifier-system", SYSTEM)

    first = run("create_plans_from_csv.py", str(csv_file), *args, "--actor", "csv import")

    assert first.returncode == 1, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 3, first.stdout
    assert lines[0].startswith("created ")
    assert lines[1].startswith("created ")
    assert lines[2].startswith("error line 4: ")
    assert "problem_areas.0" in lines[2]
    grief_id, dispute_id = lines[0].split()[1], lines[1].split()[1]

    assert {p["id"] for p in plans_with(client)} == {grief_id, dispute_id}
    grief = client.get(f"{PLANS}/{grief_id}").json()
    assert grief["patient"] == "Patient/501"
    assert grief["problem_areas"] == ["grief"]
    assert grief["planned_sessions"] == 12
    assert grief["start_date"] == "2026-01-05"
    assert grief["therapist"] == "Practitioner/42"
    assert grief["identifiers"] == [{"system": SYSTEM, "value": "IPT-0001"}]
    assert grief["created_by"] == "csv import"
    dispute = client.get(f"{PLANS}/{dispute_id}").json()
    assert dispute["problem_areas"] == ["role-dispute", "role-transition"]
    assert dispute["variant"] == "brief"
    assert dispute["planned_sessions"] == 8  # the brief variant's default
    assert plans_with(client, identifier=f"{SYSTEM}|IPT-0002")[0]["id"] == dispute_id

    again = run("create_plans_from_csv.py", str(csv_file), *args)

    assert again.returncode == 1, again.stderr
    assert again.stdout.splitlines()[:2] == [f"exists {grief_id}", f"exists {dispute_id}"]
    assert again.stdout.splitlines()[2].startswith("error line 4: ")
    assert len(plans_with(client)) == 2


def test_csv_import_exits_0_when_every_row_is_created(client: Client, tmp_path: Path) -> None:
    csv_file = tmp_path / "plans.csv"
    csv_file.write_text(
        "patient,start_date,problem_areas,identifier\nPatient/9,2026-02-02,grief,A-1\n",
        encoding="utf-8",
    )
    args = (str(csv_file), "--base-url", client.base_url)

    result = run("create_plans_from_csv.py", *args)

    assert result.returncode == 0, result.stdout + result.stderr
    (plan,) = plans_with(client, identifier="urn:ipt-careplans:example-clinic|A-1")
    assert result.stdout == f"created {plan['id']}\n"
    assert plan["created_by"] == client.client_id
    assert run("create_plans_from_csv.py", *args).stdout == f"exists {plan['id']}\n"


def test_csv_without_the_required_columns_is_refused(client: Client, tmp_path: Path) -> None:
    csv_file = tmp_path / "plans.csv"
    csv_file.write_text("patient,start_date\nPatient/9,2026-02-02\n", encoding="utf-8")

    result = run("create_plans_from_csv.py", str(csv_file), "--base-url", client.base_url)

    assert result.returncode == 2
    assert "problem_areas" in result.stderr
    assert plans_with(client) == []


def test_export_writes_the_patients_plans_with_their_records(
    client: Client, tmp_path: Path
) -> None:
    grief = client.create_plan(patient="Patient/700")
    dispute = client.create_plan(
        patient="Patient/700", problem_areas=["role-dispute", "role-transition"]
    )
    other = client.create_plan(patient="Patient/701")
    for plan, kind in ((grief, "reconnect"), (other, "other")):
        session = {"number": 1, "date": "2026-01-05", "status": "attended"}
        assert client.post(plan_url(plan, "sessions"), json=session).status_code == 201
        homework = {"kind": kind, "description": f"Homework of {plan['patient']}"}
        assert client.post(plan_url(plan, "homework"), json=homework).status_code == 201
    goal = {"kind": "problem-area", "problem_area": "role-transition", "description": "Move on."}
    assert client.post(plan_url(dispute, "goals"), json=goal).status_code == 201
    output = tmp_path / "export.json"

    # Pages of one item, so that every list is read by following links.next.
    result = run(
        "export_patient_plans.py",
        "Patient/700",
        "--base-url",
        client.base_url,
        "--output",
        str(output),
        "--page-size",
        "1",
    )

    assert result.returncode == 0, result.stderr
    document = json.loads(output.read_text(encoding="utf-8"))
    assert document["patient"] == "Patient/700"
    assert document["exported_at"].endswith("+00:00")
    plans = document["care_plans"]
    assert [p["id"] for p in plans] == [grief["id"], dispute["id"]]
    for plan in plans:
        assert plan["patient"] == "Patient/700"
        for part in ("goals", "homework", "sessions"):
            expected = client.get(plan_url(plan, part), params={"page_size": 100}).json()
            assert plan[part] == expected["items"], part
            assert all(item["plan_id"] == plan["id"] for item in plan[part])
    exported_grief, exported_dispute = plans
    assert exported_grief["problem_areas"] == ["grief"]
    assert len(exported_grief["goals"]) == 3  # two grief goals and the PHQ-9 goal
    assert [(s["number"], s["status"]) for s in exported_grief["sessions"]] == [(1, "attended")]
    assert [h["description"] for h in exported_grief["homework"]] == ["Homework of Patient/700"]
    assert exported_dispute["goals"][-1]["description"] == "Move on."
    assert exported_dispute["homework"] == []
    assert exported_dispute["sessions"] == []
    assert other["id"] not in output.read_text(encoding="utf-8")
    assert "Patient/701" not in output.read_text(encoding="utf-8")


def test_export_to_stdout_and_of_a_patient_without_plans(client: Client) -> None:
    client.create_plan(patient="Patient/701")

    result = run("export_patient_plans.py", "Patient/700", "--base-url", client.base_url)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["patient"] == "Patient/700"
    assert document["care_plans"] == []


def test_export_exits_1_on_an_http_error(client: Client, tmp_path: Path) -> None:
    client.create_plan(patient="Patient/700")
    output = tmp_path / "export.json"

    result = run(
        "export_patient_plans.py",
        "Patient/700",
        "--base-url",
        client.base_url + "/wrong-prefix",
        "--output",
        str(output),
    )

    assert result.returncode == 1
    assert "HTTP 404" in result.stderr
    assert not output.exists()
