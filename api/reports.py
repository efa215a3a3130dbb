"""Reports of the clinic: aggregate figures over a period, with small cells suppressed."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api.auth.access import Forbidden, compartment
from api.http import ApiBlueprint, database, documented
from api.measurement_examples import OUTCOMES
from api.measurement_schemas import OutcomesQuerySchema, OutcomesReportSchema
from service import outcomes

blp = ApiBlueprint(
    "reports",
    __name__,
    url_prefix="/api/v1/reports",
    description="Aggregate reports of the clinic: no patient is named in them.",
)


@blp.route("/outcomes")
class OutcomesReport(MethodView):
    @blp.arguments(OutcomesQuerySchema, location="query")
    @blp.response(200, OutcomesReportSchema, example=OUTCOMES)
    @documented(blp, 422)
    def get(self, query: dict[str, Any]) -> Any:
        """Report the clinic's outcomes over a period

        The period runs from `from` to `to`, both days included; `problem_area` (the
        plans' primary one) and `variant` narrow it. Figures, in total, by primary problem
        area and by variant: plans started and closed; courses ended (closed, the last
        session of the termination phase attended, or a third no-show in a row) with
        their drop-outs (revoked, completed before the contract's sessions were attended,
        or three no-shows in a row) and mean sessions attended; acute courses ended
        (completed, or the termination phase's last session attended) and, of those with
        a PHQ-9 baseline and a later score, the response and remission rates and the
        mean change at the end of the acute course.

        Only aggregate figures: a figure computed from fewer than 5 distinct patients is
        null with `suppressed: true` and the reason, and when that leaves a single
        suppressed row in a breakdown, the row with the next fewest patients is
        suppressed too, so that no suppressed figure can be recomputed from the total.
        A token confined to one patient cannot read it.
        """
        if compartment() is not None:
            raise Forbidden(
                "the outcomes report covers every patient of the clinic: a token confined "
                "to one patient cannot read it"
            )
        report = outcomes.outcomes_report(
            database(),
            query["from_"],
            query["to"],
            query.get("problem_area"),
            query.get("variant"),
        )
        return outcomes.report_dict(report)
