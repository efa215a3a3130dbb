"""Bulk data export (HL7 FHIR Bulk Data Access IG v2): kick-off, status, manifest, files.

A kick-off answers 202 with the status URL in ``Content-Location``; the job runs in the
background (:mod:`api.export_worker`). Only the client that asked (with the same patient
binding) sees the job's status and files; to anyone else they do not exist.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, current_app, g, request

from api.auth.access import Forbidden, allowed, compartment
from api.auth.principal import Principal, current_principal
from api.export_worker import ExportWorker
from api.fhir import export_request
from api.fhir.http import (
    FhirError,
    http_date,
    json_response,
    operation_outcome,
)
from api.fhir.openapi import responses
from api.fhir.resources import base_url, blp, check_id
from api.http import database
from fhir_mappings.projection import instant
from service import export_jobs
from service.models import ExportJob, utcnow

NDJSON = "application/fhir+ndjson"
_DOWNLOAD_TYPES = ("application/fhir+ndjson", "application/ndjson", "application/*", "*/*")
_KICK_OFF_ERRORS = (400, 403)


def _worker() -> ExportWorker:
    worker: ExportWorker = current_app.extensions["ipt_export_worker"]
    return worker


def _caller() -> Principal:
    principal = current_principal()
    if principal is None:  # the guard has authenticated every request here
        raise Forbidden("this route needs a bearer token")
    return principal


def _types(parsed: export_request.ExportRequest) -> list[str]:
    """The types to export: those asked for, each of which the caller may read (and search,
    with a _typeFilter), or every type it may read."""
    filtered = {query.split("?", 1)[0] for query in parsed.type_filters}
    if parsed.types is None:
        found = [t for t in export_request.PLAN_TYPES if allowed(t, "r")]
        if not found:
            raise Forbidden("the token's scopes allow reading none of the types exported")
        missing = [t for t in filtered if t in found and not allowed(t, "s")]
    else:
        found = parsed.types
        missing = [t for t in found if not allowed(t, "r")]
        missing += [t for t in filtered if allowed(t, "r") and not allowed(t, "s")]
    if missing:
        raise Forbidden(
            "the token's scopes do not allow exporting "
            + ", ".join(missing)
            + ": it needs system, user or patient/<type>.rs (read, and search for a _typeFilter)"
        )
    return found


def _kick_off(level: str, patient: str | None = None) -> Response:
    if not export_request.respond_async():
        raise FhirError(
            400,
            "invalid",
            "$export runs asynchronously: send Prefer: respond-async and poll the status URL",
        )
    principal = _caller()
    bound = compartment()
    if patient is not None and bound is not None and patient != bound:
        raise FhirError(404, "not-found", f"{patient} does not exist")
    parsed = export_request.parse(bound)
    types = _types(parsed)
    settings = current_app.extensions["ipt_settings"]
    db = database()
    export_jobs.purge_expired(db)
    now = utcnow()
    job = export_jobs.create(
        db,
        ExportJob(
            status=export_jobs.ACCEPTED,
            level=level,
            request=request.url,
            owner_client_id=principal.client_id,
            owner_patient=bound,
            patient=patient,
            types=types,
            since=parsed.since,
            type_filters=parsed.type_filters,
            warnings=parsed.warnings,
            file_bytes=settings.export_file_bytes,
            transaction_time=db.history_horizon(),
            created_at=now,
            expires_at=now + timedelta(seconds=settings.export_retention_seconds),
            done_types=[],
        ),
    )
    if patient is not None:
        g.audit_patient = patient
    elif bound is not None:
        g.audit_patient = bound
    _worker().poke()
    return operation_outcome(
        202,
        "informational",
        "the export was accepted: poll the URL in Content-Location for its status",
        headers={"Content-Location": f"{base_url()}/$export-status/{job.id}"},
        severity="information",
    )


_KICK_OFF_DOC = """Parameters (query, or a Parameters resource for POST): `_outputFormat`
(`application/fhir+ndjson`, `application/ndjson` or `ndjson`), `_type` (comma-separated),
`_since` (an instant: resources whose version current at the export's transaction time was
written at or after it; deleted ones are left out) and `_typeFilter` (FHIR search queries,
`Goal?lifecycle-status=active`). Any other parameter is refused with a 400 naming it, or
ignored under `Prefer: handling=lenient` (then reported in the manifest's error file).
Needs `Prefer: respond-async` and the read scope (`system/*.rs` or each type's) of every
type exported, and the search scope of every type filtered. A token bound to a patient
exports that patient's records only. Answers 202 with the status URL in `Content-Location`.
"""


@blp.route("/$export", methods=["GET", "POST"])
@blp.doc(
    description=_KICK_OFF_DOC,
    responses=responses({202: ("The export was accepted", "OperationOutcome")}, 400, 403),
)
def export_system() -> Response:
    """Export every resource (system-level $export)"""
    return _kick_off("system")


@blp.route("/Patient/$export", methods=["GET", "POST"])
@blp.doc(
    description=_KICK_OFF_DOC,
    responses=responses({202: ("The export was accepted", "OperationOutcome")}, 400, 403),
)
def export_patients() -> Response:
    """Export the records of every patient (patient-level $export)"""
    return _kick_off("patient")


@blp.route("/Patient/<patient_id>/$export", methods=["GET", "POST"])
@blp.doc(
    description=_KICK_OFF_DOC,
    responses=responses({202: ("The export was accepted", "OperationOutcome")}, 400, 403, 404),
)
def export_patient(patient_id: str) -> Response:
    """Export one patient's records (Patient/{id}/$export)"""
    check_id("Patient", patient_id)
    return _kick_off("patient", f"Patient/{patient_id}")


def _own_job(job_id: str) -> ExportJob:
    """The caller's job: another client's, an expired one and none at all are alike 404."""
    principal = _caller()
    job = export_jobs.find(database(), job_id)
    if (
        job is None
        or job.owner_client_id != principal.client_id
        or job.owner_patient != principal.patient
    ):
        raise FhirError(404, "not-found", f"there is no export {job_id}")
    return job


@blp.route("/$export-status/<job_id>", methods=["GET"])
@blp.doc(
    responses=responses(
        {
            200: ("The manifest (application/json)", None),
            202: ("Still running: X-Progress and Retry-After", None),
        },
        404,
    )
)
def export_status(job_id: str) -> Response:
    """The status of an export, and its manifest once complete

    202 with `X-Progress` and `Retry-After` while it runs; 200 with the manifest
    (`transactionTime`, `request`, `requiresAccessToken`, `output` and `error` files) and
    `Expires` once complete; 500 with an OperationOutcome if it failed. Only the client
    that started it sees it (404 for any other).
    """
    export_jobs.purge_expired(database())
    job = _own_job(job_id)
    if job.status in (export_jobs.ACCEPTED, export_jobs.IN_PROGRESS):
        if export_jobs.claimable(job, utcnow()):
            _worker().poke()
        progress = (
            "queued"
            if job.status == export_jobs.ACCEPTED
            else f"in progress: {job.exported} resources written"
        )
        response = Response(status=202)
        response.headers["X-Progress"] = progress
        response.headers["Retry-After"] = "2"
        return response
    if job.status == export_jobs.FAILED:
        return operation_outcome(500, "exception", job.error or "the export failed")
    headers = {"Expires": http_date(job.expires_at)}
    response = json_response(_manifest(job), 200, headers)
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    return response


def _manifest(job: ExportJob) -> dict[str, Any]:
    base = base_url()
    output, errors = [], []
    for file in export_jobs.files(database(), job.id):
        url = f"{base}/$export-file/{job.id}/{file.number}"
        if file.kind == "output":
            output.append({"type": file.resource_type, "url": url, "count": file.count})
        else:
            errors.append({"type": "OperationOutcome", "url": url, "count": file.count})
    return {
        "transactionTime": instant(job.transaction_time),
        "request": job.request,
        "requiresAccessToken": True,
        "output": output,
        "error": errors,
    }


@blp.route("/$export-status/<job_id>", methods=["DELETE"])
@blp.doc(responses=responses({202: ("Cancelled; its files are deleted", None)}, 404))
def export_cancel(job_id: str) -> Response:
    """Cancel an export, or delete a finished one's files

    Answers 202; the status URL and the files answer 404 from then on.
    """
    _own_job(job_id)
    export_jobs.cancel(database(), job_id)
    response = Response(status=202)
    del response.headers["Content-Type"]
    return response


def _accepts_ndjson() -> bool:
    header = request.headers.get("Accept", "").strip()
    if not header:
        return True
    kinds = [item.split(";")[0].strip().lower() for item in header.split(",")]
    return any(kind in _DOWNLOAD_TYPES for kind in kinds)


@blp.route("/$export-file/<job_id>/<int:number>", methods=["GET"])
@blp.doc(responses=responses({200: ("The file: NDJSON, one resource a line", None)}, 404, 406))
def export_file(job_id: str, number: int) -> Response:
    """Download a file of an export

    Streamed as `application/fhir+ndjson`, with the token that started the export. The
    download is audited once for each patient whose records the file holds.
    """
    job = _own_job(job_id)
    if not _accepts_ndjson():
        raise FhirError(406, "not-supported", f"export files are {NDJSON}")
    db = database()
    file = export_jobs.file(db, job.id, number)
    if file is None:
        raise FhirError(404, "not-found", f"export {job_id} has no file {number}")
    g.audit_patients = list(file.patients)
    response = Response(
        export_jobs.chunks(db, job.id, number, file.chunks),
        content_type=NDJSON,
        direct_passthrough=True,
    )
    response.headers["Content-Length"] = str(file.size)
    return response
