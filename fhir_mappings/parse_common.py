"""What reading every FHIR resource of the service needs: the error, paths, small readers.

The readers work on JSON that has passed ``validate_structure``, so types are right; they
check what FHIR itself allows but the domain cannot hold, and name the element by a
FHIRPath expression such as ``CarePlan.extension[2].extension[0].valueCoding.code``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from fhir_mappings import terminology as t

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
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


def check_keys(problems: Problems, path: str, value: Mapping[str, Any], allowed: set[str]) -> None:
    """Name every element of ``value`` the mapping does not read (it would be lost)."""
    for key in value:
        if key not in allowed:
            problems.add(f"{path}.{key.lstrip('_')}", "is not kept by this service; leave it out")


def read_date(problems: Problems, path: str, value: Any) -> date | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE.match(value):
        problems.add(path, f"{value!r} is not a full date; the service keeps dates as YYYY-MM-DD")
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.add(path, f"{value!r} is not a date")
        return None


def read_reference(
    problems: Problems,
    path: str,
    value: Mapping[str, Any] | None,
    types: tuple[str, ...],
    *,
    relative: bool = False,
) -> str | None:
    """The literal reference of a Reference, checked to point at one of ``types``."""
    if value is None:
        return None
    target = value.get("reference")
    if not isinstance(target, str):
        problems.add(f"{path}.reference", f"a literal reference to {' or '.join(types)} is needed")
        return None
    match = (_RELATIVE if relative else _REFERENCE).search(target)
    if match is None:
        expected = f"'{types[0]}/<id>'" + ("" if relative else " or an absolute URL ending so")
        problems.add(f"{path}.reference", f"{target!r} is not a reference; expected {expected}")
        return None
    if match.group("type") not in types:
        problems.add(
            f"{path}.reference",
            f"points to {match.group('type')}; expected a reference to {' or '.join(types)}",
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
) -> str | None:
    """The one reference a list element holds at most; ``too_many`` says why."""
    if not values:
        return None
    if len(values) > 1:
        problems.add(f"{path}[1]", too_many)
    return read_reference(problems, f"{path}[0]", values[0], types, relative=relative)


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


def check_codings(
    problems: Problems, path: str, concept: Mapping[str, Any], systems: tuple[str, ...]
) -> None:
    """Refuse what a concept the mapping owns says beyond codes of ``systems`` (it is lost)."""
    check_keys(problems, path, concept, {"coding"})
    for coding_path, coding in codings(concept, path):
        if coding.get("system") not in systems:
            problems.add(coding_path, f"only codes from {' or '.join(systems)} are kept here")


def owned_category(
    problems: Problems,
    path: str,
    concept: Mapping[str, Any],
    owns: Callable[[Mapping[str, Any]], bool],
) -> bool:
    """Whether a category is the service's; one mixing its codes with others is refused."""
    found = [(coding_path, owns(coding)) for coding_path, coding in codings(concept, path)]
    if not any(mine for _, mine in found):
        return False
    check_keys(problems, path, concept, {"coding"})
    for coding_path, mine in found:
        if not mine:
            problems.add(
                coding_path,
                "a category of this service holds its own code only; "
                "give other codes a category of their own",
            )
    return True


def concept_code(
    problems: Problems, path: str, concept: Mapping[str, Any] | None, system: str, what: str
) -> str | None:
    """The code of ``concept``'s coding from ``system``; a concept without one is refused."""
    if concept is None:
        return None
    check_codings(problems, path, concept, (system,))
    for coding_path, coding in codings(concept, path):
        if coding.get("system") == system:
            if not isinstance(coding.get("code"), str):
                problems.add(f"{coding_path}.code", "is required")
                return None
            return str(coding["code"])
    problems.add(f"{path}.coding", f"no coding from {system} ({what})")
    return None


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
    """Annotations as domain notes: text, and author and time when given."""
    result = []
    for note_path, note in indexed(notes, path):
        if "authorReference" in note:
            problems.add(
                f"{note_path}.authorReference",
                "the author of a note is kept as a name: use authorString",
            )
        check_keys(problems, note_path, note, {"text", "authorString", "time", "authorReference"})
        entry: dict[str, Any] = {"text": note.get("text")}
        if note.get("authorString") is not None:
            entry["author"] = note["authorString"]
        if note.get("time") is not None:
            entry["time"] = note["time"]
        result.append(entry)
    return result


def read_progress(
    problems: Problems, path: str, progress: list[Mapping[str, Any]] | None
) -> str | None:
    """The one text kept in ``activity.progress``."""
    if not progress:
        return None
    if len(progress) > 1:
        problems.add(f"{path}[1]", "the service keeps one progress note per activity")
    check_keys(problems, f"{path}[0]", progress[0], {"text"})
    text = progress[0].get("text")
    return str(text) if text is not None else None


def to_decimal(number: Any) -> Decimal:
    return Decimal(str(number))
