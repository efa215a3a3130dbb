"""Examples of a plan's progress and of the outcomes report, for the OpenAPI document."""

from __future__ import annotations

from api.examples import PLAN_ID
from service.outcomes import COMPLEMENTARY, FEWER_THAN


def _score(
    number: int | None, day: str, total: int, band: tuple[str, str], change: int, flagged: bool
) -> dict[str, object]:
    return {
        "id": f"019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d{60 + (number or 0):02d}",
        "administered_on": day,
        "session_number": number,
        "total": total,
        "band_code": band[0],
        "band_display": band[1],
        "source": "items",
        "change": change,
        "flagged": flagged,
    }


PROGRESS = {
    "plan_id": PLAN_ID,
    "patient": "Patient/123",
    "version": 14,
    "status": "active",
    "variant": "standard",
    "start_date": "2026-01-05",
    "as_of": "2026-02-09",
    "instruments": [
        {
            "instrument": "phq-9",
            "name": "PHQ-9",
            "scores": [
                _score(1, "2026-01-05", 18, ("moderately-severe", "Moderately severe"), 0, True),
                _score(3, "2026-01-19", 14, ("moderate", "Moderate"), -4, False),
                _score(6, "2026-02-09", 8, ("mild", "Mild"), -10, False),
            ],
            "baseline": 18,
            "latest": 8,
            "change": -10,
            "band_code": "mild",
            "band_display": "Mild",
            "response": True,
            "remission": False,
        },
        {
            "instrument": "gad-7",
            "name": "GAD-7",
            "scores": [],
            "baseline": None,
            "latest": None,
            "change": None,
            "band_code": None,
            "band_display": None,
            "response": None,
            "remission": None,
        },
    ],
    "goals": [
        {
            "id": "019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d70",
            "kind": "symptom",
            "problem_area": None,
            "description": "PHQ-9 total below 5 by the end of the course.",
            "lifecycle_status": "active",
            "achievement_status": "improving",
            "achievement_source": "rules",
            "target": {"measure": "44261-6", "comparator": "<", "value": 5, "due_date": None},
        },
        {
            "id": "019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d71",
            "kind": "problem-area",
            "problem_area": "grief",
            "description": "Facilitate the mourning process.",
            "lifecycle_status": "active",
            "achievement_status": "in-progress",
            "achievement_source": "clinician",
            "target": None,
        },
    ],
    "attendance": {
        "attended": 5,
        "no_show": 1,
        "cancelled": 1,
        "scheduled": 1,
        "planned_sessions": 12,
        "longest_no_show_run": 1,
    },
    "homework": {
        "assigned": 1,
        "in_progress": 0,
        "completed": 3,
        "not_done": 1,
        "cancelled": 0,
        "due": 4,
        "completion_rate": 0.75,
    },
    "open_safety_signals": [
        {
            "id": "019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d80",
            "administration_id": "019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d61",
            "instrument": "phq-9",
            "item": "phq-9-9",
            "score": 1,
            "raised_on": "2026-01-05",
        }
    ],
    "phases": [
        {
            "code": "initial",
            "status": "completed",
            "start_session": 1,
            "end_session": 3,
            "start_date": "2026-01-05",
            "end_date": "2026-01-19",
        },
        {
            "code": "middle",
            "status": "active",
            "start_session": 4,
            "end_session": 9,
            "start_date": "2026-01-26",
            "end_date": None,
        },
        {
            "code": "termination",
            "status": "not-started",
            "start_session": 10,
            "end_session": 12,
            "start_date": None,
            "end_date": None,
        },
    ],
}

_SUPPRESSED = {
    "value": None,
    "suppressed": True,
    "reason": FEWER_THAN,
}


def _figures(started: int, closed: int, ended: int, scale: float) -> dict[str, object]:
    def cell(value: float | int) -> dict[str, object]:
        return {"value": value, "suppressed": False}

    return {
        "plans_started": cell(started),
        "plans_closed": cell(closed),
        "courses_ended": cell(ended),
        "dropouts": cell(round(ended * 0.2)),
        "dropout_rate": cell(round(round(ended * 0.2) / ended, 4)),
        "mean_sessions_attended": cell(round(10.4 * scale, 2)),
        "acute_courses_ended": cell(ended - round(ended * 0.2)),
        "measured": cell(ended - round(ended * 0.2)),
        "response_rate": cell(0.55),
        "remission_rate": cell(0.35),
        "mean_phq9_change": cell(round(-8.2 * scale, 2)),
    }


_SMALL = {name: dict(_SUPPRESSED) for name in _figures(1, 1, 1, 1)}
# Suppressed alone, the small row could be recomputed from the total: the next smallest goes too.
_COMPLEMENT = {
    name: {"value": None, "suppressed": True, "reason": COMPLEMENTARY}
    for name in _figures(1, 1, 1, 1)
}

OUTCOMES = {
    "from": "2026-01-01",
    "to": "2026-06-30",
    "problem_area": None,
    "variant": "standard",
    "minimum_patients": 5,
    "total": _figures(40, 31, 30, 1.0),
    "by_problem_area": [
        {"problem_area": "grief", "figures": _figures(12, 10, 10, 1.02)},
        {"problem_area": "role-dispute", "figures": _figures(15, 11, 10, 0.97)},
        {"problem_area": "role-transition", "figures": _COMPLEMENT},
        {"problem_area": "interpersonal-deficits", "figures": _SMALL},
    ],
    "by_variant": [{"variant": "standard", "figures": _figures(40, 31, 30, 1.0)}],
}
