"""Example payloads for the OpenAPI document: what an integrator copies first."""

from __future__ import annotations

PLAN_ID = "7d7c1b5e-2f4e-4a53-9a55-3c2b3f0b8d61"
_AUDIT = {
    "version": 1,
    "created_at": "2026-01-05T09:12:44+00:00",
    "created_by": "dr.rivera",
    "updated_at": "2026-01-05T09:12:44+00:00",
    "updated_by": "dr.rivera",
}

PLAN_CREATE = {
    "patient": "Patient/123",
    "problem_areas": ["grief"],
    "planned_sessions": 12,
    "start_date": "2026-01-05",
}

PLAN_CREATE_FULL = {
    "patient": "Patient/123",
    "problem_areas": ["role-dispute", "role-transition"],
    "dispute_stage": "renegotiation",
    "variant": "standard",
    "planned_sessions": 16,
    "session_frequency": "weekly",
    "start_date": "2026-01-05",
    "condition": "Condition/mdd-1",
    "therapist": "Practitioner/42",
    "formulation": "Depression began as arguments with her partner about moving abroad grew.",
    "identifiers": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "IPT-2026-0042"}],
}


def _phase(code: str, start: int, end: int, status: str) -> dict[str, object]:
    return {
        "code": code,
        "start_session": start,
        "end_session": end,
        "status": status,
        "start_date": None,
        "end_date": None,
        "description": None,
        **_AUDIT,
    }


PLAN = {
    "id": PLAN_ID,
    "patient": "Patient/123",
    "status": "active",
    "variant": "standard",
    "planned_sessions": 12,
    "session_frequency": "weekly",
    "start_date": "2026-01-05",
    "end_date": None,
    "expected_end_date": "2026-03-23",
    "problem_areas": ["grief"],
    "dispute_stage": None,
    "condition": None,
    "therapist": None,
    "formulation": None,
    "relapse_prevention": None,
    "notes": [],
    "identifiers": [],
    "phases": [
        _phase("initial", 1, 3, "not-started"),
        _phase("middle", 4, 9, "not-started"),
        _phase("termination", 10, 12, "not-started"),
    ],
    "contract_history": [
        {
            "sequence": 1,
            "planned_sessions": 12,
            "session_frequency": "weekly",
            "reason": None,
            "agreed_at": "2026-01-05T09:12:44+00:00",
            "agreed_by": "dr.rivera",
        }
    ],
    "links": {
        "self": f"/api/v1/care-plans/{PLAN_ID}",
        "phases": f"/api/v1/care-plans/{PLAN_ID}/phases",
        "goals": f"/api/v1/care-plans/{PLAN_ID}/goals",
        "homework": f"/api/v1/care-plans/{PLAN_ID}/homework",
        "sessions": f"/api/v1/care-plans/{PLAN_ID}/sessions",
        "administrations": f"/api/v1/care-plans/{PLAN_ID}/administrations",
        "safety-signals": f"/api/v1/care-plans/{PLAN_ID}/safety-signals",
        "changes": f"/api/v1/care-plans/{PLAN_ID}/changes",
    },
    "open_safety_signals": [],
    **_AUDIT,
}

PLAN_PATCH = {
    "planned_sessions": 16,
    "contract_change_reason": "Slow progress on the dispute; four sessions added by agreement.",
}

PHASE_PATCH = {"end_session": 4}

GOAL_CREATE = {
    "kind": "symptom",
    "description": "Response: PHQ-9 total at most 7 by session 8.",
    "priority": "high-priority",
    "target": {"measure": "44261-6", "comparator": "<=", "value": 7, "due_date": "2026-02-23"},
}

GOAL = {
    "id": "0b6f8a36-8d0c-4a3e-9d0e-4a4c1a1f7c2e",
    "plan_id": PLAN_ID,
    "kind": "problem-area",
    "problem_area": "grief",
    "description": "Facilitate the mourning process.",
    "lifecycle_status": "active",
    "achievement_status": "in-progress",
    "priority": "high-priority",
    "start_date": "2026-01-05",
    "target": {"measure": None, "comparator": None, "value": None, "due_date": "2026-03-23"},
    "phase": "middle",
    "notes": [],
    "achievement_source": "clinician",
    **_AUDIT,
}

HOMEWORK_CREATE = {
    "kind": "reconnect",
    "description": "Call your old running partner and suggest a walk.",
    "due_on": "2026-01-26",
}

HOMEWORK = {
    "id": "c3a0f1d2-55b4-4f0c-8c71-0f9e6b2d9a10",
    "plan_id": PLAN_ID,
    "phase": "middle",
    "goal_id": "0b6f8a36-8d0c-4a3e-9d0e-4a4c1a1f7c2e",
    "kind": "reconnect",
    "description": "Call your old running partner and suggest a walk.",
    "assigned_on": "2026-01-19",
    "due_on": "2026-01-26",
    "status": "completed",
    "patient_report": "We walked on Saturday; it felt awkward at first, then good.",
    **_AUDIT,
}

SESSION_CREATE = {
    "number": 1,
    "date": "2026-01-05",
    "status": "attended",
    "phq9_total": 17,
    "techniques": ["interpersonal-inventory", "psychoeducation"],
    "note": "Sick role given; inventory started.",
}

SESSION = {
    "id": "e1b7c4a9-3d2f-4c8e-b6a1-9f0d2e3c4b5a",
    "plan_id": PLAN_ID,
    **SESSION_CREATE,
    "administrations": [
        {
            "id": "01938a52-7c1e-7d40-9a6b-2f51c0e4d7a3",
            "instrument": "phq-9",
            "source": "total-only",
            "total": 17,
            "band": {"code": "moderately-severe", "display": "Moderately severe"},
        }
    ],
    **_AUDIT,
}

ADMINISTRATION_CREATE = {
    "instrument": "phq-9",
    "session_number": 2,
    "answered_by": "patient",
    "answers": {
        "phq-9-1": 2,
        "phq-9-2": 2,
        "phq-9-3": 1,
        "phq-9-4": 2,
        "phq-9-5": 1,
        "phq-9-6": 1,
        "phq-9-7": 1,
        "phq-9-8": 0,
        "phq-9-9": 1,
        "phq-9-difficulty": 1,
    },
}

ADMINISTRATION = {
    "id": "01938a5b-1f20-7b3c-8e4d-6a7b8c9d0e1f",
    "plan_id": PLAN_ID,
    "instrument": "phq-9",
    "administered_on": "2026-01-12",
    "session_number": 2,
    "answered_by": "patient",
    "source": "items",
    "answers": ADMINISTRATION_CREATE["answers"],
    "total": 11,
    "band": {"code": "moderate", "display": "Moderate"},
    "note": None,
    **_AUDIT,
}

SAFETY_SIGNAL = {
    "id": "01938a5b-1f21-7c2d-9e3f-4a5b6c7d8e9f",
    "plan_id": PLAN_ID,
    "administration_id": ADMINISTRATION["id"],
    "instrument": "phq-9",
    "item": "phq-9-9",
    "score": 1,
    "raised_on": "2026-01-12",
    "status": "open",
    "acknowledged_at": None,
    "acknowledged_by": None,
    "action_taken": None,
    **_AUDIT,
}

ACKNOWLEDGEMENT = {
    "action_taken": "Risk assessed in session: passive thoughts, no plan or intent; safety "
    "plan reviewed with the patient.",
}
