"""A care plan's progress: scores, goals, attendance, homework, safety signals and phases."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask.views import MethodView

from api.audit import note_patient
from api.http import (
    ETAG_HEADER,
    IF_NONE_MATCH,
    ApiBlueprint,
    database,
    documented,
    not_modified,
    unchanged,
    versioned,
)
from api.measurement_examples import PROGRESS
from api.measurement_schemas import PlanProgressSchema
from service import course

blp = ApiBlueprint(
    "progress",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>/progress",
    description="Where a plan stands: its course of scores against the baseline, its goals, "
    "attendance, homework, open safety signals and phases.",
)


@blp.route("")
class PlanProgress(MethodView):
    @blp.response(200, PlanProgressSchema, example=PROGRESS, headers=ETAG_HEADER)
    @documented(blp, 304, 404, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str) -> Any:
        """Read a care plan's progress

        For each instrument (PHQ-9, GAD-7) the scores in the order they were taken, each
        with its band, its change from the baseline (the first score) and whether the
        safety item was answered above 0; the baseline, the latest score, the change, and
        whether the course is a response (the latest at most half the baseline) or a
        remission (the latest below 5). Beside them: each goal with its achievement status
        and whether the rules or a clinician set it; attendance (sessions by status, the
        contract's planned sessions, the longest run of no-shows); homework completion
        (completed of the tasks due); the open safety signals; the phases.

        The ETag is the plan's version: every change to the plan or anything in it
        (a score, a session, a goal) gives a new one, so `If-None-Match` answers 304
        while nothing has changed.
        """
        found = course.plan_progress(database(), plan_id)
        note_patient(found.patient)
        if not_modified(found.version):
            return unchanged(found.version)
        return versioned(asdict(found), found.version)
