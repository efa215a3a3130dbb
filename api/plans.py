"""Care plans: create from the IPT template, list, read, change, delete; the change log."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask.views import MethodView

from api import examples
from api.auth.access import compartment, require_known_plan_identifiers, require_patient
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
    page_body,
    slice_page,
    versioned,
)
from api.schemas import (
    ChangeSchema,
    PageQuerySchema,
    PlanCreateSchema,
    PlanPatchSchema,
    PlanQuerySchema,
    PlanSchema,
    page_of,
    plan_page_schema,
)
from service import administrations, plans

blp = ApiBlueprint(
    "care-plans",
    __name__,
    url_prefix="/api/v1/care-plans",
    description="IPT care plans: one course of interpersonal psychotherapy for one patient.",
)


def plan_filter(query: dict[str, Any]) -> plans.PlanFilter:
    system, value = None, query.get("identifier")
    if value is not None and "|" in value:
        # "|value": an identifier without a system, which the plan keeps with the empty one.
        system, value = value.split("|", 1)
    return plans.PlanFilter(
        patient=query.get("patient"),
        statuses=tuple(query.get("status") or ()),
        problem_area=query.get("problem_area"),
        variant=query.get("variant"),
        updated_since=query.get("updated_since"),
        updated_before=query.get("updated_before"),
        identifier_system=system,
        identifier_value=value,
        include_deleted=query.get("include_deleted", False),
    )


def _plan_page(
    items: list[Any], page: int, size: int, total: int, criteria: plans.PlanFilter
) -> dict[str, Any]:
    """A page of plans; with ``updated_since``, the bound it was listed to, which its
    links keep (when the server picked it, the request did not name it)."""
    if criteria.updated_since is None or criteria.updated_before is None:
        return page_body(items, page, size, total)
    bound = {"updated_before": criteria.updated_before.isoformat()}
    return {**page_body(items, page, size, total, bound), "updated_before": criteria.updated_before}


def with_signals(*found: Any) -> None:
    """Give each plan its open safety signals (``open_safety_signals``), in one query."""
    live = [plan for plan in found if not plan.is_deleted]
    signals = administrations.open_signals(database(), [plan.id for plan in live])
    for plan in live:
        plan.open_safety_signals = signals.get(plan.id, [])


@blp.route("")
class CarePlans(MethodView):
    @blp.arguments(PlanQuerySchema, location="query")
    @blp.response(200, plan_page_schema())
    @documented(blp, 422)
    def get(self, query: dict[str, Any]) -> Any:
        """List care plans

        Filter by patient, status (repeatable), problem area, variant, an identifier
        (`system|value`), `updated_since` or `updated_before`. Oldest first, paginated;
        `total` counts every match and `links` lead to the other pages.

        To follow changes, poll with `updated_since` set to the previous page's
        `updated_before`: every plan changed since is listed once it has committed,
        however long its write took (the server picks `updated_before` so that no write
        still in progress is stamped before it, and the page links keep it). Add
        `include_deleted=true` to learn of deletions too: a plan deleted since is listed
        as a tombstone (`deleted: true`, its `id`, `patient`, `version` and `deleted_at`).
        """
        page, size = query["page"], query["page_size"]
        criteria = plan_filter(query)
        if criteria.updated_since is not None and criteria.updated_before is None:
            criteria = replace(criteria, updated_before=database().history_horizon())
        bound = compartment()
        if bound is not None:
            if criteria.patient not in (None, bound):
                return _plan_page([], page, size, 0, criteria)
            criteria = replace(criteria, patient=bound)
        items, total = plans.list_plans(database(), criteria, (page - 1) * size, size)
        with_signals(*items)
        return _plan_page(items, page, size, total, criteria)

    @blp.arguments(PlanCreateSchema, example=examples.PLAN_CREATE)
    @blp.response(201, PlanSchema, example=examples.PLAN, headers=ETAG_HEADER)
    @documented(blp, 400, 409, 413, 415, 422, parameters=[X_ACTOR])
    def post(self, data: dict[str, Any]) -> Any:
        """Create a care plan from the IPT template

        Creates the plan with its treatment contract, its phases (initial = sessions 1-3,
        termination = the last 3, middle in between; one maintenance phase for the
        maintenance variant) and, unless `default_goals` is false, the canonical goals of
        each problem area plus a symptom goal (PHQ-9 total below 5 by the end of the course).
        Only `patient`, `problem_areas` and `start_date` are required.
        """
        require_patient(data.get("patient"))
        require_known_plan_identifiers(None, data.get("identifiers"))
        plan = plans.create_plan(database(), data, actor())
        with_signals(plan)
        return created(plan, f"{blp.url_prefix}/{plan.id}")


@blp.route("/<plan_id>")
class CarePlan(MethodView):
    @blp.response(200, PlanSchema, example=examples.PLAN, headers=ETAG_HEADER)
    @documented(blp, 304, 404, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str) -> Any:
        """Read a care plan

        With its phases, identifiers, every treatment contract agreed so far and its open
        safety signals.
        """
        plan = plans.get_plan(database(), plan_id)
        with_signals(plan)
        return conditional(plan)

    @blp.arguments(PlanPatchSchema(partial=True), example=examples.PLAN_PATCH)
    @blp.response(200, PlanSchema, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 409, 410, 412, 413, 415, 422, parameters=[IF_MATCH, X_ACTOR])
    def patch(self, data: dict[str, Any], plan_id: str) -> Any:
        """Change a care plan

        Only the fields sent change; `null` clears an optional field. Changing
        `planned_sessions` or `session_frequency` renegotiates the contract: the old one
        stays in `contract_history` and the phases stretch to the new count (the
        termination phase keeps its length until it has begun, then its start) without
        moving any phase backwards; a count that cannot keep them is refused with 422. A
        completed, revoked or entered-in-error plan only accepts changes to its notes (and,
        for completed or revoked, the status entered-in-error). The patient of a plan never changes.

        A plan is completed only once every goal is finished, or with `open_goals` saying
        what becomes of those still open (`"resolve"`, or an outcome per goal); otherwise
        the completion is refused with 422 naming each open goal.
        """
        require_known_plan_identifiers(plan_id, data.get("identifiers"))
        plan = plans.update_plan(database(), plan_id, data, actor(), expected_version())
        with_signals(plan)
        return versioned(plan, plan.version)

    @blp.response(204)
    @documented(blp, 400, 404, 410, 412, parameters=[IF_MATCH, X_ACTOR])
    def delete(self, plan_id: str) -> Any:
        """Delete a care plan

        The plan and everything in it are kept for the record but no longer served:
        reading it afterwards answers 410 Gone.
        """
        plans.delete_plan(database(), plan_id, actor(), expected_version())
        return None


@blp.route("/<plan_id>/changes")
class PlanChanges(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(ChangeSchema))
    @documented(blp, 404, 410, 422)
    def get(self, query: dict[str, Any], plan_id: str) -> Any:
        """List the changes to a care plan

        Every change to the plan or to anything in it, oldest first: which record, what
        happened to which fields, the plan version it produced, who made it and when.
        """
        return slice_page(plans.list_changes(database(), plan_id), query)
