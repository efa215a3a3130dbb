"""The example scripts, run as a clinic administrator runs them, against the live server.

Each script runs in a child Python started with ``-S``: without site-packages, so only the
standard library is there, as in the environment the README's start command creates
(``pip install .`` installs the service, not the test tools). The scripts take their own
tokens with a registered client's id and secret.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Client, Server, plan_url, registered_client

from service.db import Database

PLANS = "/api/v1/care-plans"
SYSTEM = "urn:ipt-careplans:example-clinic"
EXAMPLES = ROOT / "examples"
SCRIPT_SCOPES = ["system/CarePlan.cruds", "system/Goal.cruds"]

sys.path.insert(0, str(EXAMPLES))
from careplans_api import ApiError, CarePlansApi  # noqa: E402

CREDENTIALS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def credentials(database: Database) -> dict[str, str]:
    """A client registered as an administrator would, whose id and secret the scripts use."""
    client_id, secret = registered_client(database, "script", SCRIPT_SCOPES)
    CREDENTIALS.clear()
    CREDENTIALS.update({"IPT_CLIENT_ID": client_id, "IPT_CLIENT_SECRET": secret})
    return dict(CREDENTIALS)


def run(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The script in a Python without site-packages, with the client's credentials."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("IPT_") and name != "PYTHONPATH"
    }
    return subprocess.run(
        [sys.executable, "-S", str(EXAMPLES / script), *args],
        env={**environment, **(CREDENTIALS if env is None else env)},
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
    args = ("--base-url", client.base_url, "--identifier-system", "urn:oid:1.2.3.4.5")

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
    assert grief["identifiers"] == [{"system": "urn:oid:1.2.3.4.5", "value": "IPT-0001"}]
    assert grief["created_by"] == "csv import"
    dispute = client.get(f"{PLANS}/{dispute_id}").json()
    assert dispute["problem_areas"] == ["role-dispute", "role-transition"]
    assert dispute["variant"] == "brief"
    assert dispute["planned_sessions"] == 8  # the brief variant's default
    assert plans_with(client, identifier="urn:oid:1.2.3.4.5|IPT-0002")[0]["id"] == dispute_id

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
    (plan,) = plans_with(client, identifier=f"{SYSTEM}|A-1")
    assert result.stdout == f"created {plan['id']}\n"
    assert plan["created_by"] == CREDENTIALS["IPT_CLIENT_ID"]
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


def test_the_sample_csv_of_the_readme_creates_every_plan(client: Client) -> None:
    result = run("create_plans_from_csv.py", "examples/plans.csv", "--base-url", client.base_url)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    with (EXAMPLES / "plans.csv").open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [line.split()[0] for line in lines] == ["created"] * len(rows)
    created = {p["identifiers"][0]["value"]: p for p in plans_with(client)}
    assert set(created) == {row["identifier"] for row in rows}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "examples/create_plans_from_csv.py examples/plans.csv" in readme


def test_the_csv_export_has_one_row_per_plan_with_its_phq9_course(
    client: Client, tmp_path: Path
) -> None:
    grief = client.create_plan(patient="Patient/700")
    dispute = client.create_plan(
        patient="Patient/701", problem_areas=["role-dispute", "role-transition"]
    )
    sessions = [
        {"number": 1, "date": "2026-01-05", "status": "attended", "phq9_total": 18},
        {"number": 2, "date": "2026-01-12", "status": "no-show"},
        {"number": 3, "date": "2026-01-19", "status": "attended"},
        {"number": 4, "date": "2026-01-26", "status": "attended", "phq9_total": 11},
        {"number": 5, "status": "scheduled"},
    ]
    for session in sessions:
        assert client.post(plan_url(grief, "sessions"), json=session).status_code == 201
    output = tmp_path / "plans.csv"

    result = run(
        "export_patient_plans.py", "--format", "csv", "--output", str(output),
        "--base-url", client.base_url, "--page-size", "2",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "2 care plan(s) written to" in result.stderr
    assert output.read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 for spreadsheets
    with output.open(encoding="utf-8-sig", newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows == [
        {
            "id": grief["id"],
            "patient": "Patient/700",
            "status": "active",
            "problem_areas": "grief",
            "planned_sessions": "12",
            "sessions_attended": "3",
            "first_phq9": "18",
            "first_phq9_date": "2026-01-05",
            "last_phq9": "11",
            "last_phq9_date": "2026-01-26",
        },
        {
            "id": dispute["id"],
            "patient": "Patient/701",
            "status": "active",
            "problem_areas": "role-dispute;role-transition",
            "planned_sessions": "12",
            "sessions_attended": "0",
            "first_phq9": "",
            "first_phq9_date": "",
            "last_phq9": "",
            "last_phq9_date": "",
        },
    ]

    one = run(
        "export_patient_plans.py", "Patient/700", "--format", "csv", "--base-url", client.base_url
    )
    assert one.returncode == 0, one.stderr
    assert [row["id"] for row in csv.DictReader(one.stdout.splitlines())] == [grief["id"]]


def test_the_csv_export_keeps_formulas_from_running_in_a_spreadsheet() -> None:
    from export_patient_plans import spreadsheet_safe

    assert spreadsheet_safe('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert [spreadsheet_safe(v) for v in ("+1", "-1", "@a")] == ["'+1", "'-1", "'@a"]
    assert spreadsheet_safe("Patient/1") == "Patient/1"
    assert spreadsheet_safe(3) == 3


def test_a_script_takes_its_token_with_the_credentials_and_renews_it_before_it_expires(
    live: Server, credentials: dict[str, str]
) -> None:
    api = CarePlansApi(
        live.url,
        client_id=credentials["IPT_CLIENT_ID"],
        client_secret=credentials["IPT_CLIENT_SECRET"],
        scope="system/CarePlan.rs",
    )

    assert api.get_json(PLANS)["items"] == []

    assert api.tokens_taken == 1
    lifetime = live.settings.token_lifetime_seconds
    left = api.renew_at - time.monotonic()
    assert lifetime - 35 < left < lifetime - 25  # renewed half a minute before it expires
    first = api.token
    api.renew_at = time.monotonic()  # as it is once that time has come
    assert api.get_json(PLANS)["items"] == []
    assert api.tokens_taken == 2
    assert api.token != first


def test_a_script_renews_its_token_when_the_service_answers_401(
    live: Server, credentials: dict[str, str]
) -> None:
    api = CarePlansApi(
        live.url,
        client_id=credentials["IPT_CLIENT_ID"],
        client_secret=credentials["IPT_CLIENT_SECRET"],
        scope="system/CarePlan.rs",
    )
    api.token, api.renew_at = "no.longer.valid", float("inf")

    assert api.get_json(PLANS)["items"] == []

    assert api.tokens_taken == 1


def test_a_token_given_in_ipt_token_is_used_and_a_refused_one_is_named(
    client: Client, admin_token: str
) -> None:
    client.create_plan(patient="Patient/700")
    args = ("export_patient_plans.py", "Patient/700", "--base-url", client.base_url)

    given = run(*args, env={"IPT_TOKEN": admin_token})
    refused = run(*args, env={"IPT_TOKEN": "expired.token.value"})

    assert given.returncode == 0, given.stderr
    assert len(json.loads(given.stdout)["care_plans"]) == 1
    assert refused.returncode == 1
    assert "IPT_TOKEN was refused" in refused.stderr and "IPT_CLIENT_ID" in refused.stderr


def test_wrong_or_missing_credentials_are_named(client: Client, tmp_path: Path) -> None:
    csv_file = tmp_path / "plans.csv"
    csv_file.write_text("patient,start_date,problem_areas\nPatient/9,2026-02-02,grief\n")
    wrong = {**CREDENTIALS, "IPT_CLIENT_SECRET": "not-the-secret"}

    refused = run(
        "create_plans_from_csv.py", str(csv_file), "--base-url", client.base_url, env=wrong
    )
    missing = run("create_plans_from_csv.py", str(csv_file), "--base-url", client.base_url, env={})

    assert refused.returncode == 2
    assert "/auth/token" in refused.stderr and "HTTP 401" in refused.stderr
    assert missing.returncode != 0
    assert "IPT_CLIENT_ID and IPT_CLIENT_SECRET" in missing.stderr
    assert plans_with(client) == []


def test_the_scripts_need_only_the_standard_library() -> None:
    for script in sorted(EXAMPLES.glob("*.py")):
        result = subprocess.run(
            [sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(EXAMPLES)!r}); "
             f"import {script.stem}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_a_service_that_cannot_be_reached_is_named(credentials: dict[str, str]) -> None:
    api = CarePlansApi(
        "http://127.0.0.1:9",
        client_id=credentials["IPT_CLIENT_ID"],
        client_secret=credentials["IPT_CLIENT_SECRET"],
        timeout=5,
    )
    with pytest.raises(ApiError, match=r"127\.0\.0\.1:9/auth/token failed"):
        api.get_json(PLANS)
