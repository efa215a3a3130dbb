"""Administrations of rating scales (PHQ-9, GAD-7) in a care plan."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api import examples
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
from api.schemas import (
    AdministrationFields,
    AdministrationPatchSchema,
    AdministrationQuerySchema,
    AdministrationSchema,
    page_of,
)
from service import administrations

blp = ApiBlueprint(
    "administrations",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>/administrations",
    description="PHQ-9 and GAD-7 administrations: item answers and their total (or a total "
    "imported alone). Every score moves the plan's symptom goals; PHQ-9 item 9 answered above "
    "0 raises a safety signal.",
)


@blp.route("")
class Administrations(MethodView):
    @blp.arguments(AdministrationQuerySchema, location="query")
    @blp.response(200, page_of(AdministrationSchema))
    @documented(blp, 404, 410, 422)
    def get(self, query: dict[str, Any], plan_id: str) -> Any:
        """List the administrations of a care plan

        In the order they were taken (date, session number, then recording); filter by
        `instrument`.
        """
        found = administrations.list_administrations(
            database(), plan_id, query.pop("instrument", None)
        )
        return slice_page(found, query)

    @blp.arguments(AdministrationFields, example=examples.ADMINISTRATION_CREATE)
    @blp.response(201, AdministrationSchema, example=examples.ADMINISTRATION, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 413, 415, 422, parameters=[X_ACTOR])
    def post(self, data: dict[str, Any], plan_id: str) -> Any:
        """Record an administration

        `answers` holds the score (0-3) of every scored item by link id (see
        `GET /api/v1/instruments/{key}`); the total and its band are computed. A score
        imported from elsewhere is recorded as its `total` alone (`source` total-only).
        `session_number` names the attended session it was taken in (its date is then the
        default `administered_on`); one administration of an instrument per session. The
        plan's symptom goals on the instrument's total follow the new course of scores, and
        an answer above 0 to PHQ-9 item 9 raises a safety signal.
        """
        record = administrations.record_administration(database(), plan_id, data, actor())
        return created(record, f"/api/v1/care-plans/{plan_id}/administrations/{record.id}")


@blp.route("/<administration_id>")
class Administration(MethodView):
    @blp.response(200, AdministrationSchema, example=examples.ADMINISTRATION, headers=ETAG_HEADER)
    @documented(blp, 304, 404, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str, administration_id: str) -> Any:
        """Read an administration"""
        return conditional(
            administrations.get_administration(database(), plan_id, administration_id)
        )

    @blp.arguments(AdministrationPatchSchema(partial=True))
    @blp.response(200, AdministrationSchema, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 412, 413, 415, 422, parameters=[IF_MATCH, X_ACTOR])
    def patch(self, data: dict[str, Any], plan_id: str, administration_id: str) -> Any:
        """Correct an administration

        Only the fields sent change; new `answers` replace the old ones and the total is
        computed again, a `total` alone makes it total-only. The instrument does not change.
        The plan's symptom goals follow the corrected scores (a clinician's status gives way
        to the rules again).
        """
        record = administrations.update_administration(
            database(), plan_id, administration_id, data, actor(), expected_version()
        )
        return versioned(record, record.version)

    @blp.response(204)
    @documented(blp, 400, 404, 410, 412, parameters=[IF_MATCH, X_ACTOR])
    def delete(self, plan_id: str, administration_id: str) -> Any:
        """Delete an administration recorded in error

        The symptom goals follow the remaining scores; safety signals it raised stay until
        acknowledged.
        """
        administrations.delete_administration(
            database(), plan_id, administration_id, actor(), expected_version()
        )
        return None
