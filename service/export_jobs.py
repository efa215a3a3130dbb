"""Bulk export jobs: asked for, run under a lease by any process, served, cancelled, purged.

A job is run by whichever process claims it: an ``accepted`` job, or an ``in-progress``
one whose lease has run out (its process died or was restarted). The runner renews the
lease with every chunk it writes, in the same transaction, and stops as soon as the job is
no longer its own (cancelled, purged or taken over). A job taken up again keeps the files
of the types it finished and writes the others anew: the export reads the resources as of
its transaction time, so the files come out the same whoever writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from service import export_reading
from service.db import Database
from service.export_files import OpenFile, Writer
from service.export_reading import Exported, Filter, Selection
from service.models import ExportChunk, ExportFile, ExportJob, utcnow

log = logging.getLogger("ipt_careplans.export")

ACCEPTED, IN_PROGRESS, COMPLETED, FAILED = "accepted", "in-progress", "completed", "failed"
# A job that has been taken up this many times without finishing fails instead.
MAX_ATTEMPTS = 5


class LeaseLost(Exception):
    """The job is no longer this runner's: cancelled, purged, or taken over by another."""


@dataclass(frozen=True)
class Lease:
    """Who runs a job, and for how long each renewal holds."""

    owner: str
    seconds: int


def create(database: Database, job: ExportJob) -> ExportJob:
    with database.writing() as session:
        session.add(job)
    return job


def find(database: Database, job_id: str) -> ExportJob | None:
    """A job that has not expired."""
    with database.reading() as session:
        job = session.get(ExportJob, job_id)
        if job is None or job.expires_at <= utcnow():
            return None
        return job


def claimable(job: ExportJob, now: datetime) -> bool:
    """Whether a process may take the job up now."""
    if job.status == ACCEPTED:
        return True
    return job.status == IN_PROGRESS and job.lease_expires is not None and job.lease_expires < now


def _takeable(now: datetime) -> Any:
    return or_(
        ExportJob.status == ACCEPTED,
        and_(ExportJob.status == IN_PROGRESS, ExportJob.lease_expires < now),
    )


def claim(database: Database, lease: Lease, job_id: str | None = None) -> ExportJob | None:
    """Take up the oldest job no live process runs (or ``job_id``), or None.

    The claim is one conditional UPDATE: of two processes claiming the same job, one
    changes the row and the other finds it changed."""
    now = utcnow()
    with database.reading() as session:
        query = select(ExportJob.id).where(_takeable(now), ExportJob.expires_at > now)
        if job_id is not None:
            query = query.where(ExportJob.id == job_id)
        candidates = list(session.scalars(query.order_by(ExportJob.created_at).limit(5)))
    for candidate in candidates:
        with database.writing() as session:
            claimed = session.execute(
                update(ExportJob)
                .where(ExportJob.id == candidate, _takeable(now))
                .values(
                    status=IN_PROGRESS,
                    lease_owner=lease.owner,
                    lease_expires=now + timedelta(seconds=lease.seconds),
                    attempts=ExportJob.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                job = session.get(ExportJob, candidate)
                if job is not None:
                    session.refresh(job)
                    return job
    return None


def renew(session: Session, job_id: str, lease: Lease, **values: Any) -> None:
    """Extend the lease (and set ``values``) in the session's transaction, or raise
    :class:`LeaseLost` when the job is no longer this runner's."""
    expires = utcnow() + timedelta(seconds=lease.seconds)
    renewed = session.execute(
        update(ExportJob)
        .where(
            ExportJob.id == job_id,
            ExportJob.lease_owner == lease.owner,
            ExportJob.status == IN_PROGRESS,
        )
        .values(lease_expires=expires, **values)
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(job_id)


# Chunks written per transaction: a commit (an fsync) per chunk would cost more than
# the export itself.
CHUNKS_PER_COMMIT = 8


class DatabaseSink:
    """An export's files as rows: a file row, then its chunks, a few to a transaction, each
    transaction renewing the lease."""

    def __init__(self, database: Database, job_id: str, lease: Lease, first_number: int) -> None:
        self.database = database
        self.job_id = job_id
        self.lease = lease
        self.next_number = first_number
        self.exported = 0
        self.pending: list[dict[str, Any]] = []

    def open(self, resource_type: str, kind: str) -> OpenFile:
        file = OpenFile(resource_type, self.next_number, kind)
        self.next_number += 1
        with self.database.writing() as session:
            renew(session, self.job_id, self.lease)
            session.add(
                ExportFile(
                    job_id=self.job_id,
                    number=file.number,
                    resource_type=resource_type,
                    kind=kind,
                    patients=[],
                )
            )
        return file

    def write(self, file: OpenFile, data: bytes) -> None:
        self.pending.append(
            {
                "job_id": self.job_id,
                "file_number": file.number,
                "sequence": file.chunks,
                "data": data,
            }
        )
        if len(self.pending) >= CHUNKS_PER_COMMIT:
            with self.database.writing() as session:
                self._write_pending(session)

    def _write_pending(self, session: Session) -> None:
        renew(session, self.job_id, self.lease, exported=self.exported)
        if self.pending:
            session.execute(insert(ExportChunk), self.pending)
            self.pending = []
            # The chunks are read again only when downloaded: not kept in the cache of
            # every pooled connection that wrote some.
            self.database.release_cache_on_return(session.connection())

    def close(self, file: OpenFile) -> None:
        with self.database.writing() as session:
            self._write_pending(session)
            session.execute(
                update(ExportFile)
                .where(ExportFile.job_id == self.job_id, ExportFile.number == file.number)
                .values(
                    count=file.count,
                    size=file.size,
                    chunks=file.chunks,
                    patients=list(file.patients),
                    complete=True,
                )
                .execution_options(synchronize_session=False)
            )


# The _typeFilter of a type, as the runner is given it (None: every resource).
FiltersFor = Callable[[str], Filter | None]


def run(
    database: Database,
    job: ExportJob,
    lease: Lease,
    filters_for: FiltersFor,
    outcomes: list[str],
) -> None:
    """Write the job's files, type after type, and complete it; ``outcomes`` are the
    OperationOutcomes (JSON) of its error file. Raises :class:`LeaseLost` if the job stops
    being this runner's."""
    if job.attempts > MAX_ATTEMPTS:
        fail(database, job.id, lease, "the export was interrupted too many times")
        return
    done = list(job.done_types)
    with database.writing() as session:
        renew(session, job.id, lease)
        _discard(session, job.id, keep=done)
        numbers = session.scalar(
            select(func.max(ExportFile.number)).where(ExportFile.job_id == job.id)
        )
    sink = DatabaseSink(database, job.id, lease, (numbers or 0) + 1)
    writer = Writer(sink, job.file_bytes)

    def counted(pages: int) -> None:
        sink.exported += pages

    for resource_type in job.types:
        if resource_type in done:
            continue
        selection = Selection(resource_type, job.transaction_time, job.since, _patient_of(job))
        pages = _pages(database, selection, filters_for(resource_type))
        writer.write_type(resource_type, pages, counted)
        done.append(resource_type)
        with database.writing() as session:
            renew(session, job.id, lease, done_types=list(done), exported=sink.exported)
    if outcomes:
        page = [Exported(str(n), outcome, "") for n, outcome in enumerate(outcomes)]
        writer.write_type("OperationOutcome", [page], kind="error")
    completed = utcnow()
    # Kept for as long after completion as it was given when it was asked for.
    expires = completed + (job.expires_at - job.created_at)
    with database.writing() as session:
        renew(session, job.id, lease, status=COMPLETED, completed_at=completed, expires_at=expires)


def _patient_of(job: ExportJob) -> str | None:
    return job.owner_patient or job.patient


def _pages(
    database: Database, selection: Selection, keep: Filter | None
) -> Iterator[list[Exported]]:
    """The selection's pages, each read on a connection of its own."""
    with database.engine.connect() as connection:
        database.release_cache_on_return(connection)

        def connection_for() -> Connection:
            if connection.in_transaction():
                connection.rollback()
            return connection

        yield from export_reading.pages(connection_for, selection, keep)
        if connection.in_transaction():
            connection.rollback()


def _discard(session: Session, job_id: str, keep: list[str]) -> None:
    """Delete the files of a job but those of the types in ``keep`` (finished earlier)."""
    numbers = select(ExportFile.number).where(
        ExportFile.job_id == job_id,
        or_(ExportFile.kind != "output", ExportFile.resource_type.not_in(keep)),
    )
    gone = list(session.scalars(numbers))
    if not gone:
        return
    session.execute(
        delete(ExportChunk).where(ExportChunk.job_id == job_id, ExportChunk.file_number.in_(gone))
    )
    session.execute(
        delete(ExportFile).where(ExportFile.job_id == job_id, ExportFile.number.in_(gone))
    )


def fail(database: Database, job_id: str, lease: Lease, reason: str) -> None:
    """Mark the job failed, with a reason that names no patient data."""
    with database.writing() as session:
        renew(session, job_id, lease, status=FAILED, error=reason, completed_at=utcnow())


def files(database: Database, job_id: str) -> list[ExportFile]:
    with database.reading() as session:
        return list(
            session.scalars(
                select(ExportFile)
                .where(ExportFile.job_id == job_id, ExportFile.complete.is_(True))
                .order_by(ExportFile.number)
            )
        )


def file(database: Database, job_id: str, number: int) -> ExportFile | None:
    with database.reading() as session:
        found = session.get(ExportFile, (job_id, number))
        return found if found is not None and found.complete else None


def chunks(database: Database, job_id: str, number: int, count: int) -> Iterator[bytes]:
    """A file's bytes, one chunk read at a time, on one connection (no transaction is held
    between chunks)."""
    with database.engine.connect() as connection:
        database.release_cache_on_return(connection)
        for sequence in range(count):
            data = connection.execute(
                select(ExportChunk.data).where(
                    ExportChunk.job_id == job_id,
                    ExportChunk.file_number == number,
                    ExportChunk.sequence == sequence,
                )
            ).scalar_one_or_none()
            connection.rollback()
            if data is None:
                return  # the job was cancelled or purged meanwhile
            yield bytes(data)


def _delete_jobs(session: Session, ids: list[str]) -> None:
    if not ids:
        return
    session.execute(delete(ExportChunk).where(ExportChunk.job_id.in_(ids)))
    session.execute(delete(ExportFile).where(ExportFile.job_id.in_(ids)))
    session.execute(delete(ExportJob).where(ExportJob.id.in_(ids)))


def cancel(database: Database, job_id: str) -> None:
    """Delete the job and its files; a runner still on it stops at its next write."""
    with database.writing() as session:
        _delete_jobs(session, [job_id])


def purge_expired(database: Database) -> int:
    """Delete the jobs past their expiry, with their files (not one a live lease runs)."""
    now = utcnow()
    with database.reading() as session:
        expired = list(
            session.scalars(
                select(ExportJob.id)
                .where(
                    ExportJob.expires_at <= now,
                    or_(
                        ExportJob.status != IN_PROGRESS,
                        ExportJob.lease_expires < now,
                    ),
                )
                .limit(100)
            )
        )
    if expired:
        with database.writing() as session:
            _delete_jobs(session, expired)
    return len(expired)
