"""The extras of a FHIR write: what a client wrote that the mapping does not own.

A parse function collects them (``start_extras`` and the readers of each resource);
``apply_extras`` puts them back into a rendered resource, so that they survive every
later change made through either API.

Keys: ``meta`` (its elements other than versionId, lastUpdated and the service's
profile, which stays out of ``meta.profile`` here), ``text`` (a narrative the client
wrote, not one this service generated), ``extension`` (extensions the mapping does not
know), ``category`` (categories it does not own), ``identifier`` (the identifiers
verbatim when one says more than system and value), ``subject``, ``author``,
``addresses`` and ``partOf`` (verbatim when they say more than ``reference``), and every
other element the mapping does not own, under its own name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_mappings import terminology as t
from fhir_mappings.narrative import is_generated
from fhir_mappings.parse_common import Problems, indexed

SERVER_MANAGED_META = frozenset({"versionId", "lastUpdated"})
PROFILES = frozenset({t.EPISODE_PROFILE, t.PHASE_PROFILE, t.GOAL_PROFILE})
# Elements that change the meaning of a resource; the service cannot honour unknown ones.
REFUSED = {
    "implicitRules": "a resource with special rules (implicitRules) cannot be kept",
    "modifierExtension": "modifier extensions change the meaning of the resource; "
    "the service understands none and cannot keep them",
}


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
) -> dict[str, Any]:
    """The extras of the elements the mapping does not own, and the shared ones it does."""
    resource_type = str(resource.get("resourceType"))
    extras: dict[str, Any] = {}
    for key, item in resource.items():
        if key in REFUSED:
            problems.add(f"{resource_type}.{key}", REFUSED[key])
        elif key not in owned:
            extras[key] = item
    meta = read_meta(problems, resource_type, resource.get("meta"), profile)
    if meta:
        extras["meta"] = meta
    text = resource.get("text")
    if text is not None and not is_generated(text):
        extras["text"] = text
    return extras


def keep_reference_details(extras: dict[str, Any], name: str, item: Any) -> None:
    """Keep a Reference (or list of them) verbatim when it says more than ``reference``."""
    items = item if isinstance(item, list) else [item]
    if any(isinstance(i, Mapping) and set(i) - {"reference"} for i in items):
        extras[name] = item


def _reference_key(item: Any) -> Any:
    return item.get("reference") if isinstance(item, Mapping) else None


def _identifier_key(item: Any) -> Any:
    return (item.get("system"), item.get("value")) if isinstance(item, Mapping) else None


_MATCHED = {
    "identifier": _identifier_key,
    "subject": _reference_key,
    "author": _reference_key,
    "addresses": _reference_key,
    "partOf": _reference_key,
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
    one; identifiers and references come back verbatim while they still name what the
    domain holds; elements the mapping does not own are added as they were written.
    """
    result = dict(resource)
    for name, kept in extras.items():
        if name == "meta":
            meta = dict(result.get("meta") or {})
            for key, item in kept.items():
                meta[key] = meta.get(key, []) + item if key == "profile" else item
            result["meta"] = meta
        elif name in ("extension", "category"):
            result[name] = list(result.get(name) or []) + list(kept)
        elif name in _MATCHED and name in result:
            result[name] = _matched(result[name], kept, _MATCHED[name])
        elif name == "text" or name not in result:
            result[name] = kept
    return result
