"""Request and response schemas of the native API (snake_case JSON).

The enumerations come from ``service.codes`` so that the OpenAPI document lists exactly the
codes the domain accepts.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_dump, validate

from service import codes, goals, instruments, plans, rules
from service.instants import InvalidInstant, parse_instant

MAX_PAGE_SIZE = 100


def _enum(enum: type[codes.StrEnum]) -> validate.OneOf:
    return validate.OneOf(codes.values(enum))


def _reference(example: str, description: str) -> dict[str, Any]:
    return {"description": description, "example": example}


class StrictSchema(Schema):
    """Unknown fields are an error, not silently dropped."""

    class Meta:
        unknown = RAISE
        ordered = True


# A whole number as text (a query parameter, or a JSON string): ASCII digits only, so that
# "1_000", " 12" or other scripts' digits are refused rather than read as a number.
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,20}")
# A decimal number as text, as JSON writes numbers.
_NUMBER_TEXT = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,4})?")


class Integer(fields.Integer):
    """A whole number between ``minimum`` and ``maximum``.

    Every integer of the API is one: the bounds default to the range of an integer column
    (32-bit on PostgreSQL), can only be narrowed, and are published in the OpenAPI document
    (``minimum``/``maximum``), so that nothing beyond what the database stores reaches it.
    A fraction (1.5) is refused rather than truncated.
    """

    def __init__(
        self, *, minimum: int = rules.INTEGER_MIN, maximum: int = rules.INTEGER_MAX, **kwargs: Any
    ) -> None:
        if not rules.INTEGER_MIN <= minimum <= maximum <= rules.INTEGER_MAX:
            raise ValueError(f"bounds {minimum}..{maximum} exceed an integer column")
        extra = kwargs.pop("validate", None)
        validators = [validate.Range(minimum, maximum)]
        if extra is not None:
            validators += list(extra) if isinstance(extra, list | tuple) else [extra]
        super().__init__(validate=validators, **kwargs)

    def _validated(self, value: Any) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        if isinstance(value, str) and not _INTEGER_TEXT.fullmatch(value):
            raise self.make_error("invalid")
        return int(super()._validated(value))


class Date(fields.Date):
    """A calendar date written YYYY-MM-DD (RFC 3339 full-date), the only form accepted.

    The domain bounds the dates it keeps (``service.rules``); this field reads the form.
    """

    default_error_messages = {"invalid": "Not a valid date: use YYYY-MM-DD."}

    _FORM = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str) or not self._FORM.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Score(fields.Field):
    """A score: read as an exact decimal, written as a JSON number.

    Finite, and within what the column stores (6 digits before the point, 3 after), so
    that no number reaches the database it cannot keep; each measure narrows it further.
    """

    LIMIT = Decimal("999999.999")

    def __init__(self, **kwargs: Any) -> None:
        bounds = {"type": "number", "minimum": -float(self.LIMIT), "maximum": float(self.LIMIT)}
        kwargs["metadata"] = {**bounds, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.make_error("invalid")
        if isinstance(value, str) and not _NUMBER_TEXT.fullmatch(value):
            raise self.make_error("invalid")
        try:
            number = Decimal(str(value))
        except ArithmeticError as error:
            raise self.make_error("invalid") from error
        if not number.is_finite():
            raise self.make_error("invalid")
        if not -self.LIMIT <= number <= self.LIMIT:
            raise self.make_error("range")
        return number

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        number = Decimal(value)
        return int(number) if number == number.to_integral_value() else float(number)

    default_error_messages = {
        "invalid": "Not a valid number.",
        "range": f"Must be between -{LIMIT} and {LIMIT}.",
    }


def _reference_to(*types: str) -> Any:
    """The domain's reference rule as a field validator: the same check, the same message."""

    def check(value: str) -> None:
        message = rules.reference_problem(value, types)
        if message is not None:
            raise ValidationError(message)

    return check


# --- shared parts -----------------------------------------------------------------------


class IdentifierSchema(StrictSchema):
    system = fields.String(
        load_default="",
        validate=validate.Length(1, 512),
        metadata={
            "description": "Namespace of the value (a URI). An identifier without one (as "
            "FHIR allows) leaves it out; its value is unique among identifiers without one",
            "example": "urn:oid:1.2.36.146.595.217.0.1",
        },
    )
    value = fields.String(
        required=True,
        validate=validate.Length(1, 255),
        metadata={
            "description": "The identifier, unique within its system",
            "example": "IPT-2026-0042",
        },
    )

    @post_dump
    def _without_empty_system(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if not data.get("system"):
            data.pop("system", None)
        return data


class NoteSchema(StrictSchema):
    text = fields.String(required=True, validate=validate.Length(1, 20_000))
    author = fields.String(
        allow_none=True, validate=validate.Length(1, 255), metadata={"example": "Dr A. Rivera"}
    )
    time = fields.String(
        allow_none=True,
        metadata={
            "format": "date-time",
            "description": "ISO 8601 date-time with offset",
            "example": "2026-01-12T10:30:00+00:00",
        },
    )


class ContactSchema(StrictSchema):
    name = fields.String(
        required=True, validate=validate.Length(1, 255), metadata={"example": "Sister (Maria)"}
    )
    relationship = fields.String(allow_none=True, validate=validate.Length(1, 255))
    telecom = fields.String(
        allow_none=True,
        validate=validate.Length(1, 255),
        metadata={"description": "Phone number or other way to reach them"},
    )


class RelapsePreventionSchema(StrictSchema):
    warning_signs = fields.List(
        fields.String(validate=validate.Length(1, 2000)),
        load_default=list,
        metadata={"example": ["Withdrawing from friends", "Sleeping badly for more than a week"]},
    )
    actions = fields.List(
        fields.String(validate=validate.Length(1, 2000)),
        load_default=list,
        metadata={"example": ["Call a friend the same day", "Book a booster session"]},
    )
    contacts = fields.List(fields.Nested(ContactSchema), load_default=list)


class Identified(Schema):
    id = fields.String(dump_only=True, metadata={"example": "019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d61"})


class PlanMember(Identified):
    plan_id = fields.String(dump_only=True)


class Audited(Schema):
    """Who created and last changed a record, and when; its version (also its ETag)."""

    version = Integer(
        minimum=1, dump_only=True, metadata={"description": "Increments on every change; the ETag"}
    )
    created_at = fields.DateTime(dump_only=True)
    created_by = fields.String(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    updated_by = fields.String(dump_only=True)


# --- care plans ---------------------------------------------------------------------------


class PhaseSchema(Audited, StrictSchema, PlanMember):
    code = fields.String(
        dump_only=True, validate=_enum(codes.PhaseCode), metadata={"example": "initial"}
    )
    start_session = Integer(minimum=1, metadata={"example": 1})
    end_session = Integer(minimum=1, metadata={"example": 3})
    status = fields.String(validate=_enum(codes.PhaseStatus), metadata={"example": "active"})
    start_date = Date(allow_none=True)
    end_date = Date(allow_none=True)
    description = fields.String(allow_none=True, validate=validate.Length(1, 20_000))


class PhasePatchSchema(PhaseSchema):
    """Any subset of a phase's writable fields."""


class ContractSchema(Schema):
    sequence = Integer(minimum=1, metadata={"description": "1 for the first contract, then 2, 3…"})
    planned_sessions = Integer(minimum=1)
    session_frequency = fields.String(validate=_enum(codes.Frequency))
    reason = fields.String(allow_none=True)
    agreed_at = fields.DateTime()
    agreed_by = fields.String()


class PlanFields(StrictSchema):
    """The fields of a care plan a client writes."""

    patient = fields.String(
        required=True,
        validate=validate.Length(1, 512),
        metadata=_reference("Patient/123", "The EHR's Patient reference (relative or absolute)"),
    )
    status = fields.String(
        validate=_enum(codes.PlanStatus),
        metadata={
            "description": "FHIR request-status; a new plan is draft or active (the default)",
            "example": "active",
        },
    )
    variant = fields.String(
        validate=_enum(codes.Variant),
        metadata={"description": "IPT format; default standard", "example": "standard"},
    )
    planned_sessions = Integer(
        minimum=1,
        metadata={
            "description": "Sessions agreed in the treatment contract (default per variant)",
            "example": 12,
        },
    )
    session_frequency = fields.String(
        validate=_enum(codes.Frequency),
        metadata={
            "description": "How often sessions take place (default per variant)",
            "example": "weekly",
        },
    )
    start_date = Date(required=True, metadata={"example": "2026-01-05"})
    end_date = Date(allow_none=True, metadata={"description": "Planned end, if agreed"})
    problem_areas = fields.List(
        fields.String(validate=_enum(codes.ProblemArea)),
        required=True,
        validate=validate.Length(
            1,
            codes.MAX_PROBLEM_AREAS,
            error="an IPT plan works on one or two problem areas "
            "(a primary and an optional secondary)",
        ),
        metadata={
            "description": "The primary problem area, then an optional secondary one",
            "example": ["grief"],
        },
    )
    dispute_stage = fields.String(
        allow_none=True,
        validate=_enum(codes.DisputeStage),
        metadata={"description": "Stage of the role dispute (role-dispute plans only)"},
    )
    condition = fields.String(
        allow_none=True,
        validate=validate.Length(1, 512),
        metadata=_reference("Condition/mdd-1", "The depression Condition the plan addresses"),
    )
    therapist = fields.String(
        allow_none=True,
        validate=validate.Length(1, 512),
        metadata=_reference(
            "Practitioner/42", "The treating therapist (Practitioner or PractitionerRole)"
        ),
    )
    formulation = fields.String(
        allow_none=True,
        validate=validate.Length(1, 20_000),
        metadata={"description": "The interpersonal formulation agreed with the patient"},
    )
    relapse_prevention = fields.Nested(RelapsePreventionSchema, allow_none=True)
    notes = fields.List(fields.Nested(NoteSchema))
    identifiers = fields.List(
        fields.Nested(IdentifierSchema),
        metadata={"description": "External identifiers; a system+value pair names one plan only"},
    )


class PlanCreateSchema(PlanFields):
    default_goals = fields.Boolean(
        load_default=True,
        load_only=True,
        metadata={
            "description": "Create the canonical goals of each problem area and the PHQ-9 "
            "symptom goal (default true)"
        },
    )
    contract_change_reason = fields.String(
        load_only=True,
        allow_none=True,
        validate=validate.Length(1, 2000),
        metadata={"description": "Notes on the initial treatment contract"},
    )


class PlanPatchSchema(PlanFields):
    open_goals = fields.Raw(
        load_only=True,
        allow_none=True,
        metadata={
            "description": "With `status` completed: what becomes of the goals still open "
            '(proposed, planned, accepted, active, on-hold). `"resolve"` completes each: a '
            "symptom goal achieved when its last score meets its target (achieved or "
            "sustaining), otherwise not-achieved, every other goal not-achieved. Or an object "
            'of goal ids, each `"resolve"` or `{lifecycle_status, achievement_status}` '
            "(lifecycle completed, cancelled, rejected or entered-in-error), listing every "
            "open goal. Without it a plan with open goals is not completed (422 names them)",
            "oneOf": [
                {"type": "string", "enum": ["resolve"]},
                {
                    "type": "object",
                    "additionalProperties": {
                        "oneOf": [
                            {"type": "string", "enum": ["resolve"]},
                            {
                                "type": "object",
                                "properties": {
                                    "lifecycle_status": {
                                        "type": "string",
                                        "enum": codes.values(codes.GoalLifecycleStatus),
                                    },
                                    "achievement_status": {
                                        "type": "string",
                                        "enum": codes.values(codes.GoalAchievement),
                                    },
                                },
                                "additionalProperties": False,
                            },
                        ]
                    },
                },
            ],
            "example": "resolve",
        },
    )
    contract_change_reason = fields.String(
        load_only=True,
        allow_none=True,
        validate=validate.Length(1, 2000),
        metadata={
            "description": "Why the contract (planned_sessions, session_frequency) was renegotiated"
        },
    )


class PlanSchema(Audited, PlanFields, Identified):
    expected_end_date = fields.Method(
        "_expected_end_date",
        dump_only=True,
        metadata={
            "type": "string",
            "format": "date",
            "description": "end_date, or the date of the last session if all happen on schedule",
        },
    )
    phases = fields.List(fields.Nested(PhaseSchema), dump_only=True)
    contract_history = fields.List(
        fields.Nested(ContractSchema),
        dump_only=True,
        attribute="contracts",
        metadata={"description": "Every treatment contract, the current one last"},
    )
    open_safety_signals = fields.Method(
        "_open_safety_signals",
        dump_only=True,
        metadata={
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "instrument": {"type": "string"},
                    "item": {"type": "string"},
                    "score": {"type": "integer", "minimum": 1, "maximum": 3},
                    "raised_on": {"type": "string", "format": "date"},
                    "administration_id": {"type": "string"},
                },
            },
            "description": "Safety signals not yet acknowledged (PHQ-9 item 9 answered above "
            "0), oldest first: see the plan's safety-signals",
        },
    )
    links = fields.Method(
        "_links",
        dump_only=True,
        metadata={
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "The plan and its phases, goals, homework, sessions, "
            "administrations, safety signals and changes",
        },
    )

    def _open_safety_signals(self, plan: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": signal.id,
                "instrument": signal.instrument,
                "item": signal.item,
                "score": signal.score,
                "raised_on": signal.raised_on.isoformat(),
                "administration_id": signal.administration_id,
            }
            for signal in getattr(plan, "open_safety_signals", None) or []
        ]

    def _expected_end_date(self, plan: Any) -> str:
        return plans.expected_end_date(plan).isoformat()

    def _links(self, plan: Any) -> dict[str, str]:
        base = f"/api/v1/care-plans/{plan.id}"
        parts = (
            "phases",
            "goals",
            "homework",
            "sessions",
            "administrations",
            "safety-signals",
            "changes",
        )
        return {"self": base, **{part: f"{base}/{part}" for part in parts}}


class ChangeSchema(Schema):
    plan_version = Integer(minimum=1, metadata={"description": "Plan version this change produced"})
    entity = fields.String(metadata={"example": "session"})
    entity_id = fields.String()
    action = fields.String(validate=validate.OneOf(["create", "update", "delete"]))
    fields_ = fields.List(fields.String(), data_key="fields", attribute="fields")
    actor = fields.String()
    at = fields.DateTime()


# --- goals ----------------------------------------------------------------------------------


class TargetSchema(StrictSchema):
    measure = fields.String(
        allow_none=True,
        validate=validate.OneOf(list(codes.MEASURES)),
        metadata={
            "description": "LOINC code of the scale: "
            + ", ".join(f"{m.code} {m.display}" for m in codes.MEASURES.values()),
            "example": "44261-6",
        },
    )
    comparator = fields.String(
        allow_none=True, validate=_enum(codes.Comparator), metadata={"example": "<"}
    )
    value = Score(allow_none=True, metadata={"example": 5})
    due_date = Date(allow_none=True, metadata={"example": "2026-03-23"})


class GoalFields(StrictSchema):
    kind = fields.String(
        required=True, validate=_enum(codes.GoalKind), metadata={"example": "problem-area"}
    )
    problem_area = fields.String(
        allow_none=True,
        validate=_enum(codes.ProblemArea),
        metadata={
            "description": "Required for a problem-area goal; one of the plan's areas",
            "example": "grief",
        },
    )
    description = fields.String(
        required=True,
        validate=validate.Length(1, 20_000),
        metadata={"example": "Facilitate the mourning process."},
    )
    lifecycle_status = fields.String(
        validate=_enum(codes.GoalLifecycleStatus),
        metadata={"description": "FHIR goal-status; default active (proposed in a draft plan)"},
    )
    achievement_status = fields.String(allow_none=True, validate=_enum(codes.GoalAchievement))
    priority = fields.String(allow_none=True, validate=_enum(codes.GoalPriority))
    start_date = Date(allow_none=True, metadata={"description": "Default: the plan's start"})
    target = fields.Nested(TargetSchema, allow_none=True)
    phase = fields.String(allow_none=True, validate=_enum(codes.PhaseCode))
    notes = fields.List(fields.Nested(NoteSchema))


class GoalPatchSchema(GoalFields):
    """Any subset of a goal's fields."""


class GoalSchema(Audited, GoalFields, PlanMember):
    """A stored record as the service returns it."""

    achievement_source = fields.Function(
        goals.achievement_source,
        dump_only=True,
        metadata={
            "type": "string",
            "enum": ["rules", "clinician"],
            "description": "Who set achievement_status: `rules` (a symptom goal on the total "
            "of a recorded instrument follows its scores) or `clinician` (set by hand; it "
            "stands until the next score of the goal's measure is recorded, changed or "
            "deleted, and always for other goals)",
        },
    )


# --- homework -------------------------------------------------------------------------------


class HomeworkFields(StrictSchema):
    phase = fields.String(
        validate=_enum(codes.PhaseCode),
        metadata={"description": "Default: the phase in progress", "example": "middle"},
    )
    goal_id = fields.String(allow_none=True, metadata={"description": "The goal it serves, if any"})
    kind = fields.String(
        required=True, validate=_enum(codes.HomeworkKind), metadata={"example": "reconnect"}
    )
    description = fields.String(
        required=True,
        validate=validate.Length(1, 20_000),
        metadata={"example": "Call your old running partner and suggest a walk."},
    )
    assigned_on = Date(metadata={"description": "Default: today"})
    due_on = Date(allow_none=True, metadata={"description": "Not before assigned_on"})
    status = fields.String(validate=_enum(codes.HomeworkStatus), metadata={"example": "assigned"})
    patient_report = fields.String(
        allow_none=True,
        validate=validate.Length(1, 20_000),
        metadata={"description": "What the patient reports of it"},
    )


class HomeworkPatchSchema(HomeworkFields):
    """Any subset of a homework's fields."""


class HomeworkSchema(Audited, HomeworkFields, PlanMember):
    """A stored record as the service returns it."""


# --- sessions -------------------------------------------------------------------------------


class SessionFields(StrictSchema):
    number = Integer(
        minimum=1,
        required=True,
        metadata={"description": "1..planned_sessions; the session's address", "example": 1},
    )
    date = Date(allow_none=True, metadata={"description": "Required once attended or missed"})
    status = fields.String(validate=_enum(codes.SessionStatus), metadata={"example": "attended"})
    phq9_total = Integer(
        minimum=0,
        maximum=codes.PHQ9_MAX,
        allow_none=True,
        metadata={
            "description": "PHQ-9 total score (LOINC 44261-6), attended sessions only: the "
            "total of the session's PHQ-9 administration. Writing it records (or changes) a "
            "total-only PHQ-9 administration of the session, null removes it; a session whose "
            "PHQ-9 was answered item by item refuses another total",
            "example": 14,
        },
    )
    techniques = fields.List(fields.String(validate=_enum(codes.Technique)))
    note = fields.String(allow_none=True, validate=validate.Length(1, 2000))


class SessionPatchSchema(SessionFields):
    class Meta:
        exclude = ("number",)


class SessionScoreSchema(Schema):
    """An administration taken in a session, in brief."""

    id = fields.String()
    instrument = fields.String(validate=validate.OneOf(list(instruments.INSTRUMENTS)))
    source = fields.String(validate=_enum(instruments.AdministrationSource))
    total = Integer(minimum=0)
    band = fields.Function(lambda a: _band(a), metadata={"type": "object"})


class SessionSchema(Audited, SessionFields, PlanMember):
    """A stored record as the service returns it."""

    administrations = fields.List(
        fields.Nested(SessionScoreSchema),
        dump_only=True,
        metadata={
            "description": "The rating scales administered in the session (full records under "
            "the plan's administrations)"
        },
    )


# --- administrations of rating scales ---------------------------------------------------------


def _band(administration: Any) -> dict[str, str]:
    band = instruments.INSTRUMENTS[administration.instrument].band(administration.total)
    return {"code": band.code, "display": band.display}


_BAND_DOC = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "display": {"type": "string"}},
    "description": "The instrument's severity band of the total",
    "example": {"code": "moderate", "display": "Moderate"},
}


class AdministrationFields(StrictSchema):
    """What a client writes of an administration. The service checks the answers against
    the instrument's declaration (GET /api/v1/instruments/{key})."""

    instrument = fields.String(
        required=True,
        metadata={
            "description": "The instrument's key: " + ", ".join(instruments.INSTRUMENTS),
            "enum": list(instruments.INSTRUMENTS),
            "example": "phq-9",
        },
    )
    administered_on = Date(
        allow_none=True,
        metadata={
            "description": "When it was taken; default: the date of `session_number`",
            "example": "2026-01-12",
        },
    )
    session_number = Integer(
        minimum=1,
        allow_none=True,
        metadata={
            "description": "The attended session it was taken in (one administration of an "
            "instrument per session); null: between sessions",
            "example": 2,
        },
    )
    answered_by = fields.String(
        allow_none=True,
        validate=_enum(instruments.AnsweredBy),
        metadata={"description": "Who gave the answers; default patient", "example": "patient"},
    )
    answers = fields.Dict(
        keys=fields.String(),
        values=Integer(),
        allow_none=True,
        metadata={
            "description": "Item link id -> score (0-3) of every scored item (and optionally "
            "the difficulty item); the total is computed from them. Leave out (or null) to "
            "import a total alone",
            "example": {
                **{item.link_id: 1 for item in instruments.PHQ9.items},
                "phq-9-9": 0,
                "phq-9-difficulty": 1,
            },
        },
    )
    total = Integer(
        allow_none=True,
        metadata={
            "description": "Without answers: a total imported from elsewhere (total-only). "
            "With answers it is computed; if sent it must equal the computed one",
            "example": 8,
        },
    )
    note = fields.String(allow_none=True, validate=validate.Length(1, 2000))


class AdministrationPatchSchema(AdministrationFields):
    """Any subset of an administration's fields; the instrument does not change."""


class AdministrationSchema(Audited, AdministrationFields, PlanMember):
    """A stored administration as the service returns it."""

    source = fields.String(
        dump_only=True,
        validate=_enum(instruments.AdministrationSource),
        metadata={
            "description": "items: the total is computed from the answers; total-only: "
            "imported without its items",
            "example": "items",
        },
    )
    band = fields.Function(_band, dump_only=True, metadata=_BAND_DOC)


# --- safety signals ---------------------------------------------------------------------------


class SignalStatusCode(codes.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


class SafetySignalSchema(Audited, PlanMember):
    administration_id = fields.String(
        dump_only=True, metadata={"description": "The administration whose answer raised it"}
    )
    instrument = fields.String(dump_only=True, metadata={"example": "phq-9"})
    item = fields.String(dump_only=True, metadata={"example": "phq-9-9"})
    score = Integer(minimum=0, dump_only=True, metadata={"example": 2})
    raised_on = Date(dump_only=True, metadata={"description": "The administration's date"})
    status = fields.String(
        dump_only=True, validate=_enum(SignalStatusCode), metadata={"example": "open"}
    )
    acknowledged_at = fields.DateTime(dump_only=True, allow_none=True)
    acknowledged_by = fields.String(dump_only=True, allow_none=True)
    action_taken = fields.String(dump_only=True, allow_none=True)


class AcknowledgementSchema(StrictSchema):
    action_taken = fields.String(
        required=True,
        validate=validate.Length(1, 2000),
        metadata={
            "description": "What was done (risk assessed, safety plan reviewed...)",
            "example": "Risk assessed in session: passive thoughts, no plan; safety plan "
            "reviewed with the patient.",
        },
    )


# --- instruments ------------------------------------------------------------------------------


class AnswerOptionSchema(Schema):
    code = fields.String(metadata={"description": "LOINC answer code", "example": "LA6568-5"})
    display = fields.String(metadata={"example": "Not at all"})
    score = Integer(minimum=0, metadata={"example": 0})


class ItemSchema(Schema):
    link_id = fields.String(metadata={"example": "phq-9-1"})
    code = fields.String(metadata={"description": "LOINC code of the item", "example": "44250-9"})
    text = fields.String()
    scored = fields.Boolean(metadata={"description": "Counts towards the total"})
    answers = fields.List(fields.Nested(AnswerOptionSchema))


class BandSchema(Schema):
    code = fields.String(metadata={"example": "mild"})
    display = fields.String(metadata={"example": "Mild"})
    low = Integer(minimum=0)
    high = Integer(minimum=0)


class InstrumentSchema(Schema):
    key = fields.String(metadata={"example": "phq-9"})
    name = fields.String(metadata={"example": "PHQ-9"})
    title = fields.String()
    panel_code = fields.String(metadata={"description": "LOINC code of the panel"})
    total_code = fields.String(
        metadata={"description": "LOINC code of the total (a goal target's measure)"}
    )
    total_display = fields.String()
    min_score = Integer(minimum=0)
    max_score = Integer(minimum=0)
    items = fields.Method("_items", metadata={"type": "array", "items": {"type": "object"}})
    bands = fields.List(fields.Nested(BandSchema))
    minimal_important_change = Integer(
        minimum=0,
        metadata={
            "description": "Points of change from the baseline a patient notices: improving "
            "or worsening"
        },
    )
    response_fraction = fields.Float(
        metadata={
            "description": "Response: a total at most this fraction of the baseline",
            "minimum": 0,
            "maximum": 1,
        }
    )
    remission_below = Integer(minimum=0, metadata={"description": "Remission: a total below this"})
    safety_item = fields.String(
        allow_none=True,
        metadata={"description": "The item whose answer above 0 raises a safety signal"},
    )

    def _items(self, instrument: Any) -> list[dict[str, Any]]:
        return [
            ItemSchema().dump(
                {
                    "link_id": item.link_id,
                    "code": item.code,
                    "text": item.text,
                    "scored": item in instrument.items,
                    "answers": item.answers,
                }
            )
            for item in instrument.all_items
        ]


class InstrumentListSchema(Schema):
    items = fields.List(fields.Nested(InstrumentSchema))


# --- lists, queries, problems ------------------------------------------------------------------


class PageQuerySchema(StrictSchema):
    page = Integer(minimum=1, load_default=1)
    page_size = Integer(minimum=1, maximum=MAX_PAGE_SIZE, load_default=20)


class QueryInstant(fields.AwareDateTime):
    """A date-time with an offset in a query, read as every instant in a query is
    (:mod:`service.instants`): any valid value is answered, taken into the range of
    instants the database holds (years 1 to 9999 in UTC)."""

    default_error_messages = {
        "invalid": "Not a valid date-time with seconds and an offset, "
        "such as 2026-01-05T09:00:00+01:00.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return parse_instant(value)
        except InvalidInstant as error:
            raise self.make_error("invalid") from error


class PlanQuerySchema(PageQuerySchema):
    patient = fields.String(
        validate=_reference_to(*rules.PATIENT_TYPES),
        metadata={"description": "Patient reference, e.g. Patient/123"},
    )
    status = fields.List(
        fields.String(validate=_enum(codes.PlanStatus)),
        metadata={"description": "One or more statuses (repeat the parameter)"},
    )
    problem_area = fields.String(validate=_enum(codes.ProblemArea))
    variant = fields.String(validate=_enum(codes.Variant))
    updated_since = QueryInstant(
        default_timezone=None,
        metadata={
            "description": "Only plans changed at or after this ISO 8601 date-time (with "
            "offset). The page then gives `updated_before`: poll next with it as "
            "`updated_since` to see every later change once"
        },
    )
    updated_before = QueryInstant(
        default_timezone=None,
        metadata={
            "description": "Only plans changed before this ISO 8601 date-time (with offset). "
            "With `updated_since` and without it, the server picks it (see the page's "
            "`updated_before`) and its page links keep it"
        },
    )
    identifier = fields.String(
        metadata={
            "description": "system|value, |value (an identifier without a system), or a "
            "value in any system",
            "example": "urn:oid:1.2.3|IPT-1",
        }
    )
    include_deleted = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Also list the deleted plans that match, as tombstones (`deleted` "
            "true, with `id`, `patient`, `version`, `updated_at` and `deleted_at` only), in "
            "order with the others: with `updated_since`, a sync client learns of deletions"
        },
    )


class PlanListItemSchema(PlanSchema):
    """A plan in a list: the plan, or the tombstone of a deleted one."""

    deleted = fields.Boolean(
        dump_only=True,
        metadata={
            "description": "Only on the tombstone of a deleted plan (`include_deleted`): true"
        },
    )
    deleted_at = fields.DateTime(
        dump_only=True,
        allow_none=True,
        metadata={"description": "When the plan was deleted; only on a tombstone"},
    )

    @post_dump(pass_original=True)
    def _tombstone(self, data: dict[str, Any], plan: Any, **_kwargs: Any) -> dict[str, Any]:
        if not plan.is_deleted:
            # A plan in a list reads as it does on its own.
            data.pop("deleted_at", None)
            data.pop("deleted", None)
            return data
        kept = ("id", "patient", "version", "updated_at", "updated_by", "deleted_at")
        return {**{name: data.get(name) for name in kept}, "deleted": True}


class PageLinksSchema(Schema):
    self_ = fields.String(data_key="self", attribute="self")
    first = fields.String()
    prev = fields.String(allow_none=True)
    next = fields.String(allow_none=True)
    last = fields.String()


def plan_page_schema() -> type[Schema]:
    """A page of plans; with ``updated_since``, also the bound the listing was made to."""
    base = page_of(PlanListItemSchema)
    return type(
        "PlanPageSchema",
        (base,),
        {
            "updated_before": fields.AwareDateTime(
                metadata={
                    "description": "With `updated_since`: every change made before this "
                    "instant is listed (a write still in progress when the request ran is "
                    "stamped at or after it). Poll next with it as `updated_since`"
                }
            )
        },
    )


def page_of(item: type[Schema]) -> type[Schema]:
    """A page of items with its total and links."""
    return type(
        f"{item.__name__.removesuffix('Schema')}PageSchema",
        (Schema,),
        {
            "items": fields.List(fields.Nested(item)),
            "total": Integer(minimum=0, metadata={"description": "Items matching, over all pages"}),
            "page": Integer(minimum=1),
            "page_size": Integer(minimum=1, maximum=MAX_PAGE_SIZE),
            "links": fields.Nested(PageLinksSchema),
        },
    )


class FieldErrorSchema(Schema):
    field = fields.String(
        metadata={"description": "Dotted path of the field", "example": "problem_areas.2"}
    )
    pointer = fields.String(
        metadata={"description": "JSON Pointer into the request", "example": "/problem_areas/2"}
    )
    location = fields.String(metadata={"description": "json, query or headers"})
    message = fields.String()


class ProblemSchema(Schema):
    """An RFC 9457 problem details document (application/problem+json)."""

    type = fields.String(metadata={"example": "urn:ipt-careplans:problem:rule-violation"})
    title = fields.String(metadata={"example": "Unprocessable Content"})
    status = Integer(minimum=100, maximum=599, metadata={"example": 422})
    detail = fields.String()
    instance = fields.String()
    request_id = fields.String()
    errors = fields.List(fields.Nested(FieldErrorSchema))


class AdministrationQuerySchema(PageQuerySchema):
    instrument = fields.String(
        validate=validate.OneOf(list(instruments.INSTRUMENTS)),
        metadata={"description": "Only the administrations of this instrument"},
    )


class SignalQuerySchema(PageQuerySchema):
    status = fields.String(
        validate=_enum(SignalStatusCode),
        metadata={"description": "Only the signals with this status"},
    )
