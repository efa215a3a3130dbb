"""A plan's course drawn and printed: the progress chart (SVG or PNG) and the summary page.

Both are built from the plan's progress (service/course.py), read in one transaction, so
the chart shows what `GET …/progress` answers; the ETag of both is that of the progress
(the plan's version and the day: the chart's subtitle and the page name the day).
"""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView
from marshmallow import Schema, validate
from marshmallow.fields import String

from api.audit import note_patient
from api.http import (
    IF_NONE_MATCH,
    ApiBlueprint,
    database,
    documented,
    names_tag,
    unchanged,
)
from api.problems import problem
from api.progress import PROGRESS_ETAG_HEADER, progress_etag
from api.progress_chart import ChartBand, ChartInput, ChartPhase, ChartPoint, render_png, render_svg
from api.summary_page import ScoreRow, summary_html
from service import course
from service.codes import PHASE_DISPLAY, PhaseCode
from service.instruments import INSTRUMENTS, PHQ9

SVG = "image/svg+xml"
PNG = "image/png"
HTML = "text/html"

blp = ApiBlueprint(
    "progress-documents",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>",
    description="A plan's course of scores as a chart, and the plan as a printable page.",
)


def _content(description: str, *media_types: str) -> dict[str, Any]:
    """The 200 response of a document route, for the OpenAPI document."""
    binary = {"type": "string", "format": "binary"}
    content = {m: {"schema": binary if m == PNG else {"type": "string"}} for m in media_types}
    return {
        "200": {"description": description, "headers": PROGRESS_ETAG_HEADER, "content": content}
    }


class ChartQuerySchema(Schema):
    instrument = String(
        load_default=PHQ9.key,
        validate=validate.OneOf(list(INSTRUMENTS)),
        metadata={"description": "The scale whose scores are drawn (default phq-9)."},
    )


def chart_input(progress: course.PlanProgress, instrument_key: str) -> ChartInput:
    """The chart of one instrument's course in a plan's progress."""
    instrument = INSTRUMENTS[instrument_key]
    found = next((c for c in progress.instruments if c.instrument == instrument.key), None)
    scores = found.scores if found is not None else []
    return ChartInput(
        title=f"{instrument.name} course, care plan {progress.plan_id}",
        subtitle=(
            f"{progress.patient} · {progress.variant} IPT from "
            f"{progress.start_date.isoformat()} · as of {progress.as_of.isoformat()}"
        ),
        instrument=instrument.name,
        min_score=instrument.min_score,
        max_score=instrument.max_score,
        bands=[ChartBand(b.low, b.high, b.display) for b in instrument.bands],
        remission_below=instrument.remission_below,
        points=[
            ChartPoint(s.administered_on, s.session_number, s.total, s.band_display, s.flagged)
            for s in scores
        ],
        phases=[
            ChartPhase(PHASE_DISPLAY[PhaseCode(p.code)], p.start_date, p.end_date)
            for p in progress.phases
            if p.start_date is not None
        ],
        **({"flag_label": None} if instrument.safety_item is None else {}),
    )


def _document(body: bytes | str, mimetype: str, tag: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Vary"] = "Accept"
    return response


@blp.route("/progress.svg")
class ProgressChart(MethodView):
    @blp.arguments(ChartQuerySchema, location="query")
    @blp.doc(responses=_content("The chart (SVG; PNG on Accept: image/png)", SVG, PNG))
    @documented(blp, 304, 404, 406, 410, 422, parameters=[IF_NONE_MATCH])
    def get(self, query: dict[str, Any], plan_id: str) -> Any:
        """Draw a care plan's course of scores

        The scores of one scale (`instrument`, default PHQ-9) over time, with its severity
        bands shaded and named, the phase boundaries, the remission line and a ring around
        each administration whose safety item (PHQ-9 item 9) was answered above 0; titled
        and labelled so that it reads alone and prints, with a title and a description for
        screen readers. SVG by default; PNG when the `Accept` header prefers `image/png`.
        """
        kind = request.accept_mimetypes.best_match([SVG, PNG])
        if kind is None:
            return problem(406, "the chart is served as image/svg+xml or image/png")
        progress = course.plan_progress(database(), plan_id)
        note_patient(progress.patient)
        tag = progress_etag(progress.version, progress.as_of)
        if names_tag(tag):
            return unchanged(progress.version, tag)
        chart = chart_input(progress, query["instrument"])
        body = render_png(chart) if kind == PNG else render_svg(chart)
        return _document(body, kind, tag)


@blp.route("/summary")
class PlanSummary(MethodView):
    @blp.doc(responses=_content("The printable summary page", HTML))
    @documented(blp, 304, 404, 406, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str) -> Any:
        """Print a care plan's summary

        One self-contained HTML page for the clinician and the patient, laid out for A4:
        the problem areas and formulation, the treatment contract and its renegotiations,
        the phases, the goals and their status, the PHQ-9 chart and the table of scores,
        the homework and the relapse-prevention plan. A browser's "Print" or "Save as PDF"
        gives the paper or PDF copy.
        """
        if request.accept_mimetypes.best_match([HTML]) is None:
            return problem(406, "the summary is served as text/html")
        progress = course.plan_progress(database(), plan_id)
        note_patient(progress.patient)
        tag = progress_etag(progress.version, progress.as_of)
        if names_tag(tag):
            return unchanged(progress.version, tag)
        rows = [
            ScoreRow(
                s.administered_on, s.session_number, c.name, s.total, s.band_display, s.flagged
            )
            for c in progress.instruments
            for s in c.scores
        ]
        page = summary_html(
            database(), plan_id, chart_input(progress, PHQ9.key), rows, printed_on=progress.as_of
        )
        return _document(page, HTML, tag)
