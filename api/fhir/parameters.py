"""Query parameters of the FHIR read routes: the error that names one, and dates.

Every date or instant a FHIR query gives is read by :mod:`service.instants`, so a value
of valid syntax is always answered (clamped to the instants the database holds) and any
other is a 400 whose OperationOutcome names the parameter.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from werkzeug.exceptions import BadRequest

from fhir_mappings.search_parameters import parse_date_range
from service.instants import InvalidInstant, parse_instant

_DIGITS = re.compile(r"[0-9]+").fullmatch
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
DatePrefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


class InvalidParameter(BadRequest):
    """A query parameter that cannot be applied (a value that cannot be read, or under
    strict handling a parameter this server does not support): 400, its OperationOutcome
    issue naming the parameter in ``expression``."""

    def __init__(self, parameter: str, message: str) -> None:
        # Echoed in a UTF-8 body: a character that cannot be encoded is written escaped.
        parameter, message = _printable(parameter), _printable(message)
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_text(name: str, value: str) -> None:
    """Refuse a parameter whose name or value holds text no database column can: a NUL
    character (PostgreSQL refuses it) or a lone surrogate (not encodable as UTF-8), which
    only a Bundle entry's JSON can carry into a query."""
    for text in (name, value):
        if "\x00" in text or _printable(text) != text:
            raise InvalidParameter(
                name, "holds a character no search value can (NUL or a lone UTF-16 surrogate)"
            )


def split_values(value: str) -> list[str]:
    """Comma-separated values (OR); a backslash escapes a comma."""
    if "\\" not in value:
        return value.split(",")
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def date_options(
    name: str, value: str, prefixes: tuple[str, ...] = DATE_PREFIXES
) -> tuple[tuple[DatePrefix, datetime, datetime], ...]:
    """``[prefix]date`` values, OR-ed: each with the range of instants its date covers."""
    options: list[tuple[DatePrefix, datetime, datetime]] = []
    for part in split_values(value):
        prefix = part[:2] if part[:2].isalpha() else "eq"
        text = part[2:] if part[:2].isalpha() else part
        if prefix not in prefixes:
            raise InvalidParameter(
                name, f"the prefix {prefix!r} is not one of {', '.join(prefixes)}"
            )
        try:
            found = parse_date_range(text)
        except InvalidInstant:
            raise InvalidParameter(
                name, f"{part!r} is not a FHIR date, dateTime or instant (such as 2026-01-05)"
            ) from None
        options.append((prefix, found.low, found.high))  # type: ignore[arg-type]
    return tuple(options)


def instant_param(name: str, value: str | None) -> datetime | None:
    """A FHIR instant parameter (``_since``, ``_at``), clamped; None when not given."""
    if value is None:
        return None
    try:
        return parse_instant(value)
    except InvalidInstant as error:
        raise InvalidParameter(name, str(error)) from None


def count_param(name: str, value: str | None, default: int, maximum: int, minimum: int = 0) -> int:
    """A page size: ASCII digits, at least ``minimum``; above ``maximum`` (however many
    digits) it is ``maximum``, as FHIR lets a server send fewer than asked."""
    if value is None:
        return default
    if not _DIGITS(value):
        raise InvalidParameter(name, f"takes a whole number, not {value!r}")
    digits = value.lstrip("0") or "0"
    number = maximum if len(digits) > len(str(maximum)) else int(digits)
    if number < minimum:
        raise InvalidParameter(name, f"takes a whole number of at least {minimum}, not {value!r}")
    return min(number, maximum)
