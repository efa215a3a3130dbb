"""Whole numbers in URL paths: bounded like every integer the API reads.

Every ``<int:...>`` segment of the app goes through :class:`BoundedInt`. It reads ASCII
digits only (werkzeug's own converter takes any Unicode digit and fails with an uncaught
error on a number too long for ``int``), and a number outside its bounds — by default
1 to the largest value an integer column holds — is answered with 422 naming the path
parameter, before any code compares it with stored data. The bounds also appear in the
OpenAPI document as the parameter's ``minimum`` and ``maximum`` (flask-smorest documents
every subclass of werkzeug's integer converter that way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.exceptions import UnprocessableEntity
from werkzeug.routing import IntegerConverter, Map

from service.rules import INTEGER_MAX

# Long enough for every number the bounds allow, and refused past it without calling int()
# on thousands of digits.
_MAX_DIGITS = 20


@dataclass(frozen=True)
class OutOfRange:
    """A path number beyond its bounds; the request is refused before any view sees it."""

    text: str
    minimum: int
    maximum: int


class BoundedInt(IntegerConverter):
    """An integer path segment between ``min`` (default 1: every number in a path of this
    service counts from 1) and ``max`` (default: the largest value an integer column holds).
    """

    regex = r"-?[0-9]+"
    part_isolating = True

    def __init__(self, url_map: Map, min: int = 1, max: int = INTEGER_MAX) -> None:
        super().__init__(url_map, min=min, max=max, signed=True)

    def to_python(self, value: str) -> Any:
        assert self.min is not None and self.max is not None  # set in __init__
        digits = value.lstrip("-").lstrip("0")
        if len(digits) <= _MAX_DIGITS and self.min <= int(value) <= self.max:
            return int(value)
        return OutOfRange(value, self.min, self.max)


def _refuse_out_of_range(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Answer 422 naming every path number beyond its bounds."""
    if not values:
        return
    messages = {
        name: [f"{value.text[:40]} is not between {value.minimum} and {value.maximum}"]
        for name, value in values.items()
        if isinstance(value, OutOfRange)
    }
    if messages:
        error = UnprocessableEntity()
        error.data = {"messages": {"path": messages}}  # type: ignore[attr-defined]
        raise error


def install(app: Flask) -> None:
    """Make ``<int:...>`` bounded in this app; idempotent, so every blueprint that routes
    on a number can call it when it is registered (before its rules are added)."""
    if app.url_map.converters.get("int") is BoundedInt:
        return
    app.url_map.converters["int"] = BoundedInt
    app.url_value_preprocessor(_refuse_out_of_range)
