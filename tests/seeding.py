"""Seeded data for property tests: a few real plans with their phases, goals, sessions and
homework, and the ids generated requests draw their path parameters from.

Generated requests delete and change what they find, so the seed tops itself up: once a
deletion leaves fewer than ``minimum`` plans, a new one is created.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from conftest import Client

PROBLEM_AREA_SETS = [
    ["grief"],
    ["role-dispute", "grief"],
    ["role-transition"],
    ["interpersonal-deficits"],
]


@dataclass
class SeededPlan:
    id: str
    phases: dict[str, str]  # phase code -> phase resource id
    goals: list[str]
    homework: list[str]
    sessions: list[int]


@dataclass
class Seeds:
    """The plans of the seed, and the FHIR resources (type, id, version) they publish."""

    client: Client
    minimum: int = 3
    plans: list[SeededPlan] = field(default_factory=list)
    audit_events: list[str] = field(default_factory=list)
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def create(self) -> SeededPlan:
        """One plan with every kind of child record (and an identifier of its own)."""
        n = next(self._counter)
        areas = PROBLEM_AREA_SETS[n % len(PROBLEM_AREA_SETS)]
        fields: dict[str, Any] = {
            "problem_areas": areas,
            "patient": f"Patient/{100 + n % 2}",
            "identifiers": [{"system": "urn:oid:1.2.3", "value": f"SEED-{n}"}],
            "formulation": "Low mood since the move.",
        }
        if "role-dispute" in areas:
            fields["dispute_stage"] = "impasse"
        body = self.client.create_plan(**fields)
        plan_id = body["id"]
        base = f"/api/v1/care-plans/{plan_id}"
        sessions = []
        for number, status in ((1, "attended"), (2, "scheduled")):
            session = {"number": number, "date": f"2026-01-{4 + 7 * number:02d}", "status": status}
            if status == "attended":
                session["phq9_total"] = 15
            response = self.client.post(f"{base}/sessions", json=session)
            assert response.status_code == 201, response.text
            sessions.append(number)
        homework = self.client.post(
            f"{base}/homework",
            json={
                "kind": "reconnect",
                "description": "Call a friend.",
                "assigned_on": "2026-01-11",
            },
        )
        assert homework.status_code == 201, homework.text
        goals = self.client.get(f"{base}/goals").json()["items"]
        plan = SeededPlan(
            id=plan_id,
            phases={p["code"]: p["id"] for p in body["phases"]},
            goals=[g["id"] for g in goals],
            homework=[homework.json()["id"]],
            sessions=sessions,
        )
        self.plans.append(plan)
        return plan

    def fill(self) -> Seeds:
        while len(self.plans) < self.minimum:
            self.create()
        audit = self.client.get("/fhir/AuditEvent", params={"_count": 10})
        if audit.status_code == 200:
            self.audit_events = [e["resource"]["id"] for e in audit.json().get("entry", [])]
        return self

    def forget(self, path: str) -> None:
        """Drop what a successful DELETE of ``path`` removed, and top the seed up."""
        parts = path.split("?")[0].strip("/").split("/")
        last = parts[-1]
        for plan in list(self.plans):
            if last == plan.id:
                self.plans.remove(plan)
            elif last in plan.goals:
                plan.goals.remove(last)
            elif last in plan.homework:
                plan.homework.remove(last)
            elif plan.id in parts and last.isdigit() and int(last) in plan.sessions:
                plan.sessions.remove(int(last))
        self.fill()

    # --- what path parameters are drawn from ------------------------------------------------

    def native_parameters(self, pick: random.Random) -> dict[str, Any]:
        """Path parameters of the native API that name one real plan and its children."""
        plan = pick.choice(self.plans)
        values: dict[str, Any] = {
            "plan_id": plan.id,
            "phase": pick.choice(sorted(plan.phases)),
            "number": pick.choice([*plan.sessions, 1, 2, 3]),
        }
        if plan.goals:
            values["goal_id"] = pick.choice(plan.goals)
        if plan.homework:
            values["homework_id"] = pick.choice(plan.homework)
        return values

    def fhir_resources(self) -> list[tuple[str, str]]:
        """Every (type, id) the seed publishes: episodes, phases and goals."""
        found: list[tuple[str, str]] = []
        for plan in self.plans:
            found.append(("CarePlan", plan.id))
            found += [("CarePlan", phase_id) for phase_id in plan.phases.values()]
            found += [("Goal", goal_id) for goal_id in plan.goals]
        return found

    def fhir_parameters(self, pick: random.Random) -> dict[str, Any]:
        """Path parameters of the FHIR routes that name one real resource and version."""
        resource_type, resource_id = pick.choice(self.fhir_resources())
        values: dict[str, Any] = {
            "resource_type": resource_type,
            "resource_id": resource_id,
            "version_id": pick.choice([1, 1, 2]),
        }
        if self.audit_events:
            values["audit_id"] = pick.choice(self.audit_events)
        return values
