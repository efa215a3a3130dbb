"""Bulk data export ($export): kick-off, status, manifest, NDJSON downloads, cancel, expiry,
access, consistency as of the transaction time, and a job taken up after its process died.

Two servers share the test database: ``busy`` runs export jobs in the background, ``quiet``
runs none (its jobs wait until a process that runs them takes them up).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from conftest import Client, Server, plan_url, token_for
from sqlalchemy import select, update
from werkzeug.serving import make_server

from api.app import create_app
from api.cli import main
from api.config import Settings
from service import audit_journal, export_jobs
from service.db import Database
from service.export_jobs import DatabaseSink, Lease
from service.models import AuditRecord, ExportFile, ExportJob, utcnow

FILE_BYTES = 4096
RETENTION = 600
ALL = ["system/*.cruds"]


def _serve(database: Database, worker: bool) -> Iterator[Server]:
    settings = Settings(
        database_url=database.url.render_as_string(hide_password=False),
        auto_migrate=False,
        log_level="WARNING",
        token_lifetime_seconds=3600,
        token_attempts_per_address=1_000_000,
        export_file_bytes=FILE_BYTES,
        export_retention_seconds=RETENTION,
        export_lease_seconds=30,
        export_worker=worker,
    )
    app = create_app(settings, database)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{http.server_port}", app, settings)
    http.shutdown()
    app.extensions["ipt_export_worker"].stop()


@pytest.fixture(scope="module")
def busy(database: Database) -> Iterator[Server]:
    yield from _serve(database, worker=True)


@pytest.fixture(scope="module")
def quiet(database: Database) -> Iterator[Server]:
    yield from _serve(database, worker=False)


def client_of(server: Server, database: Database, scopes: list[str], **kw: Any) -> Client:
    return Client(server.url, token_for(server, database, scopes, **kw))


@pytest.fixture
def admin(busy: Server, database: Database) -> Client:
    return client_of(busy, database, ALL)


ASYNC = {"Prefer": "respond-async"}


def kick_off(client: Client, path: str = "/fhir/$export", **params: str) -> str:
    response = client.get(path, params=params, headers=ASYNC)
    assert response.status_code == 202, response.text
    return str(response.headers["Content-Location"]).removeprefix(client.base_url)


def wait(client: Client, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.get(status_url)
        if response.status_code == 200:
            assert response.headers["Expires"]
            return dict(response.json())
        assert response.status_code == 202, response.text
        assert response.headers["X-Progress"]
        assert response.headers["Retry-After"]
        time.sleep(0.05)
    raise AssertionError("the export did not complete")


def download(client: Client, url: str) -> list[dict[str, Any]]:
    response = client.get(
        url.removeprefix(client.base_url), headers={"Accept": "application/fhir+ndjson"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/fhir+ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def exported(client: Client, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        resources = download(client, item["url"])
        assert len(resources) == item["count"]
        assert {r["resourceType"] for r in resources} == {item["type"]}
        found.setdefault(item["type"], []).extend(resources)
    return found


def patients_of(resources: list[dict[str, Any]]) -> set[str]:
    return {r["subject"]["reference"] for r in resources if "subject" in r}


def test_export_by_type_and_since_holds_what_changed_since(admin: Client) -> None:
    admin.create_plan(patient="Patient/early")
    time.sleep(0.01)
    since = utcnow().isoformat().replace("+00:00", "Z")
    later = admin.create_plan(patient="Patient/late")
    manifest = wait(admin, kick_off(admin, _type="CarePlan,Goal", _since=since))
    assert manifest["requiresAccessToken"] is True
    assert unquote(manifest["request"]).endswith(
        f"/fhir/$export?_type=CarePlan,Goal&_since={since}"
    )
    assert manifest["error"] == []
    found = exported(admin, manifest)
    assert set(found) == {"CarePlan", "Goal"}
    assert patients_of(found["CarePlan"]) == patients_of(found["Goal"]) == {"Patient/late"}
    goals = admin.get(plan_url(later, "goals")).json()["items"]
    assert {g["id"] for g in found["Goal"]} == {g["id"] for g in goals}


def test_type_filter_selects_as_the_search_does(admin: Client) -> None:
    plan = admin.create_plan(patient="Patient/f1")
    admin.create_plan(patient="Patient/f2")
    goal = admin.get(plan_url(plan, "goals")).json()["items"][0]
    changed = admin.patch(
        plan_url(plan, "goals", goal["id"]), json={"lifecycle_status": "completed"}
    )
    assert changed.status_code == 200, changed.text
    manifest = wait(
        admin,
        kick_off(
            admin,
            _type="Goal,CarePlan",
            _typeFilter="Goal?lifecycle-status=completed,CarePlan?patient=Patient/f2",
        ),
    )
    found = exported(admin, manifest)
    assert [g["id"] for g in found["Goal"]] == [goal["id"]]
    searched = admin.get("/fhir/CarePlan", params={"patient": "Patient/f2", "_count": "200"})
    assert sorted(r["id"] for r in found["CarePlan"]) == sorted(
        e["resource"]["id"] for e in searched.json()["entry"]
    )


def test_post_kick_off_takes_parameters_and_patient_level_export(admin: Client) -> None:
    admin.create_plan(patient="Patient/p1")
    admin.create_plan(patient="Patient/p2")
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "CarePlan"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
        ],
    }
    response = admin.post("/fhir/Patient/$export", json=body, headers=ASYNC)
    assert response.status_code == 202, response.text
    status = response.headers["Content-Location"].removeprefix(admin.base_url)
    assert patients_of(exported(admin, wait(admin, status))["CarePlan"]) == {
        "Patient/p1",
        "Patient/p2",
    }
    one = wait(admin, kick_off(admin, "/fhir/Patient/p2/$export", _type="CarePlan"))
    assert patients_of(exported(admin, one)["CarePlan"]) == {"Patient/p2"}


def test_a_patient_bound_token_exports_its_patient_only(
    busy: Server, database: Database, admin: Client
) -> None:
    admin.create_plan(patient="Patient/mine")
    admin.create_plan(patient="Patient/theirs")
    bound = client_of(busy, database, ["patient/*.rs"], patient="Patient/mine")
    found = exported(bound, wait(bound, kick_off(bound)))
    assert set(found) >= {"CarePlan", "Goal"}
    everything = [r for resources in found.values() for r in resources]
    assert patients_of(everything) == {"Patient/mine"}
    other = bound.get("/fhir/Patient/theirs/$export", headers=ASYNC)
    assert other.status_code == 404
    audit_journal.move(database)
    with database.reading() as session:
        recorded = set(
            session.scalars(
                select(AuditRecord.patient).where(AuditRecord.interaction == "operation")
            )
        )
    assert recorded - {None} == {"Patient/mine"}


def test_each_download_is_audited_for_each_patient_it_holds(
    admin: Client, database: Database
) -> None:
    admin.create_plan(patient="Patient/a1")
    admin.create_plan(patient="Patient/a2")
    manifest = wait(admin, kick_off(admin, _type="CarePlan"))
    for item in manifest["output"]:
        download(admin, item["url"])
    audit_journal.move(database)
    with database.reading() as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.interaction == "operation")
        ).all()
    downloads = [r for r in records if r.status == 200 and r.patient is not None]
    assert {r.patient for r in downloads} == {"Patient/a1", "Patient/a2"}
    assert all(r.action == "E" for r in records)
    assert any(r.status == 202 and "_type=CarePlan" in (r.query or "") for r in records)


def test_files_split_past_the_configured_size(admin: Client) -> None:
    for n in range(3):
        admin.create_plan(patient=f"Patient/s{n}")
    manifest = wait(admin, kick_off(admin, _type="Goal"))
    assert len(manifest["output"]) > 1
    ids: list[str] = []
    for item in manifest["output"]:
        response = admin.get(item["url"].removeprefix(admin.base_url))
        assert len(response.content) <= FILE_BYTES
        ids += [json.loads(line)["id"] for line in response.text.splitlines()]
    searched = admin.get("/fhir/Goal", params={"_count": "200"}).json()
    assert sorted(ids) == sorted(e["resource"]["id"] for e in searched["entry"])


def test_refusals(busy: Server, database: Database, admin: Client, anonymous: Client) -> None:
    no_prefer = admin.get("/fhir/$export")
    assert no_prefer.status_code == 400 and "respond-async" in no_prefer.text
    for params, named in (
        ({"_elements": "id"}, "_elements"),
        ({"includeAssociatedData": "LatestProvenanceResources"}, "includeAssociatedData"),
        ({"patient": "Patient/1"}, "patient"),
        ({"_outputFormat": "text/csv"}, "_outputFormat"),
        ({"_type": "Patient"}, "_type"),
        ({"_since": "yesterday"}, "_since"),
        ({"_typeFilter": "Goal?_count=3"}, "_typeFilter"),
        ({"_typeFilter": "Goal?nonsense=1"}, "_typeFilter"),
        ({"_type": "CarePlan", "_typeFilter": "Goal?lifecycle-status=active"}, "_typeFilter"),
    ):
        refused = admin.get("/fhir/$export", params=params, headers=ASYNC)
        assert refused.status_code == 400, (params, refused.text)
        assert refused.json()["issue"][0]["expression"] == [named], refused.text
    goals_only = client_of(busy, database, ["system/Goal.rs"])
    forbidden = goals_only.get("/fhir/$export", params={"_type": "Goal,CarePlan"}, headers=ASYNC)
    assert forbidden.status_code == 403 and "CarePlan" in forbidden.text
    assert "Goal," not in forbidden.json()["issue"][0]["diagnostics"]
    assert anonymous.get("/fhir/$export", headers=ASYNC).status_code == 401
    with database.reading() as session:
        assert session.scalar(select(ExportJob.id)) is None


def test_lenient_handling_ignores_and_reports_what_is_unsupported(admin: Client) -> None:
    admin.create_plan()
    response = admin.get(
        "/fhir/$export",
        params={"_type": "Goal", "_elements": "id"},
        headers={"Prefer": "respond-async, handling=lenient"},
    )
    assert response.status_code == 202, response.text
    manifest = wait(admin, response.headers["Content-Location"].removeprefix(admin.base_url))
    (error,) = manifest["error"]
    (outcome,) = download(admin, error["url"])
    assert outcome["resourceType"] == "OperationOutcome"
    assert "_elements" in outcome["issue"][0]["diagnostics"]
    assert [item["type"] for item in manifest["output"]] == ["Goal"] * len(manifest["output"])


def test_only_the_client_that_started_it_sees_an_export(
    busy: Server, database: Database, admin: Client, anonymous: Client
) -> None:
    admin.create_plan()
    status = kick_off(admin, _type="CarePlan")
    manifest = wait(admin, status)
    url = manifest["output"][0]["url"].removeprefix(admin.base_url)
    other = client_of(busy, database, ALL)
    assert other.get(status).status_code == 404
    assert other.get(url).status_code == 404
    assert other.delete(status).status_code == 404
    assert anonymous.get(url).status_code == 401
    assert admin.get(url, headers={"Accept": "text/csv"}).status_code == 406
    assert admin.get(status).status_code == 200


def test_cancel_deletes_the_job_and_its_files(admin: Client, database: Database) -> None:
    admin.create_plan()
    status = kick_off(admin)
    manifest = wait(admin, status)
    url = manifest["output"][0]["url"].removeprefix(admin.base_url)
    assert admin.delete(status).status_code == 202
    assert admin.get(status).status_code == 404
    assert admin.get(url).status_code == 404
    with database.reading() as session:
        assert session.scalar(select(ExportFile.job_id)) is None


def test_an_expired_export_is_gone_and_purged(admin: Client, database: Database) -> None:
    admin.create_plan()
    status = kick_off(admin, _type="CarePlan")
    manifest = wait(admin, status)
    response = admin.get(status)
    expires = parsedate_to_datetime(response.headers["Expires"])
    assert timedelta(seconds=RETENTION - 5) < expires - utcnow() <= timedelta(seconds=RETENTION)
    with database.writing() as session:
        session.execute(update(ExportJob).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert admin.get(status).status_code == 404
    assert admin.get(manifest["output"][0]["url"].removeprefix(admin.base_url)).status_code == 404
    with database.reading() as session:
        assert session.scalar(select(ExportJob.id)) is None
        assert session.scalar(select(ExportFile.job_id)) is None


def test_the_export_holds_the_state_at_its_transaction_time(
    quiet: Server, busy: Server, database: Database
) -> None:
    """A job queued on a process that runs none is run later elsewhere: what was written
    after its transaction time is not in it, and what changed is as it was."""
    asker = client_of(quiet, database, ALL)
    plan = asker.create_plan(patient="Patient/before")
    goal = asker.get(plan_url(plan, "goals")).json()["items"][0]
    status = kick_off(asker, _type="CarePlan,Goal")
    assert asker.get(status).headers["X-Progress"] == "queued"
    asker.create_plan(patient="Patient/after")
    asker.patch(plan_url(plan, "goals", goal["id"]), json={"lifecycle_status": "cancelled"})
    asker.delete(
        plan_url(plan, "goals", asker.get(plan_url(plan, "goals")).json()["items"][1]["id"])
    )
    runner = Client(busy.url, asker.http.headers["Authorization"].removeprefix("Bearer "))
    found = exported(runner, wait(runner, status))
    assert patients_of(found["CarePlan"]) == {"Patient/before"}
    goals = {g["id"]: g for g in found["Goal"]}
    assert len(goals) == len(asker.get(plan_url(plan, "goals")).json()["items"]) + 1
    assert goals[goal["id"]]["lifecycleStatus"] != "cancelled"


def test_a_job_whose_process_died_is_taken_up_again(
    quiet: Server, busy: Server, database: Database
) -> None:
    asker = client_of(quiet, database, ALL)
    asker.create_plan()
    # A process takes the job, starts a file, and dies. Another server of this test run
    # that looks for work at that moment may take the job first: that one is left to
    # finish, and the next is taken.
    dead = Lease("dead-process", 30)
    for _ in range(5):
        status = kick_off(asker, _type="Goal,CarePlan")
        job_id = status.rsplit("/", 1)[-1]
        job = export_jobs.claim(database, dead, job_id)
        if job is not None:
            break
        wait(asker, status)
    assert job is not None
    DatabaseSink(database, job_id, dead, 1).open("Goal", "output")
    progress = asker.get(status)
    assert progress.status_code == 202
    assert progress.headers["X-Progress"].startswith("in progress")
    # Nobody takes it while its lease holds...
    assert busy.app.extensions["ipt_export_worker"].run_one() is False
    # ...and once it has run out, a poll wakes a process that does.
    with database.writing() as session:
        session.execute(update(ExportJob).values(lease_expires=utcnow() - timedelta(seconds=1)))
    runner = Client(busy.url, asker.http.headers["Authorization"].removeprefix("Bearer "))
    manifest = wait(runner, status)
    found = exported(runner, manifest)
    searched = runner.get("/fhir/CarePlan", params={"_count": "200"}).json()
    assert sorted(r["id"] for r in found["CarePlan"]) == sorted(
        e["resource"]["id"] for e in searched["entry"]
    )
    assert len({g["id"] for g in found["Goal"]}) == len(found["Goal"]) > 0
    with database.reading() as session:
        done = session.get(ExportJob, job_id)
        assert done is not None and done.attempts == 2
        assert all(session.scalars(select(ExportFile.complete)))


def test_the_export_command_writes_the_same_files(
    admin: Client, database: Database, tmp_path: Any
) -> None:
    admin.create_plan(patient="Patient/c1")
    admin.create_plan(patient="Patient/c2")
    out = tmp_path / "export"
    env = {"IPT_DATABASE_URL": database.url.render_as_string(hide_password=False)}
    result = CliRunner().invoke(
        main, ["export", "--type", "CarePlan,Goal", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "resources" in result.stderr
    lines = (out / "CarePlan.ndjson").read_text().splitlines()
    assert patients_of([json.loads(line) for line in lines]) == {"Patient/c1", "Patient/c2"}
    manifest = wait(admin, kick_off(admin, _type="CarePlan"))
    served = [
        line
        for item in manifest["output"]
        for line in admin.get(item["url"].removeprefix(admin.base_url)).text.splitlines()
    ]
    assert sorted(served) == sorted(lines)
    with database.reading() as session:
        recorded = session.scalars(
            select(AuditRecord.patient).where(AuditRecord.agent.startswith("ipt-careplans export"))
        ).all()
    assert set(recorded) == {"Patient/c1", "Patient/c2"}
    refused = CliRunner().invoke(main, ["export", "--type", "Patient", "--out", str(out)], env=env)
    assert refused.exit_code == 2 and "--type Patient" in refused.stderr


def test_the_capability_statement_declares_the_export_operations(admin: Client) -> None:
    statement = admin.get("/fhir/metadata").json()
    bulk = "http://hl7.org/fhir/uv/bulkdata"
    assert f"{bulk}/CapabilityStatement/bulk-data" in statement["instantiates"]
    (rest,) = statement["rest"]
    assert [o["definition"] for o in rest["operation"]] == [f"{bulk}/OperationDefinition/export"]
    (patient,) = [r for r in rest["resource"] if r["type"] == "Patient"]
    assert [o["definition"] for o in patient["operation"]] == [
        f"{bulk}/OperationDefinition/patient-export"
    ]
    smart = admin.get("/.well-known/smart-configuration").json()
    assert "system/*.rs" in smart["scopes_supported"]
