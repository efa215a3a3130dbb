"""Checks shared by every part of the domain: codes, references, dates, texts, notes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from service.errors import FieldProblem, RuleViolation

# A FHIR id, and a reference either relative (``Patient/123``) or absolute
# (``https://ehr.example.org/fhir/Patient/123``).
_FHIR_ID = r"[A-Za-z0-9\-\.]{1,64}"
_REFERENCE = re.compile(
    rf"^(?:https?://[^\s/]+(?:/[^\s/]+)*/)?(?P<type>[A-Z][A-Za-z]+)/{_FHIR_ID}$"
)

PATIENT_TYPES = ("Patient",)
CONDITION_TYPES = ("Condition",)
THERAPIST_TYPES = ("Practitioner", "PractitionerRole")

MAX_TEXT = 20_000
MAX_SHORT_TEXT = 2_000

# The range of an integer column (32-bit on PostgreSQL): no whole number the service reads
# (in a path, a query or a body) may lie outside it, whatever the field's own bounds.
INTEGER_MIN = -(2**31)
INTEGER_MAX = 2**31 - 1

# The calendar a care plan lives in (see docs/domain.md, "Dates"): no date the domain
# stores lies outside it. Wide enough for any course of treatment, its history and its
# planning; far enough from the ends of the calendar (years 1 and 9999) that the date
# arithmetic of the template, the phases and the search index never overflows.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2999, 12, 31)


class Problems:
    """Collects every problem of one request so that the caller hears of all at once."""

    def __init__(self) -> None:
        self._problems: list[FieldProblem] = []

    def add(self, field: str, message: str) -> None:
        self._problems.append(FieldProblem(field, message))

    def __bool__(self) -> bool:
        return bool(self._problems)

    def raise_if_any(
        self, summary: str = "The request breaks the rules of an IPT care plan"
    ) -> None:
        if not self._problems:
            return
        if len(self._problems) == 1:
            raise RuleViolation(self._problems[0].message, self._problems)
        raise RuleViolation(f"{summary}: {len(self._problems)} problems", self._problems)


def check_code(problems: Problems, field: str, value: Any, codes: type[StrEnum]) -> None:
    """An unknown code names the field and lists the codes that are allowed."""
    if value is None:
        return
    allowed = [member.value for member in codes]
    if value not in allowed:
        problems.add(field, f"unknown code {value!r}; expected one of: {', '.join(allowed)}")


def reference_problem(value: str, types: Iterable[str]) -> str | None:
    """What is wrong with ``value`` as a reference to one of ``types``; None if nothing."""
    allowed = tuple(types)
    match = _REFERENCE.match(value)
    if not match:
        return (
            f"{value!r} is not a reference; expected '{allowed[0]}/<id>' or an absolute URL "
            f"ending in '{allowed[0]}/<id>'"
        )
    if match.group("type") not in allowed:
        return f"reference to {match.group('type')}; expected a reference to {' or '.join(allowed)}"
    return None


def check_reference(
    problems: Problems, field: str, value: str | None, types: Iterable[str]
) -> None:
    if value is None:
        return
    message = reference_problem(value, types)
    if message is not None:
        problems.add(field, message)


def check_text(
    problems: Problems,
    field: str,
    value: str | None,
    *,
    limit: int = MAX_TEXT,
    required: bool = False,
) -> None:
    if value is None:
        if required:
            problems.add(field, "is required")
        return
    if not value.strip():
        problems.add(field, "must not be blank")
    elif len(value) > limit:
        problems.add(field, f"is {len(value)} characters long; at most {limit} are allowed")


def in_calendar(value: date) -> bool:
    """Whether a date lies in the range the service supports."""
    return EARLIEST_DATE <= value <= LATEST_DATE


def calendar_message(value: date) -> str:
    return (
        f"{value.isoformat()} is outside the dates this service keeps "
        f"({EARLIEST_DATE.isoformat()} to {LATEST_DATE.isoformat()})"
    )


def check_dates(problems: Problems, values: Mapping[str, Any], *fields: str) -> None:
    """Every date of ``values`` named in ``fields`` lies in the supported calendar.

    A dotted field (``target.due_date``) is looked up in the nested mapping. Only the fields
    present are checked: a date already stored is not judged again.
    """
    for field in fields:
        value: Any = values
        for part in field.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, date) and not in_calendar(value):
            problems.add(field, calendar_message(value))


def check_date_order(
    problems: Problems,
    later_field: str,
    later: date | None,
    earlier_field: str,
    earlier: date | None,
) -> None:
    if later is not None and earlier is not None and later < earlier:
        problems.add(
            later_field, f"{later.isoformat()} is before {earlier_field} {earlier.isoformat()}"
        )


def check_notes(problems: Problems, field: str, notes: list[Mapping[str, Any]] | None) -> None:
    """Notes are annotations: a text, and optionally who wrote it and when."""
    if notes is None:
        return
    for index, note in enumerate(notes):
        check_text(problems, f"{field}.{index}.text", note.get("text"), required=True)
        author = note.get("author")
        if author is not None and (not str(author).strip() or len(str(author)) > 255):
            problems.add(f"{field}.{index}.author", "must be 1 to 255 characters")
        time = note.get("time")
        if time is not None and not isinstance(time, str):
            problems.add(f"{field}.{index}.time", "must be an ISO 8601 date-time")
        elif isinstance(time, str):
            try:
                moment = datetime.fromisoformat(time)
            except ValueError:
                problems.add(f"{field}.{index}.time", f"{time!r} is not an ISO 8601 date-time")
            else:
                if not in_calendar(moment.date()):
                    problems.add(f"{field}.{index}.time", calendar_message(moment.date()))


def check_distinct(problems: Problems, field: str, values: list[Any]) -> None:
    seen: set[Any] = set()
    for index, value in enumerate(values):
        if value in seen:
            problems.add(f"{field}.{index}", f"{value!r} is listed twice")
        seen.add(value)
