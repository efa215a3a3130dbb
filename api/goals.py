"""The goals of a care plan."""

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
from api.schemas import GoalFields, GoalPatchSchema, GoalSchema, PageQuerySchema, page_of
from service import goals

blp = ApiBlueprint(
    "goals",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>/goals",
    description="Symptom goals (measured by a scale such as PHQ-9) and problem-area goals.",
)


@blp.route("")
class Goals(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(GoalSchema))
    @documented(blp, 404, 410, 422)
    def get(self, query: dict[str, Any], plan_id: str) -> Any:
        """List the goals of a care plan"""
        return slice_page(goals.list_goals(database(), plan_id), query)

    @blp.arguments(GoalFields, example=examples.GOAL_CREATE)
    @blp.response(201, GoalSchema, example=examples.GOAL, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 413, 415, 422, parameters=[X_ACTOR])
    def post(self, data: dict[str, Any], plan_id: str) -> Any:
        """Add a goal

        A problem-area goal names one of the plan's problem areas; a symptom goal has
        none. A target names its measure (LOINC), a comparator and a value within the
        scale's range, and a due date not before the goal's start.
        """
        goal = goals.add_goal(database(), plan_id, data, actor())
        return created(goal, f"/api/v1/care-plans/{plan_id}/goals/{goal.id}")


@blp.route("/<goal_id>")
class Goal(MethodView):
    @blp.response(200, GoalSchema, example=examples.GOAL, headers=ETAG_HEADER)
    @documented(blp, 304, 404, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str, goal_id: str) -> Any:
        """Read a goal"""
        return conditional(goals.get_goal(database(), plan_id, goal_id))

    @blp.arguments(GoalPatchSchema(partial=True))
    @blp.response(200, GoalSchema, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 412, 413, 415, 422, parameters=[IF_MATCH, X_ACTOR])
    def patch(self, data: dict[str, Any], plan_id: str, goal_id: str) -> Any:
        """Change a goal

        Only the fields sent change; `target` is replaced as a whole. A goal entered in
        error no longer changes.
        """
        goal = goals.update_goal(database(), plan_id, goal_id, data, actor(), expected_version())
        return versioned(goal, goal.version)

    @blp.response(204)
    @documented(blp, 400, 404, 409, 410, 412, parameters=[IF_MATCH, X_ACTOR])
    def delete(self, plan_id: str, goal_id: str) -> Any:
        """Delete a goal

        Refused (409) while homework still serves the goal.
        """
        goals.delete_goal(database(), plan_id, goal_id, actor(), expected_version())
        return None
