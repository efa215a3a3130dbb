"""A bulk export on SQLite leaves no cache of its files behind: the connections that wrote
the chunks, and the one that read them back for a download, give their page caches back
when they return to the pool (each would otherwise keep up to 2 MiB of data nobody reads
again, for as long as the server runs).

Measured with SQLite's own count of the memory it holds (``sqlite3_memory_used``), on a
database of the test's own, so that no other test's connections count."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from service import export_jobs
from service.db import Database
from service.export_files import Writer
from service.export_jobs import IN_PROGRESS, DatabaseSink, Lease
from service.export_reading import Exported
from service.models import ExportJob, utcnow

MiB = 1024 * 1024


def _sqlite_memory() -> Callable[[], int] | None:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    function = ctypes.CDLL(name).sqlite3_memory_used
    function.restype = ctypes.c_int64
    return lambda: int(function())


memory_used = _sqlite_memory()
pytestmark = pytest.mark.skipif(memory_used is None, reason="libsqlite3 not found")


@pytest.fixture
def own_database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'export.db'}")
    database.upgrade()
    yield database
    database.dispose()


def resources(count: int, size: int) -> Iterator[list[Exported]]:
    """Pages of 100 Goals of about ``size`` bytes each."""
    page = []
    for n in range(count):
        content = json.dumps({"resourceType": "Goal", "id": f"g{n}", "note": "x" * size})
        page.append(Exported(f"g{n}", content, f"Patient/{n % 7}"))
        if len(page) == 100:
            yield page
            page = []
    if page:
        yield page


def test_an_exports_files_leave_no_page_cache_behind(own_database: Database) -> None:
    assert memory_used is not None
    lease = Lease("memory-test", 60)
    now = utcnow()
    job = export_jobs.create(
        own_database,
        ExportJob(
            status=IN_PROGRESS,
            level="system",
            request="/fhir/$export",
            owner_client_id="memory-test",
            types=["Goal"],
            file_bytes=64 * MiB,
            transaction_time=now,
            expires_at=now + timedelta(hours=1),
            lease_owner=lease.owner,
            lease_expires=now + timedelta(minutes=1),
            attempts=1,
        ),
    )
    # The connection exists and has read the schema before the count starts.
    assert export_jobs.find(own_database, job.id) is not None
    before = memory_used()

    writer = Writer(DatabaseSink(own_database, job.id, lease, 1), 64 * MiB)
    written = writer.write_type("Goal", resources(3000, 4000))
    assert written == 3000
    after_writing = memory_used()
    assert after_writing - before < MiB / 2, f"{(after_writing - before) / MiB:.1f} MiB kept"

    (file,) = export_jobs.files(own_database, job.id)
    data = b"".join(export_jobs.chunks(own_database, job.id, file.number, file.chunks))
    assert len(data) == file.size > 10 * MiB
    assert data.count(b"\n") == file.count == 3000
    after_reading = memory_used()
    assert after_reading - before < MiB / 2, f"{(after_reading - before) / MiB:.1f} MiB kept"
