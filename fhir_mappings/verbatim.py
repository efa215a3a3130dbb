"""The forms a client wrote, kept: an element the mapping reads comes back as written
while it still means what the domain holds.

A FHIR write keeps, in its extras' ``written`` (see parse_extras.py), every element the
mapping reads, as the client wrote it. When the resource is rendered, a written element
replaces the rendered one if reading the resource with it gives the same domain data as
reading it with the rendered one: the written form says exactly what the domain holds
(``2026-01-05T09:00:00+01:00`` for a start date of 2026-01-05, a reference with its
``display``, a concept with more codings or a text). The reader of the write is the judge,
so whatever it ignores cannot slip through as agreeing. Once the domain holds something
else (a change through the native API, say), the rendered element is shown instead.

Right after the write (``strict``), a written element that does not agree is refused:
answering the write with success would otherwise lose what the client wrote. The same
goes for what the write could only be checked against once the plan was complete (the
``checks`` of its extras): the goals a CarePlan lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.parse_common import MappingError
from fhir_mappings.parse_episode import read_episode
from fhir_mappings.parse_extras import apply_extras
from fhir_mappings.parse_goal import read_goal
from fhir_mappings.parse_phase import read_phase

_UNREADABLE = object()


def _episode(resource: Mapping[str, Any]) -> Any:
    return read_episode(resource, whole=False)[0]


def _phase(resource: Mapping[str, Any]) -> Any:
    data, sessions, homework, _ = read_phase(resource, whole=False)
    # The order of activities is the service's (sessions by number, then homework).
    return data, sorted(sessions, key=_by_id), sorted(homework, key=_by_id)


def _by_id(entry: Mapping[str, Any]) -> str:
    return str(entry.get("id"))


def _goal(resource: Mapping[str, Any]) -> Any:
    plan_id, data, _ = read_goal(resource, whole=False)
    return plan_id, data


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _covers(written: Any, held: Any) -> bool:
    """Whether what a written form reads as is held: every value it gives is, though the
    domain may hold more (a default for what was left out, such as a homework's
    assignment date)."""
    if written is None:
        return True
    if isinstance(written, dict) and isinstance(held, dict):
        return all(_covers(value, held.get(key)) for key, value in written.items())
    if isinstance(written, list) and isinstance(held, list):
        return len(written) == len(held) and all(map(_covers, written, held))
    return bool(written == held)


# What the domain moves on in the very write that sets it: a phase's status and dates
# follow its sessions (its first attended session starts it), so a phase written as draft
# with an attended session is active. Strictness does not apply to these.
_DERIVED = {t.PHASE_PROFILE: frozenset({"status", "period"})}

_READERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    t.EPISODE_PROFILE: _episode,
    t.PHASE_PROFILE: _phase,
    t.GOAL_PROFILE: _goal,
}


def _meaning(resource: Mapping[str, Any]) -> Any:
    """The domain data ``resource`` reads as, as JSON (_UNREADABLE if it cannot be read)."""
    profiles = (resource.get("meta") or {}).get("profile") or []
    reader = next((_READERS[p] for p in profiles if p in _READERS), None)
    if reader is None:
        return _UNREADABLE
    try:
        return json.loads(_canonical(reader(resource)))
    except MappingError:
        return _UNREADABLE


def _agrees(trial: Any, base: Any, written: Any, rendered: Any) -> bool:
    """Whether a written element the domain completed lost nothing: what it reads as is
    held, and the rendering shows everything it says (a homework written with a due
    date and no assignment date, say, which the domain dates today)."""
    return trial is not _UNREADABLE and _covers(trial, base) and _contains(rendered, written)


def _contains(held: Any, written: Any) -> bool:
    if isinstance(written, dict):
        return isinstance(held, dict) and all(
            _contains(held.get(key), value) for key, value in written.items()
        )
    if isinstance(written, list):
        return isinstance(held, list) and all(
            any(_contains(item, entry) for item in held) for entry in written
        )
    return bool(held == written)


def _said(concept: Mapping[str, Any]) -> set[tuple[Any, Any]]:
    return {(c.get("system"), c.get("code")) for c in concept.get("coding") or []}


def _with(resource: Mapping[str, Any], name: str, written: Any) -> dict[str, Any]:
    """``resource`` with one written element in place of the rendered one.

    Extensions and categories are the service's and the client's at once: what the
    client wrote of the service's replaces what it rendered of the same URL or code, the
    rest of the rendering stays (the treatment contracts, a variant left out, a category
    the client did not repeat).
    """
    result = dict(resource)
    rendered = resource.get(name) or []
    if name == "extension":
        result[name] = _in_place(rendered, written, lambda r, w: r.get("url") == w.get("url"))
    elif name == "category":
        result[name] = _in_place(rendered, written, lambda r, w: bool(_said(r) & _said(w)))
    else:
        result[name] = written
    if not result[name]:
        del result[name]
    return result


def _in_place(
    rendered: list[Any], written: list[Any], same: Callable[[Any, Any], bool]
) -> list[Any]:
    """``rendered`` with the written entries in place of those they say the same as (in the
    rendering's order, so that an unchanged resource reads back unchanged)."""
    result: list[Any] = []
    placed: set[int] = set()
    for item in rendered:
        matches = [i for i, entry in enumerate(written) if same(item, entry)]
        if not matches:
            result.append(item)
        for i in matches:
            if i not in placed:
                placed.add(i)
                result.append(written[i])
    return result + [entry for i, entry in enumerate(written) if i not in placed]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "nothing"
    return text if len(text) <= 160 else text[:157] + "..."


def overlay(
    resource: dict[str, Any], written: Mapping[str, Any], *, strict: bool = False
) -> dict[str, Any]:
    """``resource`` (as rendered) with each written element that means what it holds.

    ``strict``: the write has just been made, and an element that does not agree raises a
    MappingError naming it.
    """
    if not written:
        return resource
    base = _meaning(resource)
    if base is _UNREADABLE:
        if strict:  # what was written cannot be shown to be kept
            raise MappingError([(str(resource.get("resourceType")), "cannot be read back")])
        return resource
    candidate = resource
    for name, value in written.items():
        if name != "activity":
            candidate = _with(candidate, name, value)
    activities = _activities(resource, written.get("activity"))
    if activities is not None:
        candidate = _with(candidate, "activity", activities)
    if _meaning(candidate) == base:
        return candidate
    result, problems = resource, []
    for name, value in written.items():
        if name == "activity":
            result, found = _activity_overlay(resource, result, value, base)
            problems += found
            continue
        trial = _meaning(_with(resource, name, value))
        if trial == base:
            result = _with(result, name, value)
        elif not _agrees(trial, base, value, resource.get(name)):
            problems.append(_disagrees(resource, name, name))
    profiles = (resource.get("meta") or {}).get("profile") or []
    derived = frozenset().union(*(_DERIVED.get(p, frozenset()) for p in profiles))
    problems = [p for p in problems if p[0].partition(".")[2] not in derived]
    if strict and problems:
        raise MappingError(problems)
    return result


def _disagrees(resource: Mapping[str, Any], name: str, where: str) -> tuple[str, str]:
    held = resource.get(name)
    return (
        f"{resource.get('resourceType')}.{where}",
        f"would not be kept as written: the service holds {_short(held)}",
    )


def _activities(resource: Mapping[str, Any], written: Any) -> list[Any] | None:
    """The rendered activities, each replaced by the written one of the same id."""
    if not written:
        return None
    by_id = {entry.get("id"): entry for entry in written if entry.get("id")}
    return [by_id.get(entry.get("id"), entry) for entry in resource.get("activity") or []]


def _activity_overlay(
    resource: dict[str, Any], result: dict[str, Any], written: list[Any], base: Any
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Each written activity that agrees, in place of its rendered one (by id)."""
    rendered = {entry.get("id"): entry for entry in resource.get("activity") or []}
    kept: dict[Any, Any] = {}
    problems = []
    for index, entry in enumerate(written):
        own = rendered.get(entry.get("id"))
        if own is not None:
            trial = _with(
                resource, "activity", [entry if e is own else e for e in rendered.values()]
            )
            meaning = _meaning(trial)
            if meaning == base:
                kept[entry.get("id")] = entry
                continue
            if _agrees(meaning, base, entry, own):
                continue
        problems.append(
            (
                f"CarePlan.activity[{index}]",
                "would not be kept as written: the service holds " + _short(own),
            )
        )
    activities = [kept.get(entry.get("id"), entry) for entry in result.get("activity") or []]
    return _with(result, "activity", activities), problems


def check(resource: Mapping[str, Any], checks: list[Any]) -> None:
    """Refuse a write whose goal references the resource, as the write leaves the plan,
    does not list (``checks`` of its extras; see parse_extras.py)."""
    goals = {entry.get("reference") for entry in resource.get("goal") or []}
    phase = "partOf" in resource
    problems = [
        (
            path,
            f"{value} is not a goal of this {'phase' if phase else 'plan'}: the goals listed "
            f"are the Goals whose {t.EXT_GOAL_EPISODE} extension names the plan"
            + (f" and whose {t.EXT_GOAL_PHASE} is this phase" if phase else "")
            + "; a goal of another plan, or one not stored, cannot be listed",
        )
        for path, kind, value in checks
        if kind == "goal" and value not in goals
    ]
    if problems:
        raise MappingError(problems)


def merged(resource: dict[str, Any], extras: Mapping[str, Any], *, strict: bool = False) -> dict:
    """A rendered resource with everything a client wrote that it keeps: the elements the
    mapping does not own (``apply_extras``: contained resources among them, which the
    written elements may reference), then those it reads, as written (``overlay``).

    ``strict``: right after the write, which is refused if it would lose anything.
    """
    resource = overlay(apply_extras(resource, extras), extras.get("written") or {}, strict=strict)
    if strict and extras.get("checks"):
        check(resource, extras["checks"])
    return resource


def needed(rendered: Mapping[str, Any], written: Mapping[str, Any]) -> dict[str, Any]:
    """The written elements whose form differs from the rendering: the others need not be
    kept (and the resource need not be read back for them at each change)."""
    result: dict[str, Any] = {}
    for name, value in written.items():
        if name == "activity":
            own = {entry.get("id"): entry for entry in rendered.get("activity") or []}
            differing = [entry for entry in value if own.get(entry.get("id")) != entry]
            if differing:
                result[name] = differing
        elif _with(rendered, name, value) != rendered:
            result[name] = value
    return result
