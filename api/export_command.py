"""``ipt-careplans export``: the bulk export written to a directory by an administrator.

It reads the database directly, with the rules ``$export`` follows (resources as of one
instant, a history horizon; ``_since``; ``_typeFilter``) and the same NDJSON writer, shows
its progress on standard error, and records itself in the audit trail once per patient
whose records it wrote.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import Connection, insert
from tqdm import tqdm

from api.auth.access import PLAN_TYPES
from api.config import Settings
from api.fhir import search_clauses
from api.fhir.export_request import filters, type_filter
from api.fhir.parameters import InvalidParameter
from service import export_reading
from service.db import Database
from service.export_files import DirectorySink, Writer
from service.export_reading import Exported, Selection
from service.instants import InvalidInstant, parse_instant
from service.models import AuditRecord, new_id, utcnow


@dataclass(frozen=True)
class CommandExport:
    """What the command was asked to export."""

    types: list[str]
    since: datetime | None
    type_filters: list[str]
    patient: str | None

    def query(self) -> str:
        """The request as the audit trail keeps it (the $export parameters)."""
        params = [("_type", ",".join(self.types))]
        if self.since is not None:
            params.append(("_since", self.since.isoformat()))
        params += [("_typeFilter", query) for query in self.type_filters]
        if self.patient is not None:
            params.append(("patient", self.patient))
        return urlencode(params)


def checked(
    types: tuple[str, ...], since: str | None, type_filters: tuple[str, ...], patient: str | None
) -> CommandExport:
    """The options, checked; ValueError names a wrong one."""
    listed = [t.strip() for value in types for t in value.split(",") if t.strip()]
    for resource_type in listed:
        if resource_type not in PLAN_TYPES:
            raise ValueError(
                f"--type {resource_type}: not exported; the types are {', '.join(PLAN_TYPES)}"
            )
    chosen = list(dict.fromkeys(listed)) or list(PLAN_TYPES)
    moment = None
    if since is not None:
        try:
            moment = parse_instant(since)
        except InvalidInstant as error:
            raise ValueError(f"--since: {error}") from None
    if patient is not None and not (patient.startswith("Patient/") and len(patient) > 8):
        raise ValueError(f"--patient must be a reference such as Patient/123, not {patient!r}")
    for query in type_filters:
        try:
            resource_type, _ = type_filter(query, patient)
        except (InvalidParameter, search_clauses.Unsupported) as error:
            reason = error.message if isinstance(error, InvalidParameter) else str(error)
            raise ValueError(f"--type-filter {query}: {reason}") from None
        if resource_type not in chosen:
            raise ValueError(f"--type-filter {query}: {resource_type} is not exported")
    return CommandExport(chosen, moment, list(type_filters), patient)


def run(
    database: Database, settings: Settings, request: CommandExport, directory: Path
) -> list[tuple[Path, int]]:
    """Write the files; the path and number of resources of each."""
    directory.mkdir(parents=True, exist_ok=True)
    started = utcnow()
    at = database.history_horizon()
    by_type = filters(request.type_filters, request.patient)
    sink = DirectorySink(directory)
    writer = Writer(sink, settings.export_file_bytes)
    with database.engine.connect() as connection:
        total = sum(export_reading.estimated(connection, t, request.patient) for t in request.types)
    with (
        database.engine.connect() as connection,
        tqdm(total=total, unit=" resources", file=sys.stderr, desc="export") as bar,
    ):

        def connection_for() -> Connection:
            if connection.in_transaction():
                connection.rollback()
            return connection

        for resource_type in request.types:
            selection = Selection(resource_type, at, request.since, request.patient)
            pages = export_reading.pages(connection_for, selection, by_type.get(resource_type))
            writer.write_type(resource_type, _counted(pages, bar))
    patients = {p: None for _, file in sink.written for p in file.patients}
    try:
        _audit(database, request, started, list(patients))
    except Exception:
        # Nothing leaves unrecorded: the files of an export the trail does not hold go.
        for path, _ in sink.written:
            path.unlink(missing_ok=True)
        raise
    return [(path, file.count) for path, file in sink.written]


def _counted(pages: Iterable[list[Exported]], bar: tqdm) -> Iterator[list[Exported]]:
    for page in pages:
        bar.update(len(page))
        yield page


def _audit(
    database: Database, request: CommandExport, started: datetime, patients: list[str]
) -> None:
    """One record per patient exported (one naming none if the export was empty), as an
    administrator's operation."""
    user = _user()
    base = {
        "recorded": utcnow(),
        "started": started,
        "action": "E",
        "outcome": "0",
        "interaction": "operation",
        "agent": f"ipt-careplans export ({user})"[:255],
        "user_name": user,
        "client_id": None,
        "address": None,
        "request_id": None,
        "entity": None,
        "status": None,
        "content": None,
        "query": request.query(),
    }
    named: list[str | None] = list(patients) or [None]
    rows = [{**base, "id": new_id(), "patient": p} for p in named]
    with database.writing() as session:
        for start in range(0, len(rows), 500):
            session.execute(insert(AuditRecord), rows[start : start + 500])


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
