"""Response schemas of a plan's progress and of the clinic's outcomes report.

Read-only documents computed by the service (service/course.py, service/outcomes.py):
nothing here is ever loaded from a request body.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.schemas import Date, Integer, Score, StrictSchema
from service import codes, outcomes, rules
from service.course import AchievementSource
from service.instruments import INSTRUMENTS, AdministrationSource


class ScorePointSchema(Schema):
    id = fields.String()
    administered_on = fields.Date()
    session_number = Integer(allow_none=True)
    total = Integer()
    band_code = fields.String(metadata={"example": "moderate"})
    band_display = fields.String(metadata={"example": "Moderate"})
    source = fields.String(validate=validate.OneOf([s.value for s in AdministrationSource]))
    change = Integer(metadata={"description": "The total minus the baseline: negative is better"})
    flagged = fields.Boolean(
        metadata={"description": "The instrument's safety item (PHQ-9 item 9) answered above 0"}
    )


class InstrumentCourseSchema(Schema):
    instrument = fields.String(validate=validate.OneOf(list(INSTRUMENTS)))
    name = fields.String(metadata={"example": "PHQ-9"})
    scores = fields.List(fields.Nested(ScorePointSchema))
    baseline = Integer(allow_none=True, metadata={"description": "The first score"})
    latest = Integer(allow_none=True, metadata={"description": "The last score"})
    change = Integer(allow_none=True, metadata={"description": "latest - baseline"})
    band_code = fields.String(allow_none=True, metadata={"description": "The latest's band"})
    band_display = fields.String(allow_none=True)
    response = fields.Boolean(
        allow_none=True, metadata={"description": "The latest at most half the baseline"}
    )
    remission = fields.Boolean(
        allow_none=True, metadata={"description": "The latest below the remission threshold"}
    )


class GoalTargetSchema(Schema):
    measure = fields.String(allow_none=True, metadata={"example": "44261-6"})
    comparator = fields.String(allow_none=True, metadata={"example": "<"})
    value = Score(allow_none=True, metadata={"example": 5})
    due_date = fields.Date(allow_none=True)


class GoalProgressSchema(Schema):
    id = fields.String()
    kind = fields.String(validate=validate.OneOf(codes.values(codes.GoalKind)))
    problem_area = fields.String(allow_none=True)
    description = fields.String()
    lifecycle_status = fields.String(
        validate=validate.OneOf(codes.values(codes.GoalLifecycleStatus))
    )
    achievement_status = fields.String(
        allow_none=True, validate=validate.OneOf(codes.values(codes.GoalAchievement))
    )
    achievement_source = fields.String(
        allow_none=True,
        validate=validate.OneOf([AchievementSource.RULES, AchievementSource.CLINICIAN]),
        metadata={
            "description": "rules: set from the scores of the goal's measure; clinician: set "
            "by hand (it stands until the next score of the measure)"
        },
    )
    target = fields.Nested(GoalTargetSchema, allow_none=True)


class AttendanceSchema(Schema):
    attended = Integer()
    no_show = Integer()
    cancelled = Integer()
    scheduled = Integer()
    planned_sessions = Integer(metadata={"description": "The current contract's"})
    longest_no_show_run = Integer(
        metadata={
            "description": "The most no-shows in a row in session order (an attended session "
            "ends a run; a cancelled one does not)"
        }
    )


class HomeworkCompletionSchema(Schema):
    assigned = Integer()
    in_progress = Integer()
    completed = Integer()
    not_done = Integer()
    cancelled = Integer()
    due = Integer(
        metadata={
            "description": "Tasks completed, not done, or past their due date (cancelled "
            "ones never are)"
        }
    )
    completion_rate = fields.Float(
        allow_none=True,
        metadata={
            "description": "completed / due; null when nothing is due",
            "minimum": 0,
            "maximum": 1,
        },
    )


class OpenSignalSchema(Schema):
    id = fields.String()
    administration_id = fields.String()
    instrument = fields.String()
    item = fields.String()
    score = Integer()
    raised_on = fields.Date()


class PhaseProgressSchema(Schema):
    code = fields.String(validate=validate.OneOf(codes.values(codes.PhaseCode)))
    status = fields.String(validate=validate.OneOf(codes.values(codes.PhaseStatus)))
    start_session = Integer()
    end_session = Integer()
    start_date = fields.Date(allow_none=True)
    end_date = fields.Date(allow_none=True)


class PlanProgressSchema(Schema):
    plan_id = fields.String()
    patient = fields.String(metadata={"example": "Patient/123"})
    version = Integer(metadata={"description": "The plan's version (the ETag)"})
    status = fields.String(validate=validate.OneOf(codes.values(codes.PlanStatus)))
    variant = fields.String(validate=validate.OneOf(codes.values(codes.Variant)))
    start_date = fields.Date()
    as_of = fields.Date(metadata={"description": "The day homework is counted due by"})
    instruments = fields.List(fields.Nested(InstrumentCourseSchema))
    goals = fields.List(fields.Nested(GoalProgressSchema))
    attendance = fields.Nested(AttendanceSchema)
    homework = fields.Nested(HomeworkCompletionSchema)
    open_safety_signals = fields.List(fields.Nested(OpenSignalSchema))
    phases = fields.List(fields.Nested(PhaseProgressSchema))


# --- the outcomes report ----------------------------------------------------------------------


class CellSchema(Schema):
    # A count is a whole number, a rate or mean a decimal: written as computed.
    value = fields.Raw(
        allow_none=True,
        metadata={
            "type": "number",
            "minimum": rules.INTEGER_MIN,
            "maximum": rules.INTEGER_MAX,
            "description": "null when the cell is suppressed",
        },
    )
    suppressed = fields.Boolean()
    reason = fields.String(
        metadata={"description": "Why the cell is suppressed (only on a suppressed cell)"}
    )


# One cell per figure of service/outcomes.py, in its order.
FiguresSchema: type[Schema] = type(
    "FiguresSchema",
    (Schema,),
    {
        "Meta": type("Meta", (), {"ordered": True}),
        **{name: fields.Nested(CellSchema) for name in outcomes.FIGURES},
    },
)


class ProblemAreaRowSchema(Schema):
    problem_area = fields.String(validate=validate.OneOf(codes.values(codes.ProblemArea)))
    figures = fields.Nested(FiguresSchema)


class VariantRowSchema(Schema):
    variant = fields.String(validate=validate.OneOf(codes.values(codes.Variant)))
    figures = fields.Nested(FiguresSchema)


class OutcomesReportSchema(Schema):
    from_ = fields.Date(data_key="from", attribute="from")
    to = fields.Date()
    problem_area = fields.String(allow_none=True)
    variant = fields.String(allow_none=True)
    minimum_patients = Integer(
        metadata={"description": "A cell computed from fewer distinct patients is suppressed"}
    )
    total = fields.Nested(FiguresSchema)
    by_problem_area = fields.List(fields.Nested(ProblemAreaRowSchema))
    by_variant = fields.List(fields.Nested(VariantRowSchema))


class OutcomesQuerySchema(StrictSchema):
    """The period (both days included) and the filters of the report."""

    from_ = Date(
        data_key="from",
        required=True,
        metadata={"description": "The first day of the period (YYYY-MM-DD)"},
    )
    to = Date(required=True, metadata={"description": "The last day of the period (YYYY-MM-DD)"})
    problem_area = fields.String(validate=validate.OneOf(codes.values(codes.ProblemArea)))
    variant = fields.String(validate=validate.OneOf(codes.values(codes.Variant)))
