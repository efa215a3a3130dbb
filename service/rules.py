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


def check_reference(
    problems: Problems, field: str, value: str | None, types: Iterable[str]
) -> None:
    if value is None:
        return
    allowed = tuple(types)
    match = _REFERENCE.match(value)
    if not match:
        problems.add(
            field,
            f"{value!r} is not a reference; expected '{allowed[0]}/<id>' or an absolute URL "
            f"ending in '{allowed[0]}/<id>'",
        )
    elif match.group("type") not in allowed:
        problems.add(
            field,
            f"reference to {match.group('type')}; expected a reference to {' or '.join(allowed)}",
        )


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
                datetime.fromisoformat(time)
            except ValueError:
                problems.add(f"{field}.{index}.time", f"{time!r} is not an ISO 8601 date-time")


def check_distinct(problems: Problems, field: str, values: list[Any]) -> None:
    seen: set[Any] = set()
    for index, value in enumerate(values):
        if value in seen:
            problems.add(f"{field}.{index}", f"{value!r} is listed twice")
        seen.add(value)
