"""The phases of a care plan: read them, change one's session range, status or dates."""

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
    database,
    documented,
    expected_version,
    slice_page,
    versioned,
)
from api.schemas import PageQuerySchema, PhasePatchSchema, PhaseSchema, page_of
from service import codes, phase_changes

blp = ApiBlueprint(
    "phases",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>/phases",
    description="Initial, middle and termination phases (or maintenance) and their sessions.",
)


@blp.route("")
class Phases(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(PhaseSchema))
    @documented(blp, 404, 410, 422)
    def get(self, query: dict[str, Any], plan_id: str) -> Any:
        """List the phases of a care plan

        In session order. Their ranges are contiguous and cover every session of the
        contract.
        """
        return slice_page(phase_changes.list_phases(database(), plan_id), query)


# The phase codes, so that clients (and generated ones) know every phase a plan can have; any
# other value is answered 404 like a phase the plan does not have.
PHASE_PARAMETER = {
    "in": "path",
    "name": "phase",
    "required": True,
    "description": "The phase's code",
    "schema": {"type": "string", "enum": codes.values(codes.PhaseCode)},
}


@blp.route("/<phase>", parameters=[PHASE_PARAMETER])
class Phase(MethodView):
    @blp.response(200, PhaseSchema, headers=ETAG_HEADER)
    @documented(blp, 304, 404, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str, phase: str) -> Any:
        """Read a phase

        `phase` is initial, middle, termination or maintenance.
        """
        return conditional(phase_changes.get_phase(database(), plan_id, phase))

    @blp.arguments(PhasePatchSchema(partial=True), example=examples.PHASE_PATCH)
    @blp.response(200, PhaseSchema, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 412, 413, 415, 422, parameters=[IF_MATCH, X_ACTOR])
    def patch(self, data: dict[str, Any], plan_id: str, phase: str) -> Any:
        """Change a phase

        Moving `start_session` or `end_session` moves the neighbouring phase's boundary
        with it, so the phases stay contiguous; a range that would swallow a neighbour
        whole is refused. The first phase starts at session 1 and the last ends with the
        contract. Setting `status` to active completes the earlier phases.
        """
        changed = phase_changes.update_phase(
            database(), plan_id, phase, data, actor(), expected_version()
        )
        return versioned(changed, changed.version)
