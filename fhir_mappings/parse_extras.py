"""The extras of a FHIR write: what a client wrote that the mapping does not own.

A parse function collects them (``start_extras`` and the readers of each resource);
``apply_extras`` puts them back into a rendered resource, so that they survive every
later change made through either API.

Keys: ``meta`` (its elements other than versionId, lastUpdated and the service's
profile, which stays out of ``meta.profile`` here), ``text`` (a narrative the client
wrote, not one this service generated), ``extension`` (extensions the mapping does not
know), ``category`` (categories it does not own), ``identifier`` (the identifiers
verbatim when one says more than system and value), ``subject``, ``author``,
``addresses``, ``partOf`` and ``goal`` (verbatim when they say more than ``reference``),
and every other element the mapping does not own, under its own name.

``written`` holds the elements the mapping reads, as written (``extension`` and
``category``: only the service's own); verbatim.py puts each back in place of the
rendered one while it still means what the domain holds. ``checks`` is for the write
only (projection.py drops it once checked): (expression, kind, value) of what the write
can only be checked against the plan as the write leaves it: each ``goal`` reference
names a goal the resource lists, each ``contract`` extension one the plan holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.narrative import is_generated
from fhir_mappings.parse_common import Problems, indexed

_GOAL_REFERENCE = re.compile(r"^Goal/[A-Za-z0-9\-.]{1,64}$")
SERVER_MANAGED_META = frozenset({"versionId", "lastUpdated"})
PROFILES = frozenset({t.EPISODE_PROFILE, t.PHASE_PROFILE, t.GOAL_PROFILE})
# Elements that change the meaning of a resource; the service cannot honour unknown ones.
REFUSED = {
    "implicitRules": "a resource with special rules (implicitRules) cannot be kept",
}
_MODIFIER = (
    "modifier extensions change the meaning of what holds them; "
    "the service understands none and cannot keep them"
)


def read_meta(
    problems: Problems, resource_type: str, meta: Mapping[str, Any] | None, profile: str
) -> dict[str, Any]:
    """The parts of ``meta`` to keep verbatim; a profile of another kind is refused."""
    kept: dict[str, Any] = {}
    for key, item in (meta or {}).items():
        if key in SERVER_MANAGED_META:
            continue
        if key == "profile":
            others = []
            for profile_path, claimed in indexed(item, f"{resource_type}.meta.profile"):
                if claimed in PROFILES and claimed != profile:
                    problems.add(profile_path, f"this resource is read as {profile}")
                elif claimed != profile:
                    others.append(claimed)
            if others:
                kept["profile"] = others
        else:
            kept[key] = item
    return kept


def start_extras(
    problems: Problems,
    resource: Mapping[str, Any],
    owned: set[str],
    profile: str,
    *,
    whole: bool = True,
) -> dict[str, Any]:
    """The extras of the elements the mapping does not own, and the shared ones it does.

    Refuses what no mapping can keep: special rules, modifier extensions anywhere, and,
    in a ``whole`` resource (not one element tried in a rendering, see verbatim.py),
    contained resources nothing references (dom-3) or local references to none.
    """
    resource_type = str(resource.get("resourceType"))
    extras: dict[str, Any] = {}
    for key, item in resource.items():
        if key in REFUSED:
            problems.add(f"{resource_type}.{key}", REFUSED[key])
        elif key not in owned:
            extras[key] = item
    _check_modifiers(problems, resource_type, resource)
    if whole:
        check_contained(problems, resource_type, resource)
    meta = read_meta(problems, resource_type, resource.get("meta"), profile)
    if meta:
        extras["meta"] = meta
    text = resource.get("text")
    if text is not None and not is_generated(text):
        extras["text"] = text
    return extras


def _walk(path: str, node: Any) -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every element below ``node``, depth first."""
    if isinstance(node, Mapping):
        for key, item in node.items():
            here = f"{path}.{key.lstrip('_')}"
            if isinstance(item, list):
                for index, entry in enumerate(item):
                    yield f"{here}[{index}]", key, entry
                    yield from _walk(f"{here}[{index}]", entry)
            else:
                yield here, key, item
                yield from _walk(here, item)


def _check_modifiers(problems: Problems, resource_type: str, resource: Mapping[str, Any]) -> None:
    # Contained resources are kept whole, their own modifiers with them.
    own = {k: v for k, v in resource.items() if k != "contained"}
    for path, key, _item in _walk(resource_type, own):
        if key == "modifierExtension" and path.endswith("[0]"):
            problems.add(path.removesuffix("[0]"), _MODIFIER)


def check_contained(problems: Problems, resource_type: str, resource: Mapping[str, Any]) -> None:
    """Every contained resource is referenced from the resource (dom-3), and every local
    reference (``#id``) names a contained resource."""
    contained = resource.get("contained") or []
    ids = {item.get("id"): index for index, item in enumerate(contained) if isinstance(item, dict)}
    referenced: set[Any] = set()
    for path, key, item in _walk(resource_type, resource):
        if key == "reference" and isinstance(item, str) and item.startswith("#"):
            referenced.add(item[1:])
            if item != "#" and item[1:] not in ids:
                problems.add(path, f"{item!r} names no contained resource")
    for index, item in enumerate(contained):
        if not isinstance(item, dict) or item.get("id") in referenced:
            continue
        # A contained resource may instead refer to its container ("#").
        inner = _walk(f"{resource_type}.contained[{index}]", item)
        if not any(key == "reference" and value == "#" for _, key, value in inner):
            problems.add(
                f"{resource_type}.contained[{index}]",
                "nothing in the resource references this contained resource (dom-3)",
            )


def keep_reference_details(extras: dict[str, Any], name: str, item: Any) -> None:
    """Keep a Reference (or list of them) verbatim when it says more than ``reference``."""
    items = item if isinstance(item, list) else [item]
    if any(isinstance(i, Mapping) and set(i) - {"reference"} for i in items):
        extras[name] = item


def _reference_key(item: Any) -> Any:
    return item.get("reference") if isinstance(item, Mapping) else None


def _identifier_key(item: Any) -> Any:
    return (item.get("system"), item.get("value")) if isinstance(item, Mapping) else None


# Elements the service renders that a client's value replaces: its narrative, and the
# date the plan was first recorded (by the client's system, if it says so).
_CLIENTS = frozenset({"text", "created"})
_MATCHED = {
    "identifier": _identifier_key,
    "subject": _reference_key,
    "author": _reference_key,
    "addresses": _reference_key,
    "partOf": _reference_key,
    "goal": _reference_key,
}


def _matched(rendered: Any, kept: Any, key: Any) -> Any:
    """``rendered`` with each entry replaced by the kept entry that says the same thing."""
    if not isinstance(rendered, list):
        return kept if key(kept) == key(rendered) else rendered
    by_key = {key(item): item for item in (kept if isinstance(kept, list) else [kept])}
    return [by_key.get(key(item), item) for item in rendered]


def apply_extras(resource: Mapping[str, Any], extras: Mapping[str, Any]) -> dict[str, Any]:
    """A rendered resource with the extras a client wrote (as a parse function returned).

    Unknown extensions and categories are appended; meta tags, security labels and
    other profiles join the service's meta; a client's narrative replaces the generated
    one, and a client's ``created`` the time the service recorded the plan; identifiers and
    references come back verbatim while they still name what the domain holds; elements
    the mapping does not own are added as they were written. The elements the mapping
    reads are put back by verbatim.overlay, before this.
    """
    result = dict(resource)
    for name, kept in extras.items():
        if name in ("written", "checks"):
            continue  # see verbatim.py
        if name == "meta":
            meta = dict(result.get("meta") or {})
            for key, item in kept.items():
                meta[key] = meta.get(key, []) + item if key == "profile" else item
            result["meta"] = meta
        elif name in ("extension", "category"):
            result[name] = list(result.get(name) or []) + list(kept)
        elif name in _MATCHED and name in result:
            result[name] = _matched(result[name], kept, _MATCHED[name])
        elif name in _CLIENTS or name not in result:
            result[name] = kept
    return result


def keep_written(extras: dict[str, Any], resource: Mapping[str, Any], names: Any) -> None:
    """Keep the elements ``names`` of ``resource`` the mapping reads, as written."""
    for name in names:
        if resource.get(name) is not None:
            extras.setdefault("written", {})[name] = resource[name]


def add_check(extras: dict[str, Any], path: str, kind: str, value: Any) -> None:
    """Something to check once the plan is as the write leaves it (see verbatim.check)."""
    extras.setdefault("checks", []).append([path, kind, value])


def read_goal_references(
    problems: Problems, extras: dict[str, Any], resource: Mapping[str, Any]
) -> None:
    """A CarePlan's ``goal``: the service lists the plan's (or phase's) own goals there.

    A written reference to one of them is kept (verbatim, with its display); one to a
    contained Goal, to a Goal by identifier or elsewhere, or to a goal the plan does not
    hold once the write is done (another plan's, one not stored) is refused: the service
    would not list it.
    """
    entries = resource.get("goal") or []
    for path, entry in indexed(entries, f"{resource.get('resourceType')}.goal"):
        target = entry.get("reference")
        if not isinstance(target, str):
            problems.add(
                path,
                "a goal of the plan is named by its reference, Goal/<id>: "
                "a reference by identifier alone cannot be listed",
            )
        elif target.startswith("#"):
            problems.add(
                path,
                "a contained Goal cannot be kept: a goal of the plan is a Goal resource "
                f"with the {t.EXT_GOAL_EPISODE} extension (create it first, or in the same "
                "transaction Bundle)",
            )
        elif _GOAL_REFERENCE.match(target) is None:
            problems.add(
                path, f"{target!r}: a goal of the plan is a Goal of this server, 'Goal/<id>'"
            )
        else:
            add_check(extras, path, "goal", target)
    if entries:
        keep_reference_details(extras, "goal", entries)
