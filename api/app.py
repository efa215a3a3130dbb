"""The Flask application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask, redirect, request

from api import (
    administrations,
    audit,
    body,
    docs,
    goals,
    headers,
    health,
    homework,
    instruments,
    metrics,
    openapi_finish,
    phases,
    plans,
    problems,
    progress,
    progress_documents,
    reports,
    request_log,
    safety_signals,
    sessions,
)
from api.auth import endpoints as auth_endpoints
from api.auth import guard
from api.config import Settings, key_encryption_key, load
from api.export_worker import ExportWorker
from api.fhir import audit_routes as fhir_audit  # noqa: F401  (registers /fhir/AuditEvent)
from api.fhir import bundle as fhir_bundle  # noqa: F401  (registers POST /fhir)
from api.fhir import capability as fhir_capability
from api.fhir import export as fhir_export  # noqa: F401  (registers the $export routes)
from api.fhir import openapi as fhir_openapi
from api.fhir import resources as fhir_resources
from api.fhir import search as fhir_search  # noqa: F401  (registers the search routes)
from api.fhir import subscriptions as fhir_subscriptions  # noqa: F401  (registers /fhir/Subscription)
from api.fhir import writes as fhir_writes  # noqa: F401  (registers the write routes)
from api.fhir.http import negotiate
from api.http import release_read_connection
from api.problems import ProblemApi, problem
from fhir_mappings.projection import publish
from service import sealing
from service.db import Database
from service.sealing import KEK_VARIABLE

API_DESCRIPTION = """\
Interpersonal psychotherapy (IPT) care plans for depression: the course, its treatment
contract and phases, its goals, the homework between sessions and the sessions themselves.

* JSON in and out, snake_case fields. Unknown fields are refused.
* Every record carries a `version`, also sent as its `ETag`. Send it back in `If-Match` on
  PATCH and DELETE: a change based on an outdated version is refused with 412 instead of
  overwriting someone else's change. `If-None-Match` on GET answers 304 when nothing changed.
* Errors are `application/problem+json` (RFC 9457); `errors` lists every invalid field with
  its path (`field`, and `pointer` as a JSON Pointer).
* `X-Actor` names the user or system making a change; it is recorded with the change and
  shown in `created_by`/`updated_by` and the plan's change log.
* Lists are paginated with `page` and `page_size` (at most 100) and return `total` and
  `links` to the other pages.
* Every route here needs `Authorization: Bearer <token>` (POST /auth/token with the
  client-credentials grant). SMART scopes decide what a token allows: the native API uses
  the scopes of the FHIR resources it touches (plans, phases, sessions and homework are
  CarePlans; goals are Goals). A token bound to a patient sees only that patient's plans.
  Each operation names the scope it needs. On the docs page, **Authorize** with a client's
  id and secret (the `smart` scheme) fetches a token and sends it with every request.
"""

BODY_METHODS = ("POST", "PUT", "PATCH")


def create_app(settings: Settings | None = None, database: Database | None = None) -> Flask:
    """Build the app. With no arguments it reads its settings from the environment."""
    settings = settings or load()
    request_log.configure_logging(settings.log_level)
    app = Flask("ipt_careplans")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="ipt-careplans",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {
                "description": API_DESCRIPTION,
                "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            },
            "components": {
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "An access token from POST /auth/token (OAuth2 client "
                        "credentials) or from the configured identity provider. SMART scopes "
                        "such as system/CarePlan.cruds decide what it allows.",
                    }
                }
            },
            "security": [{"bearer": []}],
        },
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db = database or Database(settings.database_url, pool_size=settings.db_pool_size)
    if settings.migrates_on_start:
        db.upgrade()
    app.extensions["ipt_database"] = db
    app.extensions["ipt_settings"] = settings
    # Channel headers of subscriptions are sealed under the signing keys' key-encryption key.
    sealing.use_key(
        key_encryption_key(KEK_VARIABLE, settings.key_encryption_key_file)
        if settings.key_encryption_key_file
        else None
    )
    app.extensions["ipt_export_worker"] = ExportWorker(db, settings)
    progress.install_cache(app, settings.progress_cache_entries)
    app.teardown_appcontext(release_read_connection)
    if release_read_connection not in db.before_writes:
        db.before_writes.append(release_read_connection)

    api = ProblemApi(app)
    app.extensions["ipt_api"] = api
    fhir_openapi.register_components(api.spec)
    for module in (
        plans,
        phases,
        goals,
        homework,
        sessions,
        administrations,
        safety_signals,
        instruments,
        progress,
        progress_documents,
        reports,
        fhir_capability,
        fhir_resources,
    ):
        api.register_blueprint(module.blp)
    if publish not in db.observers:
        db.observers.append(publish)
    # After publish: a write's audit record joins its transaction.
    audit.install(app, db)
    app.register_blueprint(health.blp)
    app.register_blueprint(docs.blp)
    auth_endpoints.register(app)
    openapi_finish.install(api.spec, app)
    problems.register(app)
    request_log.install(app)
    metrics.install(app, db)
    # Before the guard: it reads the path's ids, which must be text the database takes.
    body.install(app)
    guard.install(app)
    headers.install(app)

    @app.before_request
    def require_json_body() -> Any:
        body_expected = request.method in BODY_METHODS and request.path.startswith("/api/")
        if body_expected and not request.is_json:
            return problem(
                415,
                f"send the body as application/json, not {request.mimetype or 'nothing'}",
                kind="unsupported-media-type",
            )
        charset = request.mimetype_params.get("charset")
        if body_expected and charset is not None and charset.lower() not in ("utf-8", "utf8"):
            return problem(
                415, f"JSON is UTF-8, not charset={charset}", kind="unsupported-media-type"
            )
        return None

    @app.before_request
    def fhir_formats() -> None:
        # Export files are NDJSON: their route reads Accept itself.
        if request.path.startswith("/fhir/$export-file/"):
            return
        if request.path == "/fhir" or request.path.startswith("/fhir/"):
            negotiate()

    @app.get("/")
    def index() -> Any:
        # A browser (text/html preferred over JSON) is sent to the docs page; API clients,
        # */* included, get the JSON index.
        response: Any
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
            response = redirect("/docs", 302)
        else:
            response = app.json.response(
                {
                    "name": "ipt-careplans",
                    "api": "/api/v1",
                    "openapi": "/openapi.json",
                    "docs": "/docs",
                }
            )
        response.vary.add("Accept")
        return response

    return app
