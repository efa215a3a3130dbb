"""The rating scales the service records: their items, answers, bands and rules."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api.http import ApiBlueprint, documented
from api.schemas import InstrumentListSchema, InstrumentSchema
from service.errors import NotFound
from service.instruments import INSTRUMENTS

blp = ApiBlueprint(
    "instruments",
    __name__,
    url_prefix="/api/v1/instruments",
    description="The declarations of PHQ-9 and GAD-7, to build forms from: items with their "
    "link ids and LOINC codes, answer options with codes and scores, severity bands, the "
    "minimal important change, response and remission. No patient data: any authenticated "
    "client may read them.",
)


@blp.route("")
class Instruments(MethodView):
    @blp.response(200, InstrumentListSchema)
    @documented(blp)
    def get(self) -> Any:
        """List the instruments"""
        return {"items": list(INSTRUMENTS.values())}


@blp.route("/<key>")
class Instrument(MethodView):
    @blp.response(200, InstrumentSchema)
    @documented(blp, 404)
    def get(self, key: str) -> Any:
        """Read an instrument

        `key` is phq-9 or gad-7.
        """
        instrument = INSTRUMENTS.get(key)
        if instrument is None:
            raise NotFound(f"no instrument {key!r}; the instruments are: {', '.join(INSTRUMENTS)}")
        return instrument
