"""A care plan's progress: scores, goals, attendance, homework, safety signals and phases."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, cast

from flask import Flask, Response, current_app
from flask.views import MethodView

from api.audit import note_patient
from api.http import (
    IF_NONE_MATCH,
    ApiBlueprint,
    database,
    documented,
    names_tag,
    read_connection,
    unchanged,
)
from api.measurement_examples import PROGRESS
from api.measurement_schemas import PlanProgressSchema
from api.rendered_cache import RenderedCache
from service import course
from service.models import utcnow

blp = ApiBlueprint(
    "progress",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>/progress",
    description="Where a plan stands: its course of scores against the baseline, its goals, "
    "attendance, homework, open safety signals and phases.",
)


PROGRESS_ETAG_HEADER = {
    "ETag": {
        "description": 'The plan\'s version and the day the document is of, e.g. "7-20261203"',
        "schema": {"type": "string"},
    }
}


@blp.route("")
class PlanProgress(MethodView):
    @blp.response(200, PlanProgressSchema, example=PROGRESS, headers=PROGRESS_ETAG_HEADER)
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

        The ETag names the plan's version and the day the document was computed
        (`"7-20261203"`: homework comes due and `as_of` moves with the day): every
        change to the plan or anything in it (a score, a session, a goal, homework, a
        safety signal, a phase) gives a new version, so `If-None-Match` answers 304
        while nothing has changed that day.
        """
        cache = progress_cache()
        today = utcnow().date()
        cached: bytes | None = None

        def held(head: course.PlanHead) -> bool:
            """Whether the client holds this document, or the cache does (``cached``)."""
            nonlocal cached
            if names_tag(progress_etag(head.version, head.as_of)):
                return True
            cached = cache.get(head.plan_id, head.key)
            return cached is not None

        # The plan's row first, as one statement: most reads end there (304, or a kept
        # document). Otherwise the document is read in one transaction, which reads the
        # row again: it may have changed since.
        found: course.PlanHead | course.PlanProgress
        found = course.plan_head(read_connection(), plan_id, today)
        if not held(found):
            found = course.progress_unless(database(), plan_id, held, today)
        note_patient(found.patient)
        tag = progress_etag(found.version, found.as_of)
        if isinstance(found, course.PlanHead):
            if cached is None:
                return unchanged(found.version, tag)
            body = cached
        else:
            computed = cast(Response, current_app.json.response(document(found)))
            body = computed.get_data()
            cache.put(found.plan_id, found.key, body)
        # The same construction whether the body was kept or computed: the same bytes.
        response = Response(body, mimetype="application/json")
        response.headers["ETag"] = tag
        return response


CACHE = "ipt_progress_cache"


def install_cache(app: Flask, entries: int) -> None:
    """Give the app its cache of rendered progress documents (IPT_PROGRESS_CACHE_ENTRIES)."""
    app.extensions[CACHE] = RenderedCache(entries)


def progress_cache() -> RenderedCache:
    """The current app's cache of rendered progress documents."""
    cache: RenderedCache = current_app.extensions[CACHE]
    return cache


def progress_etag(version: int, as_of: date) -> str:
    """The ETag of a plan's progress: its version and the day it was computed."""
    return f'"{version}-{as_of:%Y%m%d}"'


# --- the document -----------------------------------------------------------------------------
# Written field by field, as PlanProgressSchema describes it (the schema documents the
# response; dumping through it would cost more than reading the plan).


def _date(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _number(value: Decimal | None) -> int | float | None:
    """A target's value as the API's scores are written: whole numbers without a point."""
    if value is None:
        return None
    number = Decimal(value)
    return int(number) if number == number.to_integral_value() else float(number)


def document(found: course.PlanProgress) -> dict[str, Any]:
    """The progress of a plan as the API returns it."""
    return {
        "plan_id": found.plan_id,
        "patient": found.patient,
        "version": found.version,
        "status": found.status,
        "variant": found.variant,
        "start_date": _date(found.start_date),
        "as_of": _date(found.as_of),
        "instruments": [
            {
                "instrument": c.instrument,
                "name": c.name,
                "scores": [
                    {
                        "id": s.id,
                        "administered_on": _date(s.administered_on),
                        "session_number": s.session_number,
                        "total": s.total,
                        "band_code": s.band_code,
                        "band_display": s.band_display,
                        "source": s.source,
                        "change": s.change,
                        "flagged": s.flagged,
                    }
                    for s in c.scores
                ],
                "baseline": c.baseline,
                "latest": c.latest,
                "change": c.change,
                "band_code": c.band_code,
                "band_display": c.band_display,
                "response": c.response,
                "remission": c.remission,
            }
            for c in found.instruments
        ],
        "goals": [
            {
                "id": g.id,
                "kind": g.kind,
                "problem_area": g.problem_area,
                "description": g.description,
                "lifecycle_status": g.lifecycle_status,
                "achievement_status": g.achievement_status,
                "achievement_source": g.achievement_source,
                "target": None
                if g.target is None
                else {
                    "measure": g.target["measure"],
                    "comparator": g.target["comparator"],
                    "value": _number(g.target["value"]),
                    "due_date": _date(g.target["due_date"]),
                },
            }
            for g in found.goals
        ],
        "attendance": {
            "attended": found.attendance.attended,
            "no_show": found.attendance.no_show,
            "cancelled": found.attendance.cancelled,
            "scheduled": found.attendance.scheduled,
            "planned_sessions": found.attendance.planned_sessions,
            "longest_no_show_run": found.attendance.longest_no_show_run,
        },
        "homework": {
            "assigned": found.homework.assigned,
            "in_progress": found.homework.in_progress,
            "completed": found.homework.completed,
            "not_done": found.homework.not_done,
            "cancelled": found.homework.cancelled,
            "due": found.homework.due,
            "completion_rate": found.homework.completion_rate,
        },
        "open_safety_signals": [
            {
                "id": s.id,
                "administration_id": s.administration_id,
                "instrument": s.instrument,
                "item": s.item,
                "score": s.score,
                "raised_on": _date(s.raised_on),
            }
            for s in found.open_safety_signals
        ],
        "phases": [
            {
                "code": p.code,
                "status": p.status,
                "start_session": p.start_session,
                "end_session": p.end_session,
                "start_date": _date(p.start_date),
                "end_date": _date(p.end_date),
            }
            for p in found.phases
        ],
    }
