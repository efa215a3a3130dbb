"""The progress document's ETag and the cache of rendered documents.

Every kind of change to what the document shows, made over HTTP (native and FHIR routes),
gives the plan a new version, hence a new ETag, and the next read shows the change: never
a document kept from before it. A kept document is served as the same bytes as a fresh
one, with the plan's row alone read besides the token check and the audit record.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

import pytest
import requests
from conftest import Client, Server, plan_url, token_for
from sqlalchemy import event, select
from werkzeug.serving import make_server

from api import config
from api.app import create_app
from api.progress import document
from api.rendered_cache import RenderedCache
from fhir_mappings import terminology as t
from service import audit_journal, course
from service.db import Database
from service.models import AuditRecord

Json = dict[str, Any]
START = date(2026, 1, 5)
FHIR_JSON = "application/fhir+json"
PATCH_JSON = "application/json-patch+json"


def phq9(total: int, item9: int = 0) -> dict[str, int]:
    """Answers to the nine PHQ-9 items adding up to ``total``, item 9 answered ``item9``."""
    answers = {f"phq-9-{n}": 0 for n in range(1, 10)}
    answers["phq-9-9"] = item9
    left = total - item9
    for n in range(1, 9):
        answers[f"phq-9-{n}"] = min(3, left)
        left -= answers[f"phq-9-{n}"]
    return answers


def ok(response: requests.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    return dict(response.json()) if response.content else {}


@dataclass
class Setting:
    """A plan with something of every kind in it."""

    plan: Json
    score: str  # a PHQ-9 score
    flagged: str  # a PHQ-9 score whose item 9 was answered above 0
    signal: str  # the open safety signal it raised
    goal: str  # the template's symptom goal
    homework: str


@pytest.fixture
def setting(client: Client) -> Setting:
    plan = client.create_plan(status="active")
    for number in (1, 2):
        day = START + timedelta(weeks=number - 1)
        body = {"number": number, "status": "attended", "date": day.isoformat()}
        ok(client.post(plan_url(plan, "sessions"), json=body), 201)
    score = ok(
        client.post(
            plan_url(plan, "administrations"),
            json={"instrument": "phq-9", "administered_on": "2026-01-05", "total": 20},
        ),
        201,
    )
    flagged = ok(
        client.post(
            plan_url(plan, "administrations"),
            json={
                "instrument": "phq-9",
                "administered_on": "2026-01-12",
                "answers": phq9(16, item9=1),
            },
        ),
        201,
    )
    [signal] = ok(client.get(plan_url(plan, "safety-signals")))["items"]
    progress = ok(client.get(plan_url(plan, "progress")))
    goal = next(g for g in progress["goals"] if g["kind"] == "symptom")
    homework = ok(
        client.post(
            plan_url(plan, "homework"),
            json={
                "kind": "reconnect",
                "phase": "initial",
                "description": "Call a friend",
                "assigned_on": START.isoformat(),
            },
        ),
        201,
    )
    return Setting(plan, score["id"], flagged["id"], signal["id"], goal["id"], homework["id"])


def fhir(client: Client, method: str, path: str, body: Any, content_type: str) -> Json:
    response = client.request(
        method, path, data=json.dumps(body), headers={"Content-Type": content_type}
    )
    return ok(response)


def phase_put_with_a_new_session(client: Client, s: Setting) -> Json:
    """PUT of the initial phase's FHIR CarePlan as read, with a third session added."""
    plan = ok(client.get(plan_url(s.plan)))
    reference = "CarePlan/" + next(p["id"] for p in plan["phases"] if p["code"] == "initial")
    phase = ok(client.get(f"/fhir/{reference}"))
    phase.setdefault("activity", []).append(
        {
            "detail": {
                "extension": [{"url": t.EXT_SESSION_NUMBER, "valuePositiveInt": 3}],
                "kind": "Appointment",
                "code": {"coding": [{"system": t.SNOMED, "code": t.IPT_SNOMED_CODE}]},
                "status": "scheduled",
                "scheduledPeriod": {"start": "2026-01-19", "end": "2026-01-19"},
            }
        }
    )
    return fhir(client, "PUT", f"/fhir/{reference}", phase, FHIR_JSON)


def phq9_scores(doc: Json) -> list[Json]:
    return list(next(i for i in doc["instruments"] if i["instrument"] == "phq-9")["scores"])


def goal_of(doc: Json, goal_id: str) -> Json | None:
    return next((g for g in doc["goals"] if g["id"] == goal_id), None)


def phase_of(doc: Json, code: str) -> Json:
    return next(p for p in doc["phases"] if p["code"] == code)


@dataclass(frozen=True)
class Change:
    """A write over HTTP, and what it shows in the document (before, after)."""

    name: str
    write: Callable[[Client, Setting], Any]
    shows: Callable[[Json, Json, Setting], bool]


def _url(s: Setting, *parts: object) -> str:
    return plan_url(s.plan, *parts)


CHANGES = [
    Change(
        "score recorded",
        lambda c, s: ok(
            c.post(
                _url(s, "administrations"),
                json={"instrument": "phq-9", "administered_on": "2026-01-19", "total": 9},
            ),
            201,
        ),
        lambda b, a, s: (
            len(phq9_scores(a)) == len(phq9_scores(b)) + 1 and phq9_scores(a)[-1]["total"] == 9
        ),
    ),
    Change(
        "score changed",
        lambda c, s: ok(c.patch(_url(s, "administrations", s.score), json={"total": 18})),
        lambda b, a, s: phq9_scores(a)[0]["total"] == 18 and phq9_scores(b)[0]["total"] == 20,
    ),
    Change(
        "score removed",
        lambda c, s: ok(c.delete(_url(s, "administrations", s.score)), 204),
        lambda b, a, s: [p["id"] for p in phq9_scores(a)] == [s.flagged],
    ),
    Change(
        "score removed through FHIR",
        lambda c, s: ok(c.delete(f"/fhir/Observation/{s.score}"), 204),
        lambda b, a, s: [p["id"] for p in phq9_scores(a)] == [s.flagged],
    ),
    Change(
        "safety signal raised",
        lambda c, s: ok(
            c.post(
                _url(s, "administrations"),
                json={
                    "instrument": "phq-9",
                    "administered_on": "2026-01-19",
                    "answers": phq9(12, item9=2),
                },
            ),
            201,
        ),
        lambda b, a, s: (
            len(a["open_safety_signals"]) == 2 and a["open_safety_signals"][-1]["score"] == 2
        ),
    ),
    Change(
        "safety signal acknowledged",
        lambda c, s: ok(
            c.post(
                _url(s, "safety-signals", s.signal, "acknowledge"),
                json={"action_taken": "Risk assessed in session."},
            )
        ),
        lambda b, a, s: (
            [x["id"] for x in b["open_safety_signals"]] == [s.signal]
            and a["open_safety_signals"] == []
        ),
    ),
    Change(
        "goal created",
        lambda c, s: ok(
            c.post(
                _url(s, "goals"),
                json={
                    "kind": "problem-area",
                    "problem_area": "grief",
                    "description": "Join a walking group.",
                },
            ),
            201,
        ),
        lambda b, a, s: (
            len(a["goals"]) == len(b["goals"]) + 1
            and a["goals"][-1]["description"] == "Join a walking group."
        ),
    ),
    Change(
        "goal achievement set by a clinician",
        lambda c, s: ok(c.patch(_url(s, "goals", s.goal), json={"achievement_status": "achieved"})),
        lambda b, a, s: (
            (goal_of(a, s.goal) or {}).get("achievement_source") == "clinician"
            and (goal_of(a, s.goal) or {}).get("achievement_status") == "achieved"
        ),
    ),
    Change(
        "goal target changed",
        lambda c, s: ok(
            c.patch(
                _url(s, "goals", s.goal),
                json={"target": {"measure": "44261-6", "comparator": "<=", "value": 7}},
            )
        ),
        lambda b, a, s: ((goal_of(a, s.goal) or {}).get("target") or {}).get("value") == 7,
    ),
    Change(
        "goal removed",
        lambda c, s: ok(c.delete(_url(s, "goals", s.goal)), 204),
        lambda b, a, s: goal_of(b, s.goal) is not None and goal_of(a, s.goal) is None,
    ),
    Change(
        "goal described anew through FHIR",
        lambda c, s: fhir(
            c,
            "PATCH",
            f"/fhir/Goal/{s.goal}",
            [{"op": "replace", "path": "/description/text", "value": "PHQ-9 below 5."}],
            PATCH_JSON,
        ),
        lambda b, a, s: (goal_of(a, s.goal) or {}).get("description") == "PHQ-9 below 5.",
    ),
    Change(
        "session recorded",
        lambda c, s: ok(
            c.post(
                _url(s, "sessions"),
                json={"number": 3, "status": "no-show", "date": "2026-01-19"},
            ),
            201,
        ),
        lambda b, a, s: a["attendance"]["no_show"] == b["attendance"]["no_show"] + 1,
    ),
    Change(
        "session added through FHIR (the phase's activities)",
        phase_put_with_a_new_session,
        lambda b, a, s: a["attendance"]["scheduled"] == b["attendance"]["scheduled"] + 1,
    ),
    Change(
        "session status changed",
        lambda c, s: ok(c.patch(_url(s, "sessions", 2), json={"status": "no-show"})),
        lambda b, a, s: (a["attendance"]["attended"], a["attendance"]["no_show"]) == (1, 1),
    ),
    Change(
        "session removed",
        lambda c, s: ok(c.delete(_url(s, "sessions", 2)), 204),
        lambda b, a, s: a["attendance"]["attended"] == b["attendance"]["attended"] - 1,
    ),
    Change(
        "homework assigned",
        lambda c, s: ok(
            c.post(
                _url(s, "homework"),
                json={
                    "kind": "reconnect",
                    "phase": "initial",
                    "description": "Write to a cousin",
                    "assigned_on": START.isoformat(),
                },
            ),
            201,
        ),
        lambda b, a, s: a["homework"]["assigned"] == b["homework"]["assigned"] + 1,
    ),
    Change(
        "homework completed",
        lambda c, s: ok(c.patch(_url(s, "homework", s.homework), json={"status": "completed"})),
        lambda b, a, s: (a["homework"]["completed"], a["homework"]["due"]) == (1, 1),
    ),
    Change(
        "homework due date set",
        lambda c, s: ok(
            c.patch(
                _url(s, "homework", s.homework),
                json={"due_on": (date.today() - timedelta(days=1)).isoformat()},
            )
        ),
        lambda b, a, s: (b["homework"]["due"], a["homework"]["due"]) == (0, 1),
    ),
    Change(
        "homework removed",
        lambda c, s: ok(c.delete(_url(s, "homework", s.homework)), 204),
        lambda b, a, s: a["homework"]["assigned"] == b["homework"]["assigned"] - 1,
    ),
    Change(
        "phase changed",
        lambda c, s: ok(c.patch(_url(s, "phases", "initial"), json={"end_session": 4})),
        lambda b, a, s: (
            phase_of(a, "initial")["end_session"] == 4
            and phase_of(b, "initial")["end_session"] != 4
        ),
    ),
    Change(
        "plan put on hold",
        lambda c, s: ok(c.patch(_url(s), json={"status": "on-hold"})),
        lambda b, a, s: (b["status"], a["status"]) == ("active", "on-hold"),
    ),
    Change(
        "plan completed",
        lambda c, s: ok(c.patch(_url(s), json={"status": "completed", "open_goals": "resolve"})),
        lambda b, a, s: (
            a["status"] == "completed"
            and all(p["status"] != "active" for p in a["phases"])
            and all(g["lifecycle_status"] == "completed" for g in a["goals"])
        ),
    ),
    Change(
        "contract renegotiated",
        lambda c, s: ok(
            c.patch(
                _url(s),
                json={"planned_sessions": 16, "contract_change_reason": "Slower progress."},
            )
        ),
        lambda b, a, s: (
            (b["attendance"]["planned_sessions"], a["attendance"]["planned_sessions"]) == (12, 16)
        ),
    ),
    Change(
        "plan start moved",
        lambda c, s: ok(c.patch(_url(s), json={"start_date": "2026-01-02"})),
        lambda b, a, s: a["start_date"] == "2026-01-02",
    ),
    Change(
        "plan status changed through FHIR",
        lambda c, s: fhir(
            c,
            "PATCH",
            f"/fhir/CarePlan/{s.plan['id']}",
            [{"op": "replace", "path": "/status", "value": "on-hold"}],
            PATCH_JSON,
        ),
        lambda b, a, s: a["status"] == "on-hold",
    ),
]


def fresh(database: Database, plan_id: str) -> Json:
    """The document as computed from the database now, without the cache."""
    return json.loads(json.dumps(document(course.plan_progress(database, plan_id))))


@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_every_change_gives_a_new_etag_and_the_next_read_shows_it(
    client: Client, database: Database, setting: Setting, change: Change
) -> None:
    url = plan_url(setting.plan, "progress")
    before = client.get(url)
    assert before.status_code == 200
    kept = client.get(url)  # served from the cache
    assert kept.content == before.content
    assert kept.headers["ETag"] == before.headers["ETag"]

    change.write(client, setting)

    after = client.get(url)
    assert after.status_code == 200, after.text
    assert after.headers["ETag"] != before.headers["ETag"]
    assert after.json()["version"] > before.json()["version"]
    assert after.json() == fresh(database, setting.plan["id"])
    assert change.shows(before.json(), after.json(), setting), after.json()
    # The old ETag no longer answers 304; the new one does.
    old = client.get(url, headers={"If-None-Match": before.headers["ETag"]})
    assert old.status_code == 200 and old.content == after.content
    again = client.get(url, headers={"If-None-Match": after.headers["ETag"]})
    assert again.status_code == 304


def test_the_kinds_of_change_cover_every_write_route_of_a_plan(live: Server) -> None:
    """A new route that writes into a plan is a new kind of change for the list above."""
    writes = {
        (rule.rule, method)
        for rule in live.app.url_map.iter_rules()
        for method in rule.methods or ()
        if method in ("POST", "PATCH", "PUT", "DELETE")
        and rule.rule.startswith("/api/v1/care-plans/<plan_id>")
    }
    covered = {
        ("/api/v1/care-plans/<plan_id>", "PATCH"),
        ("/api/v1/care-plans/<plan_id>", "DELETE"),  # 410 after it (below)
        ("/api/v1/care-plans/<plan_id>/administrations", "POST"),
        ("/api/v1/care-plans/<plan_id>/administrations/<administration_id>", "PATCH"),
        ("/api/v1/care-plans/<plan_id>/administrations/<administration_id>", "DELETE"),
        ("/api/v1/care-plans/<plan_id>/goals", "POST"),
        ("/api/v1/care-plans/<plan_id>/goals/<goal_id>", "PATCH"),
        ("/api/v1/care-plans/<plan_id>/goals/<goal_id>", "DELETE"),
        ("/api/v1/care-plans/<plan_id>/sessions", "POST"),
        ("/api/v1/care-plans/<plan_id>/sessions/<int:number>", "PATCH"),
        ("/api/v1/care-plans/<plan_id>/sessions/<int:number>", "DELETE"),
        ("/api/v1/care-plans/<plan_id>/homework", "POST"),
        ("/api/v1/care-plans/<plan_id>/homework/<homework_id>", "PATCH"),
        ("/api/v1/care-plans/<plan_id>/homework/<homework_id>", "DELETE"),
        ("/api/v1/care-plans/<plan_id>/phases/<phase>", "PATCH"),
        ("/api/v1/care-plans/<plan_id>/safety-signals/<signal_id>/acknowledge", "POST"),
    }
    assert writes == covered


def test_a_kept_document_is_served_as_the_same_bytes_from_the_plan_row_alone(
    client: Client, database: Database, setting: Setting
) -> None:
    url = plan_url(setting.plan, "progress")
    counted: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counted.append(statement)

    def read() -> tuple[requests.Response, list[str]]:
        counted.clear()
        event.listen(database.engine, "before_cursor_execute", count)
        try:
            response = client.get(url)
        finally:
            event.remove(database.engine, "before_cursor_execute", count)
        assert response.status_code == 200
        return response, [s for s in counted if not s.lstrip().upper().startswith("BEGIN")]

    computed, computing = read()
    kept, keeping = read()

    assert kept.content == computed.content
    drop = {"Date", "X-Request-ID"}
    assert {k: v for k, v in kept.headers.items() if k not in drop} == {
        k: v for k, v in computed.headers.items() if k not in drop
    }
    # The computed read ran the statements of the plan with its phases, its scores, goals,
    # sessions, homework and signals that the kept one did without.
    tables = ("phases", "administrations", "goals", "sessions", "homework", "safety_signals")
    for table in tables:
        assert any(f"FROM {table}" in s or f"JOIN {table}" in s for s in computing), table
    # The plan's row is read as one prepared statement on the driver's cursor (as a FHIR
    # read reads its resource), which statement events do not see: a kept document needs
    # no transaction at all.
    assert keeping == []


def test_a_kept_document_is_read_as_any_read_is(
    live: Server, database: Database, client: Client
) -> None:
    """Another patient's token finds no plan, the read is audited, and a deleted plan is
    gone, whether or not its document is kept."""
    own = client.create_plan(patient="Patient/own")
    other = client.create_plan(patient="Patient/other")
    for plan in (own, other):
        ok(client.get(plan_url(plan, "progress")))
    bound = Client(
        live.url,
        token_for(
            live, database, ["patient/CarePlan.rs", "patient/Observation.rs"], patient="Patient/own"
        ),
    )
    assert bound.get(plan_url(own, "progress")).status_code == 200
    assert bound.get(plan_url(other, "progress")).status_code == 404
    audit_journal.move(database)
    with database.reading() as session:
        audited = session.execute(
            select(AuditRecord.patient, AuditRecord.outcome).where(
                AuditRecord.entity == f"CarePlan/{own['id']}", AuditRecord.action == "R"
            )
        ).all()
    assert [tuple(r) for r in audited] == [("Patient/own", "0")] * 2
    reader = Client(live.url, token_for(live, database, ["system/CarePlan.rs"]))
    assert reader.get(plan_url(own, "progress")).status_code == 403

    assert client.delete(plan_url(own)).status_code == 204
    assert client.get(plan_url(own, "progress")).status_code == 410
    assert client.get("/api/v1/care-plans/nobody/progress").status_code == 404


# --- the cache itself ------------------------------------------------------------------------


def test_the_least_recently_read_record_goes_first_and_a_record_keeps_one_body() -> None:
    cache = RenderedCache(2)
    cache.put("a", 1, b"a1")
    cache.put("b", 1, b"b1")
    assert cache.get("a", 1) == b"a1"  # now the most recently read
    cache.put("c", 1, b"c1")
    assert (cache.get("a", 1), cache.get("b", 1), cache.get("c", 1)) == (b"a1", None, b"c1")
    cache.put("a", 2, b"a2")  # a new version replaces the old
    assert (cache.get("a", 1), cache.get("a", 2), len(cache)) == (None, b"a2", 2)


def test_a_cache_of_no_entries_keeps_nothing() -> None:
    cache = RenderedCache(0)
    cache.put("a", 1, b"a1")
    assert (cache.get("a", 1), len(cache)) == (None, 0)
    with pytest.raises(ValueError):
        RenderedCache(-1)


def test_threads_share_the_cache_within_its_bound() -> None:
    cache = RenderedCache(50)
    wrong: list[tuple[str, int, bytes]] = []

    def work(worker: int) -> None:
        for n in range(2000):
            record, version = f"plan-{(worker * 7 + n) % 120}", n % 3
            body = f"{record}/{version}".encode()
            cache.put(record, version, body)
            found = cache.get(record, version)
            if found is not None and found != body:
                wrong.append((record, version, found))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert len(cache) == 50


@pytest.mark.parametrize(
    ("given", "entries"), [(None, 1024), ("0", 0), (" 10 ", 10), ("1000000", 1_000_000)]
)
def test_the_setting_bounds_the_cache(given: str | None, entries: int) -> None:
    env = {} if given is None else {"IPT_PROGRESS_CACHE_ENTRIES": given}
    assert config.load(env).progress_cache_entries == entries


@pytest.mark.parametrize("given", ["-1", "1000001", "many"])
def test_a_setting_out_of_bounds_is_refused(given: str) -> None:
    with pytest.raises(config.ConfigError, match="IPT_PROGRESS_CACHE_ENTRIES"):
        config.load({"IPT_PROGRESS_CACHE_ENTRIES": given})


def test_with_no_entries_every_read_computes_the_document(
    live: Server, database: Database, client: Client, admin_token: str
) -> None:
    app = create_app(replace(live.settings, progress_cache_entries=0), database)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        plan = client.create_plan()
        uncached = Client(f"http://127.0.0.1:{server.server_port}", admin_token)
        counted: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            counted.append(statement)

        event.listen(database.engine, "before_cursor_execute", count)
        try:
            first = uncached.get(plan_url(plan, "progress"))
            after_first = len(counted)
            second = uncached.get(plan_url(plan, "progress"))
        finally:
            event.remove(database.engine, "before_cursor_execute", count)
        assert first.status_code == second.status_code == 200
        assert first.content == second.content
        assert len(counted) - after_first == after_first
        assert len(app.extensions["ipt_progress_cache"]) == 0
    finally:
        server.shutdown()
