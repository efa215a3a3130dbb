"""Therapy sessions of a care plan, addressed by their number in the contract."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api import examples, paths
from api.http import (
    ETAG_HEADER,
    IF_MATCH,
    IF_NONE_MATCH,
    X_ACTOR,
    ApiBlueprint,
    actor,
    conditional,
    created,
    database,
    documented,
    expected_version,
    slice_page,
    versioned,
)
from api.schemas import PageQuerySchema, SessionFields, SessionPatchSchema, SessionSchema, page_of
from service import sessions

blp = ApiBlueprint(
    "sessions",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>/sessions",
    description="Sessions 1..planned_sessions: scheduled, attended, missed or cancelled.",
)
# Before the routes below are added: their <int:number> is then bounded (api.paths).
blp.record_once(lambda state: paths.install(state.app))


@blp.route("")
class Sessions(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(SessionSchema))
    @documented(blp, 404, 410, 422)
    def get(self, query: dict[str, Any], plan_id: str) -> Any:
        """List the sessions of a care plan

        In session-number order.
        """
        return slice_page(sessions.list_sessions(database(), plan_id), query)

    @blp.arguments(SessionFields, example=examples.SESSION_CREATE)
    @blp.response(201, SessionSchema, example=examples.SESSION, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 409, 410, 413, 415, 422, parameters=[X_ACTOR])
    def post(self, data: dict[str, Any], plan_id: str) -> Any:
        """Record a session

        Schedule it (status scheduled, the default) or document it. A session number lies
        within the contract and is recorded once (409 otherwise). Recording a session as
        attended moves the phases: its phase becomes active and earlier phases complete.
        PHQ-9 totals (0-27) and techniques belong to attended sessions.
        """
        record = sessions.record_session(database(), plan_id, data, actor())
        return created(record, f"/api/v1/care-plans/{plan_id}/sessions/{record.number}")


@blp.route("/<int:number>")
class Session(MethodView):
    @blp.response(200, SessionSchema, example=examples.SESSION, headers=ETAG_HEADER)
    @documented(blp, 304, 404, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str, number: int) -> Any:
        """Read a session"""
        return conditional(sessions.get_session(database(), plan_id, number))

    @blp.arguments(SessionPatchSchema(partial=True))
    @blp.response(200, SessionSchema, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 412, 413, 415, 422, parameters=[IF_MATCH, X_ACTOR])
    def patch(self, data: dict[str, Any], plan_id: str, number: int) -> Any:
        """Change a session or record how it went

        Status moves scheduled → attended / no-show / cancelled; a cancelled session can be
        scheduled again, and attended and no-show can be corrected into each other.
        """
        record = sessions.update_session(
            database(), plan_id, number, data, actor(), expected_version()
        )
        return versioned(record, record.version)

    @blp.response(204)
    @documented(blp, 400, 404, 410, 412, parameters=[IF_MATCH, X_ACTOR])
    def delete(self, plan_id: str, number: int) -> Any:
        """Delete a session recorded in error

        Its number can then be recorded again.
        """
        sessions.delete_session(database(), plan_id, number, actor(), expected_version())
        return None
