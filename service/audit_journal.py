"""The audit journal: where the records of reads, searches and refusals are committed
before their responses leave, and from where they move into the audit trail.

A request waits until its audit records are on disk. Written straight into
``audit_events``, each record would also go into that table's indexes by patient and by
resource, which are keyed at random: every record dirties a page of each, and a commit of a
few requests' records writes hundreds of pages, while the requests wait. The journal has
no index but its primary key, whose ids grow with time, so a commit appends a few pages and
returns sooner.

:func:`move` takes the journal's records, in batches, into ``audit_events`` and removes
them from the journal, each batch in one transaction: a record is always in exactly one of
the two tables, and a batch's records land on the trail's index pages together (records of
one patient, or one resource, share pages). The server moves them in the background
(``api.audit``); every read of the trail moves what is there first, so a search of the
trail finds every record committed before it began.

A record sent twice (a request that retried after its writer died having committed it) may
be in the journal after its first copy has moved: the copy is dropped, not moved again.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, delete, exists, func, insert, select

from service.db import Database
from service.models import AuditJournalRecord, AuditRecord

JOURNAL = cast(Table, AuditJournalRecord.__table__)
TRAIL = cast(Table, AuditRecord.__table__)
# Records per transaction of a move: large enough that a batch shares the trail's index
# pages, small enough that on SQLite the writers waiting behind it wait well under a second.
BATCH = 2000
_COLUMNS = [column.name for column in TRAIL.columns]


def move(database: Database, batch: int = BATCH) -> int:
    """Move every record in the journal into the trail; how many were moved.

    On PostgreSQL a batch locks the journal rows it takes: moves running at once (several
    servers, or a search of the trail) take turns on them, and each one returns only once
    every record committed to the journal before it began has moved.
    """
    moved = 0
    while True:
        with database.writing() as session:
            taken = select(JOURNAL.c.id).order_by(JOURNAL.c.id).limit(batch)
            if database.supports_row_locks:
                taken = taken.with_for_update()
            ids = list(session.scalars(taken))
            if not ids:
                return moved
            already = exists().where(TRAIL.c.id == JOURNAL.c.id)
            session.execute(
                insert(TRAIL).from_select(
                    _COLUMNS,
                    select(*(JOURNAL.c[name] for name in _COLUMNS)).where(
                        JOURNAL.c.id.in_(ids), ~already
                    ),
                )
            )
            session.execute(delete(JOURNAL).where(JOURNAL.c.id.in_(ids)))
        # On PostgreSQL a batch may come back short (rows another move took while this one
        # waited for them), so only an empty one says the journal is empty.
        moved += len(ids)


def waiting(database: Database) -> int:
    """How many records are in the journal."""
    with database.reading() as session:
        return int(session.scalar(select(func.count()).select_from(JOURNAL)) or 0)
