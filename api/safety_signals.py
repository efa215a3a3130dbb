"""Safety signals of a care plan: raised by an answer, closed by a clinician's acknowledgement."""

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
from api.schemas import AcknowledgementSchema, SafetySignalSchema, SignalQuerySchema, page_of
from service import administrations

blp = ApiBlueprint(
    "safety-signals",
    __name__,
    url_prefix="/api/v1/care-plans/<plan_id>/safety-signals",
    description="Signals raised by PHQ-9 item 9 (thoughts of death or self-harm) answered above "
    "0; open until a clinician acknowledges them, saying what was done.",
)


@blp.route("")
class SafetySignals(MethodView):
    @blp.arguments(SignalQuerySchema, location="query")
    @blp.response(200, page_of(SafetySignalSchema))
    @documented(blp, 404, 410, 422)
    def get(self, query: dict[str, Any], plan_id: str) -> Any:
        """List the safety signals of a care plan

        Oldest first; filter by `status` (open, acknowledged).
        """
        found = administrations.list_signals(database(), plan_id, query.pop("status", None))
        return slice_page(found, query)


@blp.route("/<signal_id>")
class SafetySignal(MethodView):
    @blp.response(200, SafetySignalSchema, example=examples.SAFETY_SIGNAL, headers=ETAG_HEADER)
    @documented(blp, 304, 404, 410, parameters=[IF_NONE_MATCH])
    def get(self, plan_id: str, signal_id: str) -> Any:
        """Read a safety signal"""
        return conditional(administrations.get_signal(database(), plan_id, signal_id))


@blp.route("/<signal_id>/acknowledge")
class Acknowledgement(MethodView):
    @blp.arguments(AcknowledgementSchema, example=examples.ACKNOWLEDGEMENT)
    @blp.response(200, SafetySignalSchema, headers=ETAG_HEADER)
    @documented(blp, 400, 404, 410, 412, 413, 415, 422, parameters=[IF_MATCH, X_ACTOR])
    def post(self, data: dict[str, Any], plan_id: str, signal_id: str) -> Any:
        """Acknowledge a safety signal

        Says what was done (`action_taken`); the acknowledgement names the caller (its
        X-Actor) and the time. Once only: an acknowledged signal is not acknowledged again
        (422), and nothing else closes a signal.
        """
        signal = administrations.acknowledge_signal(
            database(), plan_id, signal_id, data["action_taken"], actor(), expected_version()
        )
        return versioned(signal, signal.version)
