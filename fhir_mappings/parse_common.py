"""What reading every FHIR resource of the service needs: the error, paths, small readers.

The readers work on JSON that has passed ``validate_structure``, so types are right; they
check what FHIR itself allows but the domain cannot hold, and name the element by a
FHIRPath expression such as ``CarePlan.extension[2].extension[0].valueCoding.code``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from fhir_mappings import terminology as t

# A FHIR date or dateTime (validate_structure has checked the full syntax): year, then
# optionally month, day and a time with its offset.
_DATE = re.compile(r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})(?:T.+)?)?)?$")
# A literal reference, relative (``Patient/123``) or absolute, split into type and id.
_REFERENCE = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$")
_RELATIVE = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$")


class MappingError(Exception):
    """The resource is valid FHIR but cannot be read into (or is not) an IPT care plan.

    ``problems`` lists (FHIRPath expression, message) pairs, every one that was found.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


class Problems:
    """Collects every problem of one resource so that the client hears of all at once."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise MappingError(list(self.items))


def indexed(items: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(path[i], item)`` for each item of a list element (none when absent)."""
    for index, item in enumerate(items or []):
        yield f"{path}[{index}]", item


def read_date(problems: Problems, path: str, value: Any, *, end: bool = False) -> date | None:
    """The calendar date a FHIR date or dateTime names, in any of its valid R4 forms.

    A full date is that day; a dateTime is the day it falls on where it was written (the
    date before its ``T``: the calendar of the offset it carries, the writer's). A partial
    date (``2026`` or ``2026-01``) names the first day of that year or month, or, when it
    ``end``s a period or a target, the last: the date the domain keeps is then the widest
    reading of what was written. The written form itself is kept verbatim (see verbatim.py).
    """
    if value is None:
        return None
    match = _DATE.match(value) if isinstance(value, str) else None
    if match is None:
        problems.add(path, f"{value!r} is not a FHIR date or dateTime")
        return None
    year, month, day = match.group("year", "month", "day")
    try:
        if day is not None:
            return date(int(year), int(month), int(day))
        if month is None:
            return date(int(year), 12, 31) if end else date(int(year), 1, 1)
        last_day = calendar.monthrange(int(year), int(month))[1]
        return date(int(year), int(month), last_day if end else 1)
    except ValueError:
        problems.add(path, f"{value!r} is not a date of the calendar")
        return None


def read_reference(
    problems: Problems,
    path: str,
    value: Mapping[str, Any] | None,
    types: tuple[str, ...],
    *,
    relative: bool = False,
    optional_literal: bool = False,
) -> str | None:
    """The literal reference of a Reference, checked to point at one of ``types``.

    ``display``, ``type``, ``identifier`` and extensions beside it are the client's, kept
    verbatim. Without ``reference`` (a reference by identifier or display only) the domain
    holds nothing when ``optional_literal``, and the element is refused otherwise: the
    domain keys on the literal reference. So is a reference to a contained resource
    (``#id``): the domain keeps a reference, not the contained resource it names.
    """
    if value is None:
        return None
    target = value.get("reference")
    if not isinstance(target, str):
        if not optional_literal:
            problems.add(
                f"{path}.reference",
                f"a literal reference to {' or '.join(types)} is needed "
                "(the service keys on it; a reference by identifier alone cannot be kept)",
            )
        return None
    if target.startswith("#"):
        if optional_literal:
            return None  # the domain holds none; the contained resource is kept verbatim
        problems.add(
            f"{path}.reference",
            f"{target!r} points to a contained resource; the service keeps a reference to "
            f"{' or '.join(types)} as '{types[0]}/<id>'"
            + ("" if relative else " or an absolute URL"),
        )
        return None
    match = (_RELATIVE if relative else _REFERENCE).search(target)
    if match is None:
        expected = f"'{types[0]}/<id>'" + (
            " (a resource of this server)" if relative else " or an absolute URL ending so"
        )
        problems.add(f"{path}.reference", f"{target!r} is not a reference; expected {expected}")
        return None
    if match.group("type") not in types:
        problems.add(
            f"{path}.reference",
            f"points to {match.group('type')}; expected a reference to {' or '.join(types)}",
        )
        return None
    if value.get("type") not in (None, match.group("type")):
        problems.add(
            f"{path}.type", f"contradicts the reference, which is to a {match.group('type')}"
        )
        return None
    return target


def reference_id(target: str | None) -> str | None:
    """The id of a relative reference read by ``read_reference(relative=True)``."""
    return target.split("/", 1)[1] if target else None


def read_references(
    problems: Problems,
    path: str,
    values: list[Mapping[str, Any]] | None,
    types: tuple[str, ...],
    too_many: str,
    *,
    relative: bool = False,
    optional_literal: bool = False,
) -> str | None:
    """The one reference a list element holds at most; ``too_many`` says why."""
    if not values:
        return None
    if len(values) > 1:
        problems.add(f"{path}[1]", too_many)
    return read_reference(
        problems,
        f"{path}[0]",
        values[0],
        types,
        relative=relative,
        optional_literal=optional_literal,
    )


def codings(
    concept: Mapping[str, Any] | None, path: str
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield from indexed((concept or {}).get("coding"), f"{path}.coding")


def read_local_code(
    problems: Problems, path: str, coding: Mapping[str, Any] | None, system_name: str
) -> str | None:
    """A code of a local code system, from a Coding that must name that system."""
    if coding is None:
        return None
    system = t.local(system_name)
    if coding.get("system") != system.url:
        problems.add(
            f"{path}.system",
            f"{coding.get('system')!r} is not a known system here; expected {system.url}",
        )
        return None
    return check_local_code(problems, f"{path}.code", coding.get("code"), system_name)


def check_local_code(problems: Problems, path: str, code: Any, system_name: str) -> str | None:
    """``code`` if the local code system has it."""
    system = t.local(system_name)
    return read_code(problems, path, code, system.codes, system.title)


def read_code(
    problems: Problems, path: str, code: Any, allowed: list[str], what: str
) -> str | None:
    if code is None:
        problems.add(path, f"a {what} code is required")
        return None
    if code not in allowed:
        problems.add(path, f"unknown {what} code {code!r}; expected one of: {', '.join(allowed)}")
        return None
    return str(code)


def owned_category(concept: Mapping[str, Any], owns: Callable[[Mapping[str, Any]], bool]) -> bool:
    """Whether a category holds a code of the service (its other codings and text are the
    client's, kept verbatim with it)."""
    return any(owns(coding) for _, coding in codings(concept, ""))


def concept_code(
    problems: Problems, path: str, concept: Mapping[str, Any] | None, system: str, what: str
) -> str | None:
    """The code of ``concept``'s coding from ``system``, None when it has none.

    Other codings and ``text`` say the same in other words and are kept verbatim; two
    different codes from ``system`` are refused (the domain holds one).
    """
    if concept is None:
        return None
    found: list[tuple[str, Any]] = [
        (coding_path, coding.get("code"))
        for coding_path, coding in codings(concept, path)
        if coding.get("system") == system
    ]
    for coding_path, code in found:
        if not isinstance(code, str):
            problems.add(f"{coding_path}.code", f"is required ({what})")
            return None
        if code != found[0][1]:
            problems.add(coding_path, f"a second {what} code; the service keeps one")
            return None
    return str(found[0][1]) if found else None


def value(problems: Problems, path: str, extension: Mapping[str, Any], kind: str) -> Any:
    """The ``value{kind}`` of a simple extension; another value type or none is refused."""
    key = f"value{kind}"
    if key not in extension:
        found = [k for k in extension if k.startswith("value")]
        problems.add(
            f"{path}.{found[0]}" if found else path,
            f"expected value{kind}" + ("" if found else " (the extension has no value)"),
        )
        return None
    return extension[key]


def sub_extensions(
    problems: Problems, path: str, extension: Mapping[str, Any]
) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(path, url, sub-extension) of a complex extension."""
    if "extension" not in extension:
        problems.add(path, "a complex extension needs its sub-extensions")
    for sub_path, sub in indexed(extension.get("extension"), f"{path}.extension"):
        yield sub_path, str(sub.get("url")), sub


def unknown_part(problems: Problems, path: str, url: str) -> None:
    problems.add(f"{path}.url", f"{url!r} is not a part of this extension")


def read_notes(
    problems: Problems, path: str, notes: list[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """Annotations as domain notes: text, and author and time when given.

    An ``authorReference`` is kept as the author's name: its display, else the reference.
    """
    result = []
    for note_path, note in indexed(notes, path):
        entry: dict[str, Any] = {"text": note.get("text")}
        author = note.get("authorString")
        by_reference = note.get("authorReference")
        if author is None and by_reference is not None:
            author = by_reference.get("display") or by_reference.get("reference")
            if author is None:
                problems.add(
                    f"{note_path}.authorReference",
                    "names nobody: give a reference or a display",
                )
        if author is not None:
            entry["author"] = author
        if note.get("time") is not None:
            entry["time"] = note["time"]
        result.append(entry)
    return result


def read_progress(
    problems: Problems, path: str, progress: list[Mapping[str, Any]] | None
) -> str | None:
    """The one text kept in ``activity.progress`` (its author and time are kept verbatim)."""
    if not progress:
        return None
    if len(progress) > 1:
        problems.add(f"{path}[1]", "the service keeps one progress note per activity")
    text = progress[0].get("text")
    return str(text) if text is not None else None


def to_decimal(number: Any) -> Decimal:
    return Decimal(str(number))
