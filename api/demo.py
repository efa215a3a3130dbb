"""Demonstration plans: a handful of realistic IPT courses to try the service with.

One course per problem area (grief, role dispute, role transition, interpersonal
deficits), each with attended sessions and a PHQ-9 course, homework with the patient's
report, and one contract renegotiated midway. The plans are written as a client's
requests would write them: each body is loaded with the API's own schemas and handed to
the service layer, so every domain rule applies and every plan is published to the FHIR
views as any write is. Dates are counted back from today (a session cannot be documented
in the future). Every patient, therapist and story is invented.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from api.schemas import HomeworkFields, PlanCreateSchema, PlanPatchSchema, SessionFields
from service import homework, plans, sessions
from service.db import Database
from service.models import CarePlan

ACTOR = "ipt-careplans demo"


@dataclass(frozen=True)
class Task:
    """Homework given after a session, and what the patient reported of it (if due yet)."""

    after_session: int
    kind: str
    description: str
    report: str | None = None  # None: still open
    done: bool = True


@dataclass(frozen=True)
class Course:
    """One demonstration course: the plan's fields and what happened in it."""

    plan: Mapping[str, Any]
    weeks_ago: int  # the first session was this many weeks before today
    phq9: tuple[int | None, ...]  # one per session held, in order; None: a missed session
    homework: tuple[Task, ...] = ()
    # (after session N, new number of sessions, why): a renegotiated contract
    renegotiation: tuple[int, int, str] | None = None
    techniques: dict[int, tuple[str, ...]] = field(default_factory=dict)


INITIAL = ("interpersonal-inventory", "psychoeducation")
MIDDLE = ("communication-analysis", "encouragement-of-affect")

COURSES: tuple[Course, ...] = (
    Course(
        plan={
            "patient": "Patient/demo-ana-lima",
            "problem_areas": ["grief"],
            "planned_sessions": 12,
            "therapist": "Practitioner/demo-dr-rivera",
            "formulation": "Depressive episode since her mother died in the spring: she has "
            "avoided her mother's friends and the places they shared, and has stopped singing "
            "in the choir they joined together.",
        },
        weeks_ago=9,
        phq9=(19, 18, 17, 15, 14, 12, 10, 9, 8),
        homework=(
            Task(
                3,
                "reflect-on-conversation",
                "Write down what you would have liked to tell your mother in the hospital.",
                "Wrote two pages; cried, then slept well.",
            ),
            Task(
                6,
                "reconnect",
                "Call your mother's friend Teresa and suggest a coffee.",
                "We met on Sunday and looked at old photos together.",
            ),
            Task(9, "try-new-interaction", "Go to one choir rehearsal, even just to listen."),
        ),
        techniques={4: ("encouragement-of-affect", "nondirective-exploration")},
    ),
    Course(
        plan={
            "patient": "Patient/demo-ben-okafor",
            "problem_areas": ["role-dispute"],
            "dispute_stage": "renegotiation",
            "planned_sessions": 12,
            "therapist": "Practitioner/demo-dr-rivera",
            "formulation": "Low mood and irritability since his wife went back to full-time "
            "work: each expects the other to take over the evenings with the children, and "
            "their arguments end in days of silence.",
        },
        weeks_ago=6,
        phq9=(16, 15, 15, None, 13, 11),
        homework=(
            Task(
                3,
                "observe-interaction",
                "Note what happens just before the next argument about the evenings starts.",
                "It starts when I come home late without calling.",
            ),
            Task(
                6,
                "assertive-practice",
                "Ask for one evening a week for football, in a "
                "calm moment, as practised in the session.",
                None,
            ),
        ),
        techniques={5: ("communication-analysis", "role-play"), 6: ("role-play",)},
    ),
    Course(
        plan={
            "patient": "Patient/demo-carla-nowak",
            "problem_areas": ["role-transition"],
            "planned_sessions": 12,
            "therapist": "Practitioner/demo-dr-chen",
            "formulation": "Depression began after she retired from nursing: she misses the "
            "team and feeling useful, and sees the days ahead as empty.",
        },
        weeks_ago=11,
        phq9=(21, 20, 20, 19, 18, 18, 17, 16, 15, 14, 13),
        homework=(
            Task(
                4,
                "reflect-on-conversation",
                "List what you valued in your work and what you are glad to leave behind.",
                "The list of good things was longer.",
            ),
            Task(
                8,
                "try-new-interaction",
                "Ask at the library about volunteering in the reading group.",
                "They need someone on Tuesdays; I start next week.",
            ),
            Task(11, "reconnect", "Invite two former colleagues to lunch.", None),
        ),
        renegotiation=(
            8,
            16,
            "Slow progress (PHQ-9 still moderately severe at session 8): four sessions "
            "added, agreed with the patient.",
        ),
        techniques={8: ("decision-analysis", "clarification")},
    ),
    Course(
        plan={
            "patient": "Patient/demo-david-haas",
            "problem_areas": ["interpersonal-deficits"],
            "planned_sessions": 12,
            "therapist": "Practitioner/demo-dr-chen",
            "formulation": "Recurrent depression with long-standing loneliness: he moved to "
            "the city for work three years ago and has no one to call in the evenings.",
        },
        weeks_ago=4,
        phq9=(14, 14, 13, 12),
        homework=(
            Task(
                2,
                "observe-interaction",
                "Notice one short conversation at work and how you felt during it.",
                "Talked with a colleague about cycling; felt awkward, then fine.",
            ),
            Task(
                4, "try-new-interaction", "Join the Saturday group ride of the cycling club.", None
            ),
        ),
        techniques={3: ("use-of-therapeutic-relationship", "clarification")},
    ),
)


class DemoRefused(Exception):
    """The database already holds plans: demonstration data would mix with them."""


def plan_count(database: Database) -> int:
    """The plans the database holds (deleted ones aside)."""
    with database.reading() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(CarePlan).where(CarePlan.deleted_at.is_(None))
            )
            or 0
        )


def load(database: Database, *, force: bool = False, today: date | None = None) -> list[str]:
    """Write the demonstration plans; their ids. Refused when plans exist, unless ``force``."""
    existing = plan_count(database)
    if existing and not force:
        raise DemoRefused(f"the database already holds {existing} care plan(s)")
    today = today or date.today()
    return [_write(database, course, today) for course in COURSES]


def _write(database: Database, course: Course, today: date) -> str:
    start = today - timedelta(weeks=course.weeks_ago)
    body = PlanCreateSchema().load({**course.plan, "start_date": start.isoformat()})
    plan_id = plans.create_plan(database, body, ACTOR).id
    tasks = {task.after_session: task for task in course.homework}
    for index, score in enumerate(course.phq9):
        number = index + 1
        held = start + timedelta(weeks=index)
        session: dict[str, Any] = {"number": number, "date": held.isoformat()}
        if score is None:
            session["status"] = "no-show"
        else:
            session["status"] = "attended"
            session["phq9_total"] = score
            default = INITIAL if number <= 3 else MIDDLE
            session["techniques"] = list(course.techniques.get(number, default))
        sessions.record_session(database, plan_id, SessionFields().load(session), ACTOR)
        if course.renegotiation and course.renegotiation[0] == number:
            _, planned, reason = course.renegotiation
            change = {"planned_sessions": planned, "contract_change_reason": reason}
            plans.update_plan(database, plan_id, PlanPatchSchema(partial=True).load(change), ACTOR)
        if number in tasks:
            _give(database, plan_id, tasks[number], held)
    return plan_id


def _give(database: Database, plan_id: str, task: Task, on: date) -> None:
    """Assign homework on the day of a session, due a week later, and record its outcome."""
    given = {
        "kind": task.kind,
        "description": task.description,
        "assigned_on": on.isoformat(),
        "due_on": (on + timedelta(weeks=1)).isoformat(),
    }
    assigned = homework.assign_homework(database, plan_id, HomeworkFields().load(given), ACTOR)
    if task.report is not None:
        outcome = {
            "status": "completed" if task.done else "not-done",
            "patient_report": task.report,
        }
        homework.update_homework(
            database, plan_id, assigned.id, HomeworkFields(partial=True).load(outcome), ACTOR
        )
