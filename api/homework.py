"""Homework: between-session tasks of a care plan and the patient's report of them."""

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
    HomeworkFields,
    HomeworkPatchSchema,
    HomeworkSchema,
    PageQuerySchema,
    page_of,
)
from service import homework

blp = ApiBlueprint(
    "homework",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>/homework",
    description="Optional tasks the patient tries between sessions, and what they report.",
)


@blp.route("")
class HomeworkList(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(HomeworkSchema))
    @documented(blp, 404, 410, 422)
    def get(self, query: dict[str, Any], plan_id: str) -> Any:
        """List the homework of a care plan"""
        return slice_page(homework.list_homework(database(), plan_id), query)

    @blp.arguments(HomeworkFields, example=examples.HOMEWORK_CREATE)
    @blp.response(201, HomeworkSchema, example=examples.HOMEWORK, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 413, 415, 422, parameters=[X_ACTOR])
    def post(self, data: dict[str, Any], plan_id: str) -> Any:
        """Assign homework

        It belongs to the phase in progress unless `phase` names another, is assigned
        today unless `assigned_on` says otherwise, and is due no earlier than assigned.
        """
        task = homework.assign_homework(database(), plan_id, data, actor())
        return created(task, f"/api/v1/care-plans/{plan_id}/homework/{task.id}")


@blp.route("/<homework_id>")
class Homework(MethodView):
    @blp.response(200, HomeworkSchema, example=examples.HOMEWORK, headers=ETAG_HEADER)
    @documented(blp, 304, 404, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str, homework_id: str) -> Any:
        """Read homework"""
        return conditional(homework.get_homework(database(), plan_id, homework_id))

    @blp.arguments(HomeworkPatchSchema(partial=True))
    @blp.response(200, HomeworkSchema, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 412, 413, 415, 422, parameters=[IF_MATCH, X_ACTOR])
    def patch(self, data: dict[str, Any], plan_id: str, homework_id: str) -> Any:
        """Change homework or record its outcome

        Status moves assigned → in-progress → completed / not-done / cancelled. Once
        finished, only the patient's report can still change.
        """
        task = homework.update_homework(
            database(), plan_id, homework_id, data, actor(), expected_version()
        )
        return versioned(task, task.version)

    @blp.response(204)
    @documented(blp, 400, 404, 410, 412, parameters=[IF_MATCH, X_ACTOR])
    def delete(self, plan_id: str, homework_id: str) -> Any:
        """Delete homework"""
        homework.delete_homework(database(), plan_id, homework_id, actor(), expected_version())
        return None
