"""What the load generator asks for: ids, patients, bodies and a token, read from the
seeded database before each scenario and handed to wrk as a Lua data file."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.processes import BIN, ROOT
from bench.scores import scored_plans
from bench.seed import IDENTIFIER_SYSTEM
from fhir_mappings import terminology as t
from service.db import Database
from service.models import CarePlan, Goal, StoredResource, TherapySession

SAMPLE = 5000
BENCH_CLIENT = "bench-load"


def register_client(env: dict[str, str]) -> tuple[str, str]:
    """A system client with every scope, registered with the service's own command (under
    a new name each time: a reused database keeps the clients of earlier runs)."""
    result = subprocess.run(
        [str(BIN / "ipt-careplans"), "clients", "create", "--name",
         f"{BENCH_CLIENT}-{time.time_ns()}",
         "--scopes", "system/*.cruds"],
        env=env, capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    return fields["client_id"], fields["client_secret"]


def fetch_token(base_url: str, client_id: str, secret: str) -> str:
    """An access token from the service's token endpoint (client credentials)."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    request = urllib.request.Request(
        base_url + "/auth/token",
        data=b"grant_type=client_credentials&scope=system%2F*.cruds",
        headers={
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.loads(answer.read())["access_token"])


def _sample(items: list[Any], rng: random.Random, size: int = SAMPLE) -> list[Any]:
    return items if len(items) <= size else rng.sample(items, size)


def _goal_templates(database: Database) -> tuple[str, str]:
    """A Goal body as a client writes it, made from a stored one, with placeholders."""
    with database.reading() as session:
        content = session.scalar(
            select(StoredResource.content)
            .join(CarePlan, CarePlan.id == StoredResource.plan_id)
            .where(
                StoredResource.resource_type == "Goal",
                StoredResource.deleted.is_(False),
                CarePlan.status == "active",
            )
            .limit(1)
        )
    if content is None:
        raise RuntimeError("the seeded database holds no goal of an active plan")
    goal = json.loads(content)
    body = {k: v for k, v in goal.items() if k not in ("id", "meta", "text", "target")}
    body["identifier"] = [{"system": IDENTIFIER_SYSTEM, "value": "@@VALUE@@"}]
    body["subject"] = {"reference": "Patient/@@PATIENT@@"}
    body["description"] = {"text": "@@TEXT@@"}
    body["lifecycleStatus"] = "active"
    # A goal of the plan's primary problem area: each write names its plan's own.
    area_system = t.local("ipt-problem-area").url
    body["category"] = [
        {"coding": [{"system": area_system, "code": "@@AREA@@"}]}
        if any(c.get("system") == area_system for c in category.get("coding", []))
        else category
        for category in body.get("category", [])
    ]
    body["extension"] = [
        {"url": t.EXT_GOAL_EPISODE, "valueReference": {"reference": "CarePlan/@@EPISODE@@"}}
        if e.get("url") == t.EXT_GOAL_EPISODE
        else e
        for e in body.get("extension", [])
    ]
    update = {"resourceType": "Goal", "id": "@@ID@@", **body}
    return json.dumps(body), json.dumps(update)


def workload(database: Database, token: str, threads: int, seed: int = 11) -> dict[str, Any]:
    """Everything a scenario's requests are made of, for this database as it is now."""
    rng = random.Random(seed)
    with database.reading() as session:
        plans = session.execute(
            select(
                CarePlan.id,
                CarePlan.patient,
                CarePlan.status,
                CarePlan.planned_sessions,
                CarePlan.deleted_at,
                CarePlan.primary_problem_area,
            )
        ).all()
        goals = list(session.scalars(select(Goal.id).where(Goal.deleted_at.is_(None))))
        recorded = dict(
            session.execute(
                select(TherapySession.plan_id, func.max(TherapySession.number)).group_by(
                    TherapySession.plan_id
                )
            ).all()
        )
    plans = [p for p in plans if p.deleted_at is None]
    active = [p for p in plans if p.status == "active"]
    native = [
        {"id": p.id, "next": (recorded.get(p.id) or 0) + 1, "last": p.planned_sessions}
        for p in active
        if (recorded.get(p.id) or 0) < p.planned_sessions
    ]
    create, update = _goal_templates(database)
    return {
        "token": token,
        "threads": threads,
        "run": datetime.now(UTC).strftime("%Y%m%d%H%M%S") + f"-{time.monotonic_ns() % 10**6}",
        "identifier_system": IDENTIFIER_SYSTEM,
        "episodes": _sample([p.id for p in plans], rng),
        "patients": _sample(sorted({p.patient.removeprefix("Patient/") for p in plans}), rng),
        "goals": _sample(goals, rng),
        "writable": _sample(
            [
                {
                    "id": p.id,
                    "patient": p.patient.removeprefix("Patient/"),
                    "area": p.primary_problem_area,
                }
                for p in active
            ],
            rng,
        ),
        "native": _sample(native, rng, 4 * SAMPLE),
        "goal_create": create,
        "goal_update": update,
        "session_day": (datetime.now(UTC).date() + timedelta(days=14)).isoformat(),
        "scored": _sample(scored_plans(database), rng),
        "today": datetime.now(UTC).date().isoformat(),
    }


def _lua(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ",".join(_lua(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"[{_lua(k)}]={_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")


def write_lua(data: dict[str, Any], path: Path) -> Path:
    path.write_text("return " + _lua(data) + "\n", encoding="utf-8")
    return path
