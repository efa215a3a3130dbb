"""Idempotency keys: a POST retried with the same key has its effect once.

A client that sends ``Idempotency-Key`` with a POST may send the request again (after a
timeout, a lost connection) and get the first answer back instead of a second effect.
The answer is stored in the transaction of the effect itself, so that one never exists
without the other; the unique constraint on (client, key) makes the database, not the
service, decide which of several concurrent requests with one key has the effect:

* SQLite runs one write transaction at a time, so a retry finds the first one's row.
* PostgreSQL makes a second insert of the key wait for the first transaction, and fails
  it once that one commits (or lets it through if that one rolled back). The request that
  failed rolls its own work back and answers with the first one's stored answer.

Only successful answers are kept: a refused request changed nothing, and its retry is
judged again on the state of the moment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import RuleViolation
from service.models import IdempotencyRecord, utcnow

T = TypeVar("T")


@dataclass(frozen=True)
class StoredAnswer:
    """What a retry gets back: the first answer's status, body and headers."""

    status: int
    body: str
    content_type: str
    etag: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class Request:
    """A request sent with a key: whose, which key, and the digest of what it asked."""

    client_id: str
    key: str
    fingerprint: str
    retention: timedelta


class Unanswered(Exception):
    """Raised by an act whose result is not to be kept (it was refused): its transaction
    is rolled back and the key stays free. ``result`` is what the act produced."""

    def __init__(self, result: object) -> None:
        super().__init__("the request was refused; its key is not kept")
        self.result = result


class _Raced(Exception):
    """Another transaction committed the key first."""


def answer_once(
    db: Database, asked: Request, act: Callable[[], tuple[T, StoredAnswer]]
) -> T | StoredAnswer:
    """Run ``act`` once for this key, in one transaction with the stored answer.

    ``act`` returns its result and the answer to keep; it raises :class:`Unanswered`
    (whose result is returned) or any error to keep nothing. A key already answered for
    the same request returns that :class:`StoredAnswer` without running ``act``; for a
    different request it is refused (:class:`RuleViolation`).
    """
    for _attempt in range(3):
        try:
            return _claim_and_act(db, asked, act)
        except Unanswered as refused:
            return refused.result  # type: ignore[return-value]
        except _Raced:
            with db.reading() as session:
                stored = _live_record(session, asked, utcnow())
            if stored is not None:
                return _replay(stored, asked)
            # The winner's row expired in between: claim the key again.
    raise RuntimeError(f"idempotency key {asked.key!r} could not be claimed")


def _claim_and_act(
    db: Database, asked: Request, act: Callable[[], tuple[T, StoredAnswer]]
) -> T | StoredAnswer:
    with db.transaction() as session:
        now = utcnow()
        stored = _live_record(session, asked, now)
        if stored is not None:
            return _replay(stored, asked)
        # An expired row of this key is replaced (its unique pair would refuse the claim).
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.client_id == asked.client_id,
                IdempotencyRecord.key == asked.key,
                IdempotencyRecord.expires_at <= now,
            )
        )
        record = IdempotencyRecord(
            client_id=asked.client_id,
            key=asked.key,
            fingerprint=asked.fingerprint,
            status=0,  # in progress: nobody else sees the row before it is answered
            body="",
            content_type="",
            created_at=now,
            expires_at=now + asked.retention,
        )
        session.add(record)
        try:
            session.flush()
        except IntegrityError as error:
            raise _Raced() from error
        result, answer = act()
        record.status = answer.status
        record.body = answer.body
        record.content_type = answer.content_type
        record.etag = answer.etag
        record.location = answer.location
        session.flush()
        return result


def _live_record(session: Session, asked: Request, now: datetime) -> IdempotencyRecord | None:
    record = session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.client_id == asked.client_id,
            IdempotencyRecord.key == asked.key,
        )
    ).first()
    if record is None or record.expires_at <= now:
        return None
    return record


def _replay(record: IdempotencyRecord, asked: Request) -> StoredAnswer:
    if record.fingerprint != asked.fingerprint:
        raise RuleViolation(
            f"Idempotency-Key {asked.key!r} was already used for a different request "
            f"(another body or URL) until {record.expires_at.isoformat()}: "
            "send a new key for a new request"
        )
    return StoredAnswer(
        status=record.status,
        body=record.body,
        content_type=record.content_type,
        etag=record.etag,
        location=record.location,
    )


def purge_expired(db: Database, now: datetime | None = None) -> int:
    """Drop the keys whose retention has ended; the number dropped."""
    with db.writing() as session:
        result = session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= (now or utcnow()))
        )
    return int(getattr(result, "rowcount", 0) or 0)
