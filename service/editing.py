"""One change to a plan: lock it, check versions, apply, log, and bump the plan version.

Every write to a plan or to anything in it goes through :func:`edit_plan`. It takes the
plan's row lock before reading anything, so the version a caller expects is compared with
the version the write replaces inside the same transaction: a stale version is refused,
never overwritten. Each change is logged in ``plan_changes`` with its author and time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, joinedload, selectinload

from service.codes import CLOSED_PLAN_STATUSES, SessionStatus
from service.db import Database, transaction_time
from service.errors import Gone, NotFound, RuleViolation, VersionMismatch
from service.models import CarePlan, PlanChange, TherapySession, Tracked

T = TypeVar("T", bound=Tracked)
# Called inside the write transaction once a change is complete, e.g. to publish views of it.
ChangeObserver = Callable[["PlanEdit"], None]  # see Database.notify


def plan_query() -> Any:
    """Select a plan with what its representation needs."""
    return select(CarePlan).options(
        selectinload(CarePlan.identifiers),
        selectinload(CarePlan.contracts),
        selectinload(CarePlan.phases),
    )


# One plan by id: its few identifiers and contracts joined to its row (one statement less
# each), its phases in a second statement. The lock, where there is one, is on its row only.
_ONE_PLAN = select(CarePlan).options(
    joinedload(CarePlan.identifiers),
    joinedload(CarePlan.contracts),
    selectinload(CarePlan.phases),
)

_LOCKED_PLANS = "ipt_locked_plans"


def load_plan(session: Session, plan_id: str, *, lock: bool = False) -> CarePlan:
    """The plan with this id; NotFound if it never existed, Gone if it was deleted.

    A plan this session's transaction has already locked is taken as it is in the session:
    nobody else can have changed it since, and reading it again (with its identifiers,
    contracts and phases) would only repeat two statements.
    """
    locked: dict[str, CarePlan] | None = session.info.get(_LOCKED_PLANS)
    plan: CarePlan | None
    if locked is not None and plan_id in locked:
        session.flush()
        # Held here, not only in the session's identity map, which lets go of objects
        # nobody else refers to (a later get would read the plan again, then lazily load
        # its identifiers and contracts).
        plan = locked[plan_id]
    else:
        query = _ONE_PLAN.where(CarePlan.id == plan_id)
        if lock:
            query = query.with_for_update(of=CarePlan).execution_options(populate_existing=True)
        plan = session.scalars(query).unique().first()
        if lock and plan is not None:
            session.info.setdefault(_LOCKED_PLANS, {})[plan_id] = plan
    if plan is None:
        raise NotFound(f"care plan {plan_id!r} does not exist")
    if plan.is_deleted:
        raise Gone(f"care plan {plan_id!r} was deleted")
    return plan


def require_plan(session: Session, plan_id: str) -> str:
    """The plan's patient; NotFound if the plan never existed, Gone if it was deleted.

    For reads that need the plan to exist but not the plan itself: one column is read,
    none when the transaction has the plan already.
    """
    if plan_id in session.info.get(_LOCKED_PLANS, ()):
        return load_plan(session, plan_id).patient
    found = session.execute(
        select(CarePlan.patient, CarePlan.deleted_at).where(CarePlan.id == plan_id)
    ).first()
    if found is None:
        raise NotFound(f"care plan {plan_id!r} does not exist")
    if found.deleted_at is not None:
        raise Gone(f"care plan {plan_id!r} was deleted")
    return str(found.patient)


def load_child(session: Session, model: type[T], plan_id: str, child_id: str, label: str) -> T:
    """A goal or homework of this plan; NotFound or Gone otherwise."""
    child = session.get(model, child_id)
    if child is None or getattr(child, "plan_id", None) != plan_id:
        raise NotFound(f"{label} {child_id!r} does not exist in care plan {plan_id!r}")
    if child.is_deleted:
        raise Gone(f"{label} {child_id!r} was deleted")
    return child


def check_version(entity: Tracked, expected: int | None, label: str) -> None:
    """Refuse the write when the caller's version is not the current one."""
    if expected is not None and expected != entity.version:
        raise VersionMismatch(
            f"{label} is at version {entity.version}, not {expected}: "
            "read it again and re-apply the change",
            entity.version,
        )


def assign(entity: Any, changes: Mapping[str, Any]) -> list[str]:
    """Set the attributes whose values differ; return the names of those that changed."""
    changed = []
    for name, value in changes.items():
        if getattr(entity, name) != value:
            setattr(entity, name, value)
            changed.append(name)
    return changed


def field_values(entity: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The values of these fields now (copies of lists and dicts, which a change may
    replace or alter in place), to compare with after a change (:func:`changed_fields`)."""
    return {name: deepcopy(getattr(entity, name)) for name in names}


def changed_fields(entity: Any, before: Mapping[str, Any]) -> list[str]:
    """The fields whose value now differs from ``before``: what a change log lists, so
    that a field set to the value it had is never listed as changed."""
    return [name for name, value in before.items() if getattr(entity, name) != value]


@dataclass(frozen=True)
class Change:
    """One logged change of a plan edit: the entity ("goal", "session", ...), its row,
    the action (create, update, delete) and, for an update, the fields that changed."""

    entity: str
    record: Any
    action: str
    fields: list[str]


@dataclass
class PlanEdit:
    """The open change to one plan, inside its write transaction."""

    session: Session
    plan: CarePlan
    actor: str
    notify: Callable[[PlanEdit], None] | None = None
    # What a caller hands to the observers with the change, by (resource type, id).
    attachments: dict[tuple[str, str], Any] = field(default_factory=dict)
    # Each instrument's course of live scores (service.progress.Score, in the order they
    # were taken) as the edit's last change to them left it, by instrument key: what the
    # observers would otherwise read again.
    courses: dict[str, list[Any]] = field(default_factory=dict)
    _log: list[Change] = field(default_factory=list)

    @functools.cached_property
    def now(self) -> datetime:
        """The transaction's write time: every record and version the edit writes carries
        it (see :func:`service.db.transaction_time`)."""
        return transaction_time(self.session)

    def require_open(self, what: str) -> None:
        """Closed plans keep only their notes (and status) editable."""
        if self.plan.status in CLOSED_PLAN_STATUSES:
            raise RuleViolation(
                f"care plan is {self.plan.status}: {what} can no longer change "
                "(only the plan's notes can)"
            )

    def created(self, entity: str, record: Tracked) -> None:
        record.created_at = record.updated_at = self.now
        record.created_by = record.updated_by = self.actor
        self.session.add(record)
        self._log.append(Change(entity, record, "create", []))

    def updated(self, entity: str, record: Tracked, fields: list[str]) -> None:
        if not fields:
            return
        record.updated_at = self.now
        record.updated_by = self.actor
        self._log.append(Change(entity, record, "update", fields))

    def deleted(self, entity: str, record: Tracked) -> None:
        record.deleted_at = record.updated_at = self.now
        record.deleted_by = record.updated_by = self.actor
        self._log.append(Change(entity, record, "delete", []))

    def last_attended(self) -> tuple[int, date | None] | None:
        """The number and date of the last session the patient attended in this plan.

        Query it before changing phases: the query flushes pending changes, and a phase
        flushed early would have its version bumped twice for one change.
        """
        row = self.session.execute(
            select(TherapySession.number, TherapySession.date)
            .where(
                TherapySession.plan_id == self.plan.id,
                TherapySession.deleted_at.is_(None),
                TherapySession.status == SessionStatus.ATTENDED,
            )
            .order_by(TherapySession.number.desc())
            .limit(1)
        ).first()
        return (row.number, row.date) if row else None

    @property
    def changed(self) -> bool:
        return bool(self._log)

    @property
    def changes(self) -> tuple[Change, ...]:
        """What this edit changed, in order (with the edits it follows)."""
        return tuple(self._log)

    def follow(self, earlier: PlanEdit) -> None:
        """This edit continues ``earlier`` in the same transaction: observers told of this
        one at its end hear of the changes of both."""
        if earlier is not self:
            self._log[:0] = earlier._log
            self.courses = {**earlier.courses, **self.courses}

    def finish(self) -> None:
        """Bump the plan's version once for the whole change and write the change log."""
        if not self._log:
            return
        if not any(entry.record is self.plan for entry in self._log):
            self.plan.updated_at = self.now
            self.plan.updated_by = self.actor
        self.session.flush()
        # The log rows go in with one statement, not as objects of the unit of work.
        self.session.execute(
            insert(PlanChange),
            [
                {
                    "plan_id": self.plan.id,
                    "plan_version": self.plan.version,
                    "entity": entry.entity,
                    "entity_id": str(entry.record.id),
                    "action": entry.action,
                    "fields": sorted(entry.fields),
                    "actor": self.actor,
                    "at": self.now,
                }
                for entry in self._log
            ],
        )
        if self.notify is not None:
            self.notify(self)


@contextmanager
def edit_plan(
    database: Database, plan_id: str, actor: str, expected_version: int | None = None
) -> Iterator[PlanEdit]:
    """Open a change to a plan, locked against concurrent writers; commit it on success.

    ``expected_version`` is the plan version the caller last saw (``If-Match``).
    """
    with database.writing() as session:
        plan = load_plan(session, plan_id, lock=True)
        check_version(plan, expected_version, "care plan")
        edit = PlanEdit(session, plan, actor, notify=database.notify)
        yield edit
        edit.finish()
