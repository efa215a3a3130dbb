"""The ids, references and order of a transaction's entries.

Ids are settled before any reference is rewritten (FHIR R4 http.html#trules): the
matches of conditional creates and updates first, then new ids for the rest, so a
reference to an entry's ``fullUrl`` points at what that entry creates or matched.
Conditional references are resolved when their entry runs, inside the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from api.auth.access import authorize
from api.fhir.bundle_entries import (
    Entry,
    EntryError,
    conditional_reference,
    references,
    rewrite,
)
from api.fhir.resources import PLAN_TYPES
from api.fhir.search import Search, matching_ids
from api.http import database
from service.models import new_id

# The order a transaction processes its entries in (FHIR R4 http.html#trules).
METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}


@dataclass(frozen=True)
class Target:
    """The resource a POST or PUT entry writes, or the one its condition matched."""

    id: str
    matched: bool  # a conditional create's match: nothing is written


def _search_ids(
    index: int, resource_type: str, params: MultiDict[str, str], path: str
) -> list[str]:
    """Ids of up to two live matches of a condition, its errors named at ``path``."""
    try:
        search = Search(resource_type, params, strict=True)
    except BadRequest as error:
        raise EntryError.at(index, 400, "invalid", path, str(error.description)) from None
    return matching_ids(search)


def _one_match(index: int, found: list[str], path: str) -> str | None:
    if len(found) > 1:
        raise EntryError.at(index, 412, "multiple-matches", path, "matches more than one resource")
    return found[0] if found else None


def settle(entry: Entry) -> Target | None:
    """Settle the id a POST or PUT entry writes (None for GET and DELETE)."""
    if entry.method == "POST":
        if entry.if_none_exist is not None:
            # The condition is looked for only once the write itself is allowed.
            authorize(entry.resource_type, "c", None, entry.resource)
            path = f"{entry.path}.request.ifNoneExist"
            found = _search_ids(entry.index, entry.resource_type, entry.if_none_exist, path)
            match = _one_match(entry.index, found, path)
            if match is not None:
                return Target(match, matched=True)
        return Target(new_id(), matched=False)
    if entry.method != "PUT":
        return None
    if entry.resource_id is not None:
        return Target(entry.resource_id, matched=False)
    assert entry.resource is not None
    authorize(entry.resource_type, "u", None, entry.resource)
    path = f"{entry.path}.request.url"
    match = _one_match(
        entry.index, _search_ids(entry.index, entry.resource_type, entry.query, path), path
    )
    given = entry.resource.get("id")
    if match is not None and given not in (None, match):
        raise EntryError.at(
            entry.index,
            400,
            "invalid",
            f"{entry.path}.resource.id",
            f"is not the match's {match!r}",
        )
    # No match: created with the body's id when it has one, as a conditional update alone.
    return Target(match or given or new_id(), matched=False)


def resolved(entry: Entry, full_urls: dict[str, str]) -> dict[str, Any]:
    """The entry's resource with references to the Bundle's entries and conditional
    references replaced by the resources they resolve to."""
    assert entry.resource is not None

    def resolve(path: str, reference: str) -> str:
        if reference in full_urls:
            return full_urls[reference]
        conditional = conditional_reference(reference)
        if conditional is None:
            return reference
        resource_type, query = conditional
        if resource_type not in PLAN_TYPES:
            raise EntryError.at(
                entry.index,
                422,
                "not-found",
                path,
                f"{reference!r} cannot be resolved: this server holds no {resource_type} resources",
            )
        params = MultiDict(parse_qsl(query, keep_blank_values=True))
        if not params:
            raise EntryError.at(entry.index, 400, "invalid", path, "has no search criteria")
        # Resolving is a search, allowed to those who may search the type.
        authorize(resource_type, "s")
        # What the Bundle wrote so far is found as well.
        database().publish_pending()
        match = _one_match(entry.index, _search_ids(entry.index, resource_type, params, path), path)
        if match is None:
            raise EntryError.at(
                entry.index, 422, "not-found", path, f"{reference!r} matches no resource"
            )
        return f"{resource_type}/{match}"

    return dict(rewrite(entry.resource, f"{entry.path}.resource", resolve))


def check_identities(entries: list[Entry]) -> None:
    """A fullUrl names one entry (bdl-7), and a resource is changed by one entry only."""
    full_urls: dict[str, int] = {}
    changed: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.full_url is not None:
            first = full_urls.setdefault(entry.full_url, entry.index)
            if first != entry.index:
                message = f"is entry {first}'s fullUrl too (bdl-7)"
                raise EntryError.at(entry.index, 400, "invalid", f"{entry.path}.fullUrl", message)
        if entry.method in ("PUT", "DELETE") and entry.resource_id is not None:
            key = (entry.resource_type, entry.resource_id)
            first = changed.setdefault(key, entry.index)
            if first != entry.index:
                message = f"entry {first} changes {key[0]}/{key[1]} too"
                path = f"{entry.path}.request.url"
                raise EntryError.at(entry.index, 400, "invalid", path, message)


def _rank(entry: Entry) -> tuple[int, int, int]:
    """FHIR's method order; episodes before the goals and scores that point at them."""
    return METHOD_ORDER[entry.method], int(entry.resource_type != "CarePlan"), entry.index


def order(entries: list[Entry]) -> list[Entry]:
    """The entries in FHIR's order, except that an entry whose resource refers to another
    entry (by its fullUrl, or by a conditional reference to its type) runs after it: a
    goal after the episode a conditional update creates. A cycle is run in FHIR's order."""
    by_url = {e.full_url: e.index for e in entries if e.full_url and e.resource is not None}
    writes: dict[str, list[int]] = {}
    for entry in entries:
        if entry.resource is not None:
            writes.setdefault(entry.resource_type, []).append(entry.index)
    needs: dict[int, set[int]] = {entry.index: set() for entry in entries}
    for entry in entries:
        for reference in references(entry.resource):
            if reference in by_url:
                needs[entry.index].add(by_url[reference])
            elif (conditional := conditional_reference(reference)) is not None:
                needs[entry.index].update(writes.get(conditional[0], ()))
        needs[entry.index].discard(entry.index)
    waiting, order = sorted(entries, key=_rank), []
    done: set[int] = set()
    while waiting:
        ready = next((e for e in waiting if needs[e.index] <= done), waiting[0])
        waiting.remove(ready)
        done.add(ready.index)
        order.append(ready)
    return order
