"""The audit trail: one FHIR AuditEvent for every request that touches patient data, and
for every request for an access token.

Writes are recorded by an observer of the database, inside the write's own transaction:
a change to a plan and its audit record are committed together or not at all. Everything
else (reads, searches, history, refusals, failed writes) is recorded once the response is
made and before it leaves: the request waits until its records are committed, together
with those of the requests that came in at the same time (:class:`AuditLog`). A response
whose records cannot be committed is replaced by a 503: no response holding patient data
leaves unrecorded, and a worker killed at any moment loses no record of what it answered.

A response holding the records of several patients is recorded once per patient (IHE
BALP): ``AuditEvent?patient=`` finds every request that returned a patient's data. The
patients are taken from the response itself, so every route, present or future, is
covered: the ``reference`` to a Patient of each FHIR resource it holds, and the
``patient`` of each native record; a response that names none (a native sub-resource, a
refusal) is recorded for the patient of the plan its URL names.

Records hold who, what, when, from where and with what outcome: never a request body, a
token or free text. A search's parameters are kept, since they are what was looked for,
without the value of any parameter that can carry a secret.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlencode

from flask import Flask, Response, current_app, g, has_request_context, request
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import OperationalError

from api import metrics
from api.audit_writer import WriterClient, WriterUnavailable
from api.auth.principal import current_principal
from api.client_address import source_address
from api.http import ANONYMOUS
from api.problems import problem
from fhir_mappings.audit_event import (
    ACTIONS,
    LOGIN,
    SEARCH_INTERACTIONS,
    WRITE_INTERACTIONS,
    AuditFacts,
    outcome_of,
    patient_searched,
    patients_in,
    redact_query,
    reference,
    render_audit_event,
)
from fhir_mappings.projection import serialise
from fhir_mappings.search_parameters import normalise_reference
from service import audit_journal
from service.db import Appender, Database
from service.editing import PlanEdit
from service.models import AuditRecord, CarePlan, PlanChange, StoredResource, new_id, utcnow

log = logging.getLogger("ipt_careplans.audit")

TOKEN_PATH = "/auth/token"
_ACTOR = re.compile(r"^[\w.@:/+\- ]{1,255}$")
# FHIR paths that serve no patient data: the CapabilityStatement and conformance resources.
_UNAUDITED_FHIR = ("metadata", "StructureDefinition", "CodeSystem", "ValueSet", "Basic")
# FHIR views whose names are not their interaction's code (the others' are).
_FHIR_INTERACTIONS = {
    "instance_history": "history-instance",
    "type_history": "history-type",
    "system_history": "history-system",
    "search_type": "search-type",
    "search_post": "search-type",
    "conditional_update": "update",
    "audit_read": "read",
    "audit_search": "search-type",
    "subscription_create": "create",
    "subscription_read": "read",
    "subscription_update": "update",
    "subscription_delete": "delete",
    "subscription_search": "search-type",
    "subscription_status": "operation",
    "subscription_status_type": "operation",
    "subscription_events": "operation",
    "export_system": "operation",
    "export_patients": "operation",
    "export_patient": "operation",
    "export_status": "operation",
    "export_cancel": "operation",
    "export_file": "operation",
}
# Native routes whose URL does not end with an id but that read one document of a plan.
_ONE_DOCUMENT = ("/progress",)
_BY_METHOD = {
    "HEAD": "read",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


# --- what a request did ---------------------------------------------------------------------


def is_audited() -> bool:
    """Whether the current request touches patient data: the native API and the FHIR
    interface, except the CapabilityStatement and the conformance resources."""
    if request.method == "OPTIONS":
        return False
    if request.path == TOKEN_PATH:
        return request.method == "POST"
    parts = request.path.split("/")
    if parts[1:3] == ["api", "v1"]:
        # The instrument declarations hold no patient data, as the FHIR conformance
        # resources do not.
        return parts[3:4] != ["instruments"]
    return parts[1] == "fhir" and (len(parts) < 3 or parts[2] not in _UNAUDITED_FHIR)


def interaction() -> str:
    """The restful-interaction code of the current request."""
    cached: str | None = g.get("audit_interaction")
    if cached is not None:
        return cached
    endpoint = request.endpoint or ""
    found: str | None = None
    if request.path == TOKEN_PATH:
        found = LOGIN
    elif endpoint == "fhir.bundle":
        found = _bundle_kind()
    elif endpoint.startswith("fhir."):
        view = endpoint.removeprefix("fhir.")
        found = _FHIR_INTERACTIONS.get(view, view if view in ACTIONS else None)
    elif endpoint == "safety-signals.Acknowledgement":
        found = "update"  # a POST that changes the signal
    elif request.method in ("GET", "HEAD") and request.url_rule is not None:
        rule = request.url_rule.rule
        if rule.endswith(">") or rule.endswith(_ONE_DOCUMENT):
            found = "read"
        else:
            found = "history-instance" if rule.endswith("/changes") else "search-type"
    g.audit_interaction = found or _BY_METHOD.get(request.method, "read")
    return str(g.audit_interaction)


def _bundle_kind() -> str:
    try:
        body = request.get_json(silent=True, force=True)
    except Exception:  # too large or unreadable: the Bundle's kind stays unknown
        body = None
    kind = body.get("type") if isinstance(body, dict) else None
    return "batch" if kind == "batch" else "transaction"


def route_entity() -> str | None:
    """The resource the URL names: a FHIR resource, or a native goal or plan."""
    args = request.view_args or {}
    endpoint = request.endpoint or ""
    if endpoint.startswith("fhir.audit_"):
        return reference("AuditEvent", args.get("audit_id"))
    if endpoint.startswith("fhir."):
        return reference(args.get("resource_type"), args.get("resource_id"))
    if request.path.startswith("/api/"):
        goal = reference("Goal", args.get("goal_id"))
        return goal or reference("CarePlan", args.get("plan_id"))
    return None


def _patient_hint(entity: str | None) -> tuple[str, str] | None:
    """Where the patient of the URL's plan or resource (``entity``, from
    :func:`route_entity`) can be looked up."""
    plan_id = (request.view_args or {}).get("plan_id")
    if plan_id is not None and request.path.startswith("/api/") and reference("CarePlan", plan_id):
        return "plan", str(plan_id)
    if entity is not None and entity.startswith(("CarePlan/", "Goal/")):
        resource_type, _, resource_id = entity.partition("/")
        return resource_type, resource_id
    return None


def note_patient(patient: str | None) -> None:
    """The patient whose record the request read, when its handler has it at hand: the
    audit record names it as it is, without looking the plan up when it is written."""
    g.audit_patient = patient


def _parameters() -> list[tuple[str, str]]:
    params = list(request.args.items(multi=True))
    if request.endpoint == "fhir.search_post":
        params += list(request.form.items(multi=True))
    return params


def search_query() -> str | None:
    """A search's parameters as sent (a POST _search's form included), with the value of
    every parameter that can carry a secret redacted."""
    if request.endpoint == "fhir.search_post":
        return redact_query(urlencode(_parameters())) or None
    return redact_query(request.query_string.decode("utf-8", "replace")) or None


def agent() -> tuple[str, str | None, str | None]:
    """(actor, client id, user) of the caller.

    The actor is whom the change log names (``api.http.actor``): the user an authenticated
    client names in X-Actor, else the token's user or client. The user is the one the
    token names (an identity provider's ``fhirUser``, else ``sub``), never X-Actor: a name
    the client asserts is kept as the actor alone, and the AuditEvent shows it as asserted
    by the client (``AuditFacts.asserted_user``). A request for a token names the client
    it claims.
    """
    header = request.headers.get("X-Actor")
    # An invalid name was refused with 400; the attempt is still recorded, unattributed.
    named = header if header and _ACTOR.match(header) else None
    principal = current_principal()
    if principal is None:
        claimed = _token_client() if request.path == TOKEN_PATH else None
        return named or claimed or ANONYMOUS, claimed, None
    return named or principal.user or principal.client_id, principal.client_id, principal.user


def _token_client() -> str | None:
    """The client a token request names: its HTTP Basic user, its ``client_id``, or its
    client assertion's issuer (as claimed: the endpoint checks it). Never a secret."""
    authorization = request.authorization
    if authorization is not None and authorization.type == "basic" and authorization.username:
        return str(authorization.username)[:255]
    client_id = request.form.get("client_id")
    if client_id:
        return client_id[:255]
    assertion = request.form.get("client_assertion")
    if assertion and assertion.count(".") == 2:
        try:
            payload = assertion.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        issuer = claims.get("iss") if isinstance(claims, dict) else None
        return issuer[:255] if isinstance(issuer, str) and issuer else None
    return None


def _started() -> datetime:
    started: datetime | None = g.get("audit_started")
    return started or utcnow()


# Rows go in through the table: every request adds one, without the ORM's bookkeeping.
_AUDIT_EVENTS = cast(Table, AuditRecord.__table__)


def _row(**fields: Any) -> dict[str, Any]:
    """The audit_events row of the current request: its facts, column by column (the
    AuditEvent is rendered from them when it is read). ``fields`` are the facts that depend
    on what the request did; who asked, from where and when are added here."""
    name, client_id, user = agent()
    row = {
        "id": new_id(),
        "started": _started(),
        "agent": name,
        "client_id": client_id,
        "user_name": user,
        "address": source_address(),
        "request_id": g.get("request_id") or None,
        "status": None,
        "entity": None,
        "query": None,
        "patient": None,
        **fields,
    }
    # What a client sent (a claimed client id, a path) is kept as text either database
    # stores: a NUL or a lone surrogate would make the record, and so the response, fail.
    return {
        key: _storable(value) if isinstance(value, str) else value for key, value in row.items()
    }


def _storable(text: str) -> str:
    if "\x00" not in text and text.isascii():
        return text
    cleaned = text.replace("\x00", "\ufffd")
    return cleaned.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def facts_of(record: AuditRecord) -> AuditFacts:
    """The facts of a stored record written with columns (not ``content``)."""
    return AuditFacts(
        id=record.id,
        recorded=record.recorded,
        started=record.started or record.recorded,
        interaction=record.interaction or "",
        action=record.action,
        outcome=record.outcome,
        agent=record.agent,
        status=record.status,
        client_id=record.client_id,
        user=record.user_name,
        address=record.address,
        request_id=record.request_id,
        entity=record.entity,
        query=record.query,
        patient=record.patient,
    )


def stored_event(record: AuditRecord) -> str:
    """The AuditEvent of a record as served: the stored text of a record that has one,
    else rendered from its facts (the same rendering either way)."""
    if record.content is not None:
        return record.content
    return serialise(render_audit_event(facts_of(record)))


# --- writes: recorded in their own transaction ----------------------------------------------


def record_write(edit: PlanEdit) -> None:
    """Observer of every change to a plan: add its audit record to the write transaction.

    Outside a request (the command line, scripts) there is no one to attribute the change
    to beyond the change log, and nothing is recorded.
    """
    if not has_request_context() or not is_audited():
        return
    kind = interaction()
    plan = edit.plan
    if kind in ("transaction", "batch"):
        created = plan.created_at >= _started()
        action = "D" if plan.is_deleted else "C" if created else "U"
    else:
        action = ACTIONS.get(kind, "U")
    row = _row(
        recorded=edit.now,
        interaction=kind,
        action=action,
        outcome="0",
        entity=_written_entity(edit),
        patient=plan.patient,
    )
    edit.session.execute(insert(_AUDIT_EVENTS), [row])
    g.audit_recorded = True
    # The patients a write recorded need no other record of the same request.
    g.setdefault("audit_written", set()).add(plan.patient)


def _written_entity(edit: PlanEdit) -> str:
    """The resource the write touched: a goal a native request added, the URL's resource,
    the first one a FHIR client wrote, or else the plan."""
    if request.endpoint == "goals.Goals":
        # The new goal's id is not in the URL: the change log of this version has it.
        goal_id = edit.session.scalar(
            select(PlanChange.entity_id).where(
                PlanChange.plan_id == edit.plan.id,
                PlanChange.plan_version == edit.plan.version,
                PlanChange.entity == "goal",
                PlanChange.action == "create",
            )
        )
        if goal_id:
            return f"Goal/{goal_id}"
    named = route_entity()
    if named is not None:
        return named
    if edit.attachments:
        resource_type, resource_id = next(iter(edit.attachments))
        return f"{resource_type}/{resource_id}"
    return f"CarePlan/{edit.plan.id}"


# --- everything else: committed before the response leaves ---------------------------------


class AuditUnavailable(Exception):
    """The request's audit records could not be committed: its response must not leave."""


def _after_request(response: Response) -> Response:
    if not is_audited():
        return response
    try:
        items = _records(response)
    except Exception:
        log.exception("the request's audit records could not be made")
        return _unaudited()
    if request.path == TOKEN_PATH and response.status_code >= 400 and items:
        row = items[0][0]
        log.warning(
            "token request refused",
            extra={
                "request_id": row["request_id"],
                "client_id": row["client_id"],
                "address": row["address"],
                "status": response.status_code,
            },
        )
    if not items:
        return response
    try:
        current_app.extensions["ipt_audit"].commit(items)
    except AuditUnavailable:
        return _unaudited()
    return response


def _unaudited() -> Response:
    """What is sent instead of a response whose audit records could not be committed:
    nothing of what it held, and a request to retry."""
    # The response it replaces is dropped: a write it made stays made (its own audit
    # record was committed with it) and a retry finds it, by ETag or If-None-Exist.
    return problem(
        503,
        "the request could not be recorded in the audit trail: nothing was returned; retry shortly",
        headers={"Retry-After": "1"},
    )


def _records(response: Response) -> list[_Pending]:
    """The audit records of the request: one per patient whose data the response holds or
    the request was for (IHE BALP), or one naming no patient (its patient looked up from
    the plan its URL names when it is written); none beyond the records a successful write
    committed with its own changes."""
    kind = interaction()
    status = response.status_code
    written: set[str | None] = g.get("audit_written") or set()
    wrote = kind in WRITE_INTERACTIONS and status < 400 and g.get("audit_recorded")
    named = entity = route_entity()
    if entity is None and kind == "create" and status < 400:
        entity = _located(response)
    searched = kind in SEARCH_INTERACTIONS
    patients: dict[str, None] = {}
    for patient in (
        patient_searched(_parameters()) if searched else None,
        g.get("audit_patient"),
        # A streamed body (an export file) is named by its handler.
        *(g.get("audit_patients") or ()),
        *_patients_returned(response),
    ):
        if patient and not (wrote and patient in written):
            patients[patient] = None
    if wrote and not patients:
        return []  # committed with the write
    facts = {
        "recorded": utcnow(),
        "interaction": kind,
        "action": ACTIONS.get(kind, "E" if kind == LOGIN else "R"),
        "outcome": outcome_of(status),
        "status": status,
        "entity": entity,
        "query": search_query() if searched or kind == "operation" else None,
    }
    if not patients:
        return [(_row(**facts), _patient_hint(named))]
    return [(_row(**facts, patient=patient), None) for patient in patients]


def _patients_returned(response: Response) -> list[str]:
    """The patients whose records the response body holds."""
    if response.direct_passthrough or response.is_streamed or response.status_code >= 400:
        return []
    if not (response.mimetype or "").endswith("json"):
        return []
    return patients_in(response.get_data())


def _located(response: Response) -> str | None:
    """The resource a FHIR Location header names (a conditional create's existing match)."""
    location = response.headers.get("Location")
    if not location or not request.path.startswith("/fhir"):
        return None
    parts = normalise_reference(location.split("/_history")[0]).split("/")
    return reference(parts[0], parts[1]) if len(parts) == 2 else None


# A row to write, and where its patient is looked up first: ("plan", id) or (type, id).
_Pending = tuple[dict[str, Any], tuple[str, str] | None]


@dataclass(eq=False)
class _Batch:
    """The records of the requests that go in one transaction, and how it ended for each
    request (by its place in ``requests``): None for committed, else the error."""

    requests: list[list[_Pending]] = field(default_factory=list)
    outcomes: list[BaseException | None] | None = None


class AuditLog:
    """Commits the audit records of reads, searches and refusals before their responses
    leave, a group of concurrent requests per transaction (group commit).

    A request hands its records over and waits. If no transaction of audit records is
    under way in the process, the request runs one itself, with every record handed over
    so far; otherwise it waits for that one to end, and then one of the requests whose
    records came in meanwhile commits them all. Under load a transaction carries the
    records of every request that arrived during the one before; alone, a request commits
    its own, in its own thread: no thread is woken to do it. A request returns once its
    records are committed (as durably as any write: SQLite's ``synchronous=FULL``,
    PostgreSQL's ``synchronous_commit``), or raises :class:`AuditUnavailable`: nothing is
    held in memory beyond the requests waiting, so nothing can be lost, and when the
    database is slow the requests are.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._appender = Appender(database, audit_journal.JOURNAL)
        self._writer: WriterClient | None = None
        self._mover: threading.Thread | None = None
        self._reset()

    def use_writer(self, path: str) -> None:
        """Hand records to the server's audit writer (api.audit_writer) at ``path``,
        instead of committing them here."""
        self._writer = WriterClient(path)

    def commit_many(self, requests: list[list[_Pending]]) -> list[bool]:
        """Commit the records of several requests at once (the audit writer's batches):
        whether each request's were committed."""
        return [error is None for error in self._run(requests)]

    def _reset(self) -> None:
        # After a fork, the parent's locks do not carry over to the child, nor its threads.
        self._changed = threading.Condition(threading.Lock())
        self._open = _Batch()
        self._busy = False
        self._journaled = 0  # records committed to the journal since the last move began
        self._move_due = threading.Event()
        self._mover = None

    def move_in_background(self, every: float) -> None:
        """Move the journal's records into the trail from a thread of this process: every
        ``every`` seconds while records come in, and as soon as a batch's worth is waiting
        (the audit writer's process does this). What an earlier process left in the
        journal moves first."""
        with self._changed:
            self._journaled = max(self._journaled, 1)
        self._move_due.set()
        self._mover = threading.Thread(
            target=self._keep_moving, args=(every,), name="audit-journal-move", daemon=True
        )
        self._mover.start()

    def _keep_moving(self, every: float) -> None:
        while True:
            self._move_due.wait(timeout=every)
            self._move_due.clear()
            self._move_journal()

    def _move_journal(self) -> None:
        with self._changed:
            if not self._journaled:
                return
            self._journaled = 0
        try:
            audit_journal.move(self.database)
        except Exception:
            # The records stay in the journal, as durable as in the trail, and move with
            # the next batch or the next read of the trail.
            log.exception("audit records could not be moved from the journal")

    def _journal_grew(self, records: int) -> None:
        with self._changed:
            self._journaled += records
            due = self._journaled >= audit_journal.BATCH
        if due and self._mover is not None:
            self._move_due.set()

    def commit(self, records: list[_Pending]) -> None:
        """Commit a request's records; return once they are, or raise AuditUnavailable."""
        if self._writer is not None:
            try:
                self._writer.commit(records)
            except WriterUnavailable as error:
                log.error("audit records could not be committed: %s", error)
                raise AuditUnavailable() from error
            return
        with self._changed:
            batch = self._open
            place = len(batch.requests)
            batch.requests.append(records)
            while batch.outcomes is None and self._busy:
                self._changed.wait()
            if batch.outcomes is None:
                # No transaction under way: this request runs the one for its batch.
                self._busy = True
                self._open = _Batch()
        if batch.outcomes is None:
            outcomes: list[BaseException | None] | None = None
            try:
                outcomes = self._run(batch.requests)
            finally:
                # Also when this thread is interrupted: the others waiting are told.
                with self._changed:
                    batch.outcomes = outcomes or [AuditUnavailable("interrupted")] * len(
                        batch.requests
                    )
                    self._busy = False
                    self._changed.notify_all()
        failure = batch.outcomes[place]
        if failure is not None:
            raise AuditUnavailable() from failure
        if self._mover is None and self._journaled >= audit_journal.BATCH:
            # Without a mover thread (no audit writer), a batch's worth is moved by the
            # request that completes it, after its own records are committed.
            self._move_journal()

    def _run(self, requests: list[list[_Pending]]) -> list[BaseException | None]:
        """Commit the records of several requests in one transaction; if it is refused for
        something in them rather than for the database, each request's in its own."""
        items = [item for records in requests for item in records]
        try:
            self._write(items)
            metrics.count_audit_commit(len(items), committed=True)
            self._journal_grew(len(items))
            return [None] * len(requests)
        except OperationalError as error:
            metrics.count_audit_commit(len(items), committed=False)
            log.error("audit records could not be committed", extra={"requests": len(requests)})
            return [error] * len(requests)
        except Exception:
            metrics.count_audit_commit(len(items), committed=False)
            if len(requests) == 1:
                log.exception("audit records refused")
                return [AuditUnavailable("refused")]
        return [self._run([records])[0] for records in requests]

    def _write(self, batch: list[_Pending]) -> None:
        hints = [hint for _, hint in batch if hint]
        patients = self._patients(hints) if hints else {}
        rows = []
        for row, hint in batch:
            patient = patients.get(hint) if hint else None
            rows.append({**row, "patient": patient} if patient else row)
        self._appender.append(rows)

    def _patients(self, hints: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The patient of each plan or resource named."""
        plan_of = {("plan", i): i for kind, i in hints if kind == "plan"}
        resource_ids: dict[str, set[str]] = {}
        for kind, resource_id in hints:
            if kind != "plan":
                resource_ids.setdefault(kind, set()).add(resource_id)
        with self.database.reading() as session:
            # By type and id: the primary key answers it, not a scan of every resource.
            for resource_type, ids in resource_ids.items():
                stored = select(StoredResource.id, StoredResource.plan_id).where(
                    StoredResource.resource_type == resource_type, StoredResource.id.in_(ids)
                )
                for resource_id, plan_id in session.execute(stored):
                    plan_of[(resource_type, resource_id)] = plan_id
            plans = select(CarePlan.id, CarePlan.patient).where(
                CarePlan.id.in_(set(plan_of.values()))
            )
            patient_of = {plan_id: patient for plan_id, patient in session.execute(plans)}
        return {hint: patient_of[plan] for hint, plan in plan_of.items() if plan in patient_of}


_logs: weakref.WeakSet[AuditLog] = weakref.WeakSet()


def _after_fork() -> None:
    for audit_log in list(_logs):
        audit_log._reset()


os.register_at_fork(after_in_child=_after_fork)


def install(app: Flask, database: Database) -> None:
    """Record writes with the database's changes, and everything else after the response."""
    if record_write not in database.observers:
        database.observers.append(record_write)
    audit_log = AuditLog(database)
    _logs.add(audit_log)
    app.extensions["ipt_audit"] = audit_log

    @app.before_request
    def audit_start() -> None:
        g.audit_started = utcnow()

    app.after_request(_after_request)
