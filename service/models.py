"""The tables: one IPT care plan and everything in it.

Every row that can change carries a ``version`` that SQLAlchemy checks on each UPDATE
(optimistic locking) and who/when it was created and last changed. Rows are never
removed: a delete stamps ``deleted_at`` so that history stays complete, and uniqueness
rules apply to the rows that are not deleted.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

REFERENCE_LENGTH = 512
ID_LENGTH = 64


_id_lock = threading.Lock()
_last_id_time = 0
_id_counter = 0


def new_id() -> str:
    """A new resource id: a time-ordered UUID (version 7 layout), also a valid FHIR id.

    Ids made by one process increase, so records created in one transaction list in the
    order they were made.
    """
    global _last_id_time, _id_counter
    with _id_lock:
        millis = time.time_ns() // 1_000_000
        if millis <= _last_id_time:
            millis = _last_id_time
            _id_counter += 1
            if _id_counter > 0xFFF:
                millis += 1
                _id_counter = 0
        else:
            _id_counter = 0
        _last_id_time = millis
        counter = _id_counter
    value = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | counter << 64
    value |= 0b10 << 62 | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def utcnow() -> datetime:
    """Now, in UTC, to the millisecond (the precision FHIR instants and HTTP dates carry)."""
    return to_millisecond(datetime.now(UTC))


def to_millisecond(moment: datetime) -> datetime:
    """An aware instant in UTC, cut to the millisecond as :func:`utcnow` is."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
        }
    )


class Tracked:
    """Who created and last changed a row, when, and its version."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_by: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class CarePlan(Tracked, Base):
    """One IPT course for one patient, with its treatment contract."""

    __tablename__ = "care_plans"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    patient: Mapped[str] = mapped_column(String(REFERENCE_LENGTH))
    status: Mapped[str] = mapped_column(String(20))
    variant: Mapped[str] = mapped_column(String(20))
    planned_sessions: Mapped[int] = mapped_column(Integer)
    session_frequency: Mapped[str] = mapped_column(String(20))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    primary_problem_area: Mapped[str] = mapped_column(String(32))
    secondary_problem_area: Mapped[str | None] = mapped_column(String(32))
    dispute_stage: Mapped[str | None] = mapped_column(String(20))
    condition: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    therapist: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    formulation: Mapped[str | None] = mapped_column(Text)
    relapse_prevention: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    notes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    identifiers: Mapped[list[PlanIdentifier]] = relationship(
        back_populates="plan", order_by="PlanIdentifier.id", cascade="all, delete-orphan"
    )
    contracts: Mapped[list[Contract]] = relationship(
        back_populates="plan", order_by="Contract.sequence", cascade="all, delete-orphan"
    )
    phases: Mapped[list[Phase]] = relationship(
        back_populates="plan", order_by="Phase.start_session", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_care_plans_patient_status", "patient", "status"),
        Index("ix_care_plans_status", "status"),
        Index("ix_care_plans_variant", "variant"),
        Index("ix_care_plans_primary_problem_area", "primary_problem_area"),
        Index("ix_care_plans_secondary_problem_area", "secondary_problem_area"),
        Index("ix_care_plans_updated_at", "updated_at"),
        Index("ix_care_plans_created_at_id", "created_at", "id"),
    )

    @property
    def problem_areas(self) -> list[str]:
        return [a for a in (self.primary_problem_area, self.secondary_problem_area) if a]


class PlanIdentifier(Base):
    """An external identifier of a plan; a (system, value) pair names one plan only."""

    __tablename__ = "plan_identifiers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    system: Mapped[str] = mapped_column(String(REFERENCE_LENGTH))
    value: Mapped[str] = mapped_column(String(255))

    plan: Mapped[CarePlan] = relationship(back_populates="identifiers")

    __table_args__ = (
        UniqueConstraint("system", "value"),
        Index("ix_plan_identifiers_plan_id", "plan_id"),
        Index("ix_plan_identifiers_value", "value"),
    )


class Contract(Base):
    """One version of the treatment contract; renegotiation appends, never overwrites."""

    __tablename__ = "plan_contracts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(Integer)
    planned_sessions: Mapped[int] = mapped_column(Integer)
    session_frequency: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    agreed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    agreed_by: Mapped[str] = mapped_column(String(255))

    plan: Mapped[CarePlan] = relationship(back_populates="contracts")

    __table_args__ = (UniqueConstraint("plan_id", "sequence"),)


class Phase(Tracked, Base):
    """A phase of the course and the contiguous range of sessions it spans."""

    __tablename__ = "phases"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(20))
    start_session: Mapped[int] = mapped_column(Integer)
    end_session: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    start_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(Text)

    plan: Mapped[CarePlan] = relationship(back_populates="phases")

    __table_args__ = (UniqueConstraint("plan_id", "code"),)


class Goal(Tracked, Base):
    """A symptom goal or a goal of one of the plan's problem areas."""

    __tablename__ = "goals"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    problem_area: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text)
    lifecycle_status: Mapped[str] = mapped_column(String(20))
    achievement_status: Mapped[str | None] = mapped_column(String(20))
    # True while a clinician's achievement status stands; a new score of the goal's measure
    # hands it back to the rules (service/progress.py).
    achievement_manual: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[str | None] = mapped_column(String(20))
    start_date: Mapped[date | None] = mapped_column(Date)
    target_measure: Mapped[str | None] = mapped_column(String(32))
    target_comparator: Mapped[str | None] = mapped_column(String(2))
    target_value: Mapped[Decimal | None] = mapped_column(Numeric(9, 3))
    target_due_date: Mapped[date | None] = mapped_column(Date)
    phase: Mapped[str | None] = mapped_column(String(20))
    notes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    @property
    def target(self) -> dict[str, Any] | None:
        """The target as one value: measure, comparator, value and due date (or None)."""
        target = {
            "measure": self.target_measure,
            "comparator": self.target_comparator,
            "value": self.target_value,
            "due_date": self.target_due_date,
        }
        return target if any(v is not None for v in target.values()) else None

    __table_args__ = (
        Index("ix_goals_plan_id_created_at", "plan_id", "created_at"),
        Index("ix_goals_lifecycle_status", "lifecycle_status"),
    )


class Homework(Tracked, Base):
    """A between-session task the patient takes on, and what they report of it."""

    __tablename__ = "homework"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(20))
    goal_id: Mapped[str | None] = mapped_column(ForeignKey("goals.id"))
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text)
    assigned_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20))
    patient_report: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_homework_plan_id_created_at", "plan_id", "created_at"),
        Index("ix_homework_goal_id", "goal_id"),
    )


class TherapySession(Tracked, Base):
    """One therapy session of the contract, addressed by its number."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20))
    phq9_total: Mapped[int | None] = mapped_column(Integer)
    techniques: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # One live session per number; a deleted one frees its number.
        Index(
            "uq_sessions_plan_id_number_live",
            "plan_id",
            "number",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )


class Administration(Tracked, Base):
    """One administration of a rating scale (service/instruments.py) in a plan.

    The total is computed from the item answers; a total-only administration (imported from
    elsewhere) has no answers and says so in ``source``.
    """

    __tablename__ = "administrations"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    instrument: Mapped[str] = mapped_column(String(20))
    administered_on: Mapped[date] = mapped_column(Date)
    # The number of the attended session it was taken in; None: taken between sessions.
    session_number: Mapped[int | None] = mapped_column(Integer)
    answered_by: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))
    # link id -> score of each item answered (scored items and the difficulty item).
    answers: Mapped[dict[str, int] | None] = mapped_column(JSON)
    total: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_administrations_plan_id_administered_on", "plan_id", "administered_on"),
    )


class SafetySignal(Tracked, Base):
    """A safety signal raised by an answer (PHQ-9 item 9 above 0), open until acknowledged.

    Nothing closes a signal but a clinician's acknowledgement: not a corrected answer, not
    a deleted administration.
    """

    __tablename__ = "safety_signals"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    administration_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    instrument: Mapped[str] = mapped_column(String(20))
    item: Mapped[str] = mapped_column(String(40))
    score: Mapped[int] = mapped_column(Integer)
    raised_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(255))
    action_taken: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_safety_signals_plan_id_status", "plan_id", "status"),)


class PlanChange(Base):
    """The change log of a plan: which record changed, how, by whom and when."""

    __tablename__ = "plan_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    plan_version: Mapped[int] = mapped_column(Integer)
    entity: Mapped[str] = mapped_column(String(20))
    entity_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    action: Mapped[str] = mapped_column(String(10))
    fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    actor: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_plan_changes_plan_id_id", "plan_id", "id"),)


class StoredResource(Base):
    """The current version of a resource published from a plan (an opaque JSON document).

    The domain does not read the documents; it keeps them so that every version can be
    served exactly as it was and the newest one without rebuilding it.
    """

    __tablename__ = "stored_resources"

    resource_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("care_plans.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted: Mapped[bool] = mapped_column(default=False)
    content: Mapped[str] = mapped_column(Text)
    # A digest of the content without its version metadata: unchanged content, no new version.
    digest: Mapped[str] = mapped_column(String(64))
    # Elements a client wrote that the domain does not model, kept verbatim.
    extras: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_stored_resources_plan_id", "plan_id"),
        Index("ix_stored_resources_type_last_updated", "resource_type", "last_updated", "id"),
    )


class ResourceVersion(Base):
    """Every version of every published resource, in the order they were written."""

    __tablename__ = "resource_versions"

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    id: Mapped[str] = mapped_column(String(ID_LENGTH))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted: Mapped[bool] = mapped_column(default=False)
    method: Mapped[str] = mapped_column(String(10))
    content: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("resource_type", "id", "version_id"),
        Index("ix_resource_versions_last_updated", "last_updated", "sequence"),
        Index(
            "ix_resource_versions_type_last_updated", "resource_type", "last_updated", "sequence"
        ),
    )


class SearchToken(Base):
    """A coded value a published resource is found by (status, category, identifier…)."""

    __tablename__ = "search_tokens"

    row: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    param: Mapped[str] = mapped_column(String(40))
    system: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    code: Mapped[str] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_search_tokens_lookup", "resource_type", "param", "code", "system", "resource_id"),
        # The status check of a search and a resource's reindex read only this index.
        Index(
            "ix_search_tokens_resource", "resource_type", "resource_id", "param", "code", "system"
        ),
    )


class SearchReference(Base):
    """A reference a published resource is found by (patient, part-of, goal…)."""

    __tablename__ = "search_references"

    row: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    param: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(REFERENCE_LENGTH))

    __table_args__ = (
        Index("ix_search_references_lookup", "resource_type", "param", "target", "resource_id"),
        Index("ix_search_references_resource", "resource_type", "resource_id", "param", "target"),
    )


class SearchDate(Base):
    """A date range a published resource is found by (period, target date…)."""

    __tablename__ = "search_dates"

    row: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    param: Mapped[str] = mapped_column(String(40))
    low: Mapped[datetime] = mapped_column(UTCDateTime)
    high: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_search_dates_lookup", "resource_type", "param", "low", "high", "resource_id"),
        Index("ix_search_dates_resource", "resource_type", "resource_id", "param", "low", "high"),
    )


class ResourceIdentifier(Base):
    """An identifier of a published resource: one live resource per type, system and value.

    The database enforces it, so that concurrent conditional creates make one resource.
    """

    __tablename__ = "resource_identifiers"

    resource_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    system: Mapped[str] = mapped_column(String(REFERENCE_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH))

    __table_args__ = (Index("ix_resource_identifiers_resource", "resource_type", "resource_id"),)


class ApiClient(Base):
    """A machine client allowed to ask for tokens: its scopes and how it proves who it is.

    Secrets are kept only as salted hashes; a client using SMART Backend Services
    registers its public keys (a JWKS) instead.
    """

    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    secret_hash: Mapped[str | None] = mapped_column(String(512))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    scopes: Mapped[str] = mapped_column(Text)
    # A client bound to one patient sees and changes that patient's records only.
    patient: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsedAssertion(Base):
    """A client assertion already used (its jti), refused again until it expires."""

    __tablename__ = "used_assertions"

    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SigningKey(Base):
    """A key the service signs its access tokens with, when no key file is configured.

    The private key is kept encrypted with the key-encryption key (``encrypted_key``);
    ``private_pem`` holds it in the clear only when no key-encryption key is configured
    (and in rows written before encryption existed, until a key-encryption key is set).
    A rotated key is ``retired_at``: it signs nothing more, and its public key is still
    published until every token it signed has expired.
    """

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_pem: Mapped[str | None] = mapped_column(Text)
    encrypted_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    """The first successful answer to a native POST sent with an ``Idempotency-Key``.

    Written in the transaction of the POST's own effect, so that one never exists without
    the other. ``(client_id, key)`` is unique: of two requests racing with one key, the
    database lets one commit its effect and refuses the other, which then replays it.
    ``fingerprint`` is a digest of the request (method, path and body) that a retry must
    match; rows past ``expires_at`` are dropped.
    """

    __tablename__ = "idempotency_keys"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(255))
    etag: Mapped[str | None] = mapped_column(String(64))
    location: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("client_id", "key"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )


class RateCounter(Base):
    """How many token requests (or failed authentications) one subject made in one window.

    ``key`` is a digest of the limit's name, its subject (an address, a client id) and the
    window, so that no client-supplied text is stored; rows past ``expires_at`` are dropped.
    """

    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_rate_counters_expires_at", "expires_at"),)


class _AuditFacts:
    """The columns of an audit record, shared by the trail and its journal."""

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(1))  # C R U D E
    outcome: Mapped[str] = mapped_column(String(2))  # 0 4 8 12
    agent: Mapped[str] = mapped_column(String(255))
    entity: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    patient: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    content: Mapped[str | None] = mapped_column(Text)
    # The other facts; empty in records that have ``content`` (apart from client_id).
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    interaction: Mapped[str | None] = mapped_column(String(32))  # a restful-interaction code
    status: Mapped[int | None] = mapped_column(Integer)  # the HTTP status, when answered
    # Unbounded: an external issuer's client and user ids have no length limit.
    client_id: Mapped[str | None] = mapped_column(Text)
    user_name: Mapped[str | None] = mapped_column(Text)  # AuditFacts.user
    address: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    query: Mapped[str | None] = mapped_column(Text)


class AuditRecord(_AuditFacts, Base):
    """One audited request: who did what to which record, when, from where, with what outcome.

    Rows are only ever inserted. They hold the facts of the request, from which the FHIR
    AuditEvent is rendered when it is read (``fhir_mappings.audit_event``). ``content`` is
    the AuditEvent as it was rendered when recorded, kept for the records written before the
    facts had columns of their own (those are served as stored); it is empty for newer ones.
    """

    __tablename__ = "audit_events"

    __table_args__ = (
        Index("ix_audit_events_recorded", "recorded"),
        Index("ix_audit_events_agent", "agent", "recorded"),
        Index("ix_audit_events_client_id", "client_id", "recorded"),
        Index("ix_audit_events_entity", "entity", "recorded"),
        Index("ix_audit_events_patient", "patient", "recorded"),
    )


class AuditJournalRecord(_AuditFacts, Base):
    """An audit record of a read, search or refusal, committed before its response left,
    and not yet moved into ``audit_events`` (``service.audit_journal``).

    The table has no index but its primary key, whose ids grow with time: a request's
    records cost one appended row each, where the trail's indexes by patient and by
    resource would each put it on a page of its own. Records are moved in batches, and
    every read of the trail moves the journal's first.
    """

    __tablename__ = "audit_journal"


class Subscription(Base):
    """A topic-based subscription (FHIR Subscriptions R5 Backport, R4 profile).

    The row holds what delivery needs as columns and the Subscription resource as it was
    last written (``content``). ``owner_*`` are the access the subscription was created
    with: each notification carries only what they allow, checked when it is delivered.
    ``events_since_start`` is the number of the last event numbered for it: events are
    written unnumbered with the change they report, and numbered from 1 with no gap
    afterwards (``service.subscriptions.number_events``). ``delivered_through`` is the
    number of the last event the receiver acknowledged; delivery resumes after it.
    """

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    version_id: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted: Mapped[bool] = mapped_column(default=False)
    # requested, active, error or off (the R4 Subscription.status codes).
    status: Mapped[str] = mapped_column(String(20))
    # Why the subscription is in error or off (Subscription.error), when it is.
    reason: Mapped[str | None] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(String(REFERENCE_LENGTH))
    # The filter criteria as written, each "Type?parameter=value".
    filters: Mapped[list[str]] = mapped_column(JSON, default=list)
    endpoint: Mapped[str] = mapped_column(Text)
    # The channel's headers (a receiver's own Authorization, say), sealed at rest.
    headers_sealed: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(String(20))  # empty, id-only or full-resource
    content_type: Mapped[str] = mapped_column(String(64))
    heartbeat_seconds: Mapped[int | None] = mapped_column(Integer)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    max_count: Mapped[int] = mapped_column(Integer)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner_client_id: Mapped[str] = mapped_column(Text)
    owner_scopes: Mapped[str] = mapped_column(Text)
    owner_patient: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    events_since_start: Mapped[int] = mapped_column(Integer, default=0)
    delivered_through: Mapped[int] = mapped_column(Integer, default=0)
    # Delivery state: when the next attempt (or heartbeat) is due, how many attempts in a
    # row have failed and since when, and when the receiver last answered.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The delivery worker sending to it now, and until when its claim holds: a worker that
    # dies mid-delivery loses its claim when the lease runs out, and another sends again.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_subscriptions_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_subscriptions_topic_status", "topic", "status"),
    )


class SubscriptionEvent(Base):
    """One event of a subscription: a change of a resource that matched its topic and filters.

    Written in the transaction of the change itself (an outbox), so that no change commits
    without its events and no event outlives a rolled-back change. It is written without a
    number (``event_number`` null); once committed it is numbered, after the subscription's
    last event, by ``service.subscriptions.number_events``. Kept after delivery for
    ``$events`` until the retention window passes.
    """

    __tablename__ = "subscription_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    # The event's number for its subscription; null until it is numbered.
    event_number: Mapped[int | None] = mapped_column(Integer)
    topic: Mapped[str] = mapped_column(String(REFERENCE_LENGTH))
    focus_type: Mapped[str] = mapped_column(String(40))
    focus_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    focus_version: Mapped[int] = mapped_column(Integer)
    # The patient whose record changed, for the owner's patient context at delivery.
    patient: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("subscription_id", "event_number"),
        Index("ix_subscription_events_occurred_at", "occurred_at"),
        # The events still to number, for the worker and the numbering (a handful at most).
        Index(
            "ix_subscription_events_unnumbered",
            "subscription_id",
            "id",
            sqlite_where=text("event_number IS NULL"),
            postgresql_where=text("event_number IS NULL"),
        ),
    )


class ExportJob(Base):
    """One bulk data export (FHIR Bulk Data Access ``$export``): what was asked, by whom,
    the instant it is consistent as of, and how far it has come.

    ``transaction_time`` is a history horizon (every version stamped before it had
    committed when it was taken): the export holds each resource as its version current at
    that instant, whenever and however often the job runs. A job runs under a lease
    (``lease_owner`` until ``lease_expires``), renewed as it writes; a job whose lease has
    run out is taken up again by any process. ``done_types`` are the types whose files are
    complete: a job taken up again keeps them and writes the others anew.
    """

    __tablename__ = "export_jobs"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    # accepted, in-progress, completed or failed.
    status: Mapped[str] = mapped_column(String(20))
    # system, or patient (every patient in reach, or one when ``patient`` is set).
    level: Mapped[str] = mapped_column(String(20))
    request: Mapped[str] = mapped_column(Text)
    owner_client_id: Mapped[str] = mapped_column(Text)
    # The patient the requesting token was bound to, and the patient of Patient/{id}/$export.
    owner_patient: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    patient: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    types: Mapped[list[str]] = mapped_column(JSON, default=list)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The _typeFilter queries as written, each "Type?parameter=value&...".
    type_filters: Mapped[list[str]] = mapped_column(JSON, default=list)
    # What was ignored under Prefer: handling=lenient, reported in the manifest's errors.
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The size past which a file is split, as configured when the export was asked for.
    file_bytes: Mapped[int] = mapped_column(Integer)
    transaction_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the job and its files are purged.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Resources written so far (the status's X-Progress) and why a failed job failed.
    exported: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_export_jobs_status_lease_expires", "status", "lease_expires"),
        Index("ix_export_jobs_expires_at", "expires_at"),
    )


class ExportFile(Base):
    """One NDJSON file of an export: its resources of one type (``kind`` output) or the
    OperationOutcomes of what went wrong (``kind`` error), held in chunks so that every
    replica serves it. ``patients`` are the patients whose data it holds (each download is
    audited once per patient); ``complete`` is set when its last chunk is written."""

    __tablename__ = "export_files"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("export_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))
    count: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    patients: Mapped[list[str]] = mapped_column(JSON, default=list)
    complete: Mapped[bool] = mapped_column(default=False)


class ExportChunk(Base):
    """A consecutive piece of an export file's bytes, numbered from 0."""

    __tablename__ = "export_chunks"

    job_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    file_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        ForeignKeyConstraint(
            ["job_id", "file_number"],
            ["export_files.job_id", "export_files.number"],
            ondelete="CASCADE",
        ),
    )
