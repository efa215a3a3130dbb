"""Each search parameter of a query as the clause the search layer runs.

A parameter this server cannot apply (an unknown name, modifier or chain) raises
:class:`Unsupported`: a search refuses it under ``Prefer: handling=strict`` and otherwise
leaves it out, of the query and of the self link alike. A parameter it can apply but
whose value cannot be read raises :class:`~api.fhir.parameters.InvalidParameter`.

Chains follow one reference to a resource this server serves: ``part-of.status``,
``part-of:CarePlan.identifier``, ``goal.lifecycle-status``. ``_has:Type:param:other``
is the reverse chain: the resources a ``Type`` meeting ``other`` points to through
``param`` (``CarePlan?_has:CarePlan:part-of:status=active``: episodes with an active
phase).
"""

from __future__ import annotations

from typing import Any

from api.fhir.parameters import InvalidParameter, date_options, split_values
from fhir_mappings.search_parameters import SEARCH_PARAMETERS, SearchParameter, normalise_reference
from service import resource_search as rs

# Modifiers by parameter type (besides a resource type on references).
MODIFIERS: dict[str, tuple[str, ...]] = {
    "token": ("", "not", "missing"),
    "reference": ("", "not", "missing"),
    "date": ("", "missing"),
}


class Unsupported(Exception):
    """A parameter (name, modifier or chain) this server does not apply."""


def chain_targets(resource_type: str) -> dict[str, str]:
    """The reference parameters a chain can follow from ``resource_type``: each with the
    type it leads to (one this server serves, so that its parameters can be searched)."""
    return {
        name: parameter.target
        for name, parameter in SEARCH_PARAMETERS[resource_type].items()
        if parameter.type == "reference"
        and not parameter.canonical
        and parameter.target in SEARCH_PARAMETERS
    }


def reverse_chains(resource_type: str) -> list[tuple[str, str]]:
    """(type, reference parameter) pairs that ``_has`` can follow back to ``resource_type``."""
    return [
        (source, name)
        for source in SEARCH_PARAMETERS
        for name, target in chain_targets(source).items()
        if target == resource_type
    ]


def clause(resource_type: str, name: str, value: str, patient: str | None = None) -> rs.Clause:
    """The clause of one query parameter. ``patient``: the compartment the caller is
    bound to, which also bounds the resources a chain looks at."""
    if name.startswith("_has:"):
        return _reverse_chain(resource_type, name, value, patient)
    if "." in name:
        return _chain(resource_type, name, value, patient)
    return _simple(resource_type, name, value)


def _within(patient: str | None) -> tuple[rs.Clause, ...]:
    return () if patient is None else (rs.PatientClause(patient),)


def _chain(resource_type: str, name: str, value: str, patient: str | None) -> rs.Clause:
    link, _, chained = name.partition(".")
    base, _, modifier = link.partition(":")
    targets = chain_targets(resource_type)
    if base not in targets:
        raise Unsupported(
            f"{base!r} cannot be chained on {resource_type}: chains follow "
            + (", ".join(sorted(targets)) or "no parameter")
        )
    target = targets[base]
    if modifier not in ("", target):
        raise Unsupported(f"{base} refers to {target} resources, not {modifier}")
    if "." in chained or chained.startswith("_has"):
        raise Unsupported("chains follow one reference, not more")
    inner = _simple(target, chained, value, shown=name)
    return rs.ChainClause(base, target, (inner, *_within(patient)))


def _reverse_chain(resource_type: str, name: str, value: str, patient: str | None) -> rs.Clause:
    parts = name.split(":")
    if len(parts) < 4:
        raise Unsupported("_has takes the form _has:Type:reference-parameter:parameter")
    source, param = parts[1], parts[2]
    if (source, param) not in reverse_chains(resource_type):
        known = ", ".join(f"_has:{s}:{p}" for s, p in reverse_chains(resource_type))
        raise Unsupported(
            f"no {source} parameter {param!r} refers to {resource_type} resources"
            + (f" (this server follows {known})" if known else "")
        )
    inner_name = ":".join(parts[3:])
    if inner_name.startswith("_has") or "." in inner_name:
        raise Unsupported("_has follows one reference, not more")
    inner = _simple(source, inner_name, value, shown=name)
    return rs.HasClause(source, param, (inner, *_within(patient)))


def _simple(resource_type: str, name: str, value: str, shown: str | None = None) -> rs.Clause:
    """The clause of a parameter of ``resource_type`` itself (``shown``: the name the
    query gave, for messages)."""
    shown = shown or name
    base, _, modifier = name.partition(":")
    if base in ("_id", "_lastUpdated"):
        if modifier:
            raise Unsupported(f"{base} takes no modifier")
        if base == "_id":
            return rs.IdClause(tuple(split_values(value)))
        return rs.DateClause(None, date_options(shown, value))
    parameter = SEARCH_PARAMETERS[resource_type].get(base)
    if parameter is None:
        raise Unsupported(f"{resource_type} has no search parameter {base!r}")
    if modifier == "missing":
        if value not in ("true", "false"):
            raise InvalidParameter(shown, f"takes true or false, not {value!r}")
        return rs.MissingClause(base, parameter.type, value == "true")
    if parameter.type == "reference" and modifier and modifier == parameter.target:
        return rs.ReferenceClause(base, _reference_targets(parameter, value, shown))
    if modifier not in MODIFIERS[parameter.type]:
        raise Unsupported(f"the modifier :{modifier} is not supported on {base}")
    negate = modifier == "not"
    if parameter.type == "token":
        return rs.TokenClause(base, _token_options(value), negate=negate)
    if parameter.type == "reference":
        return rs.ReferenceClause(base, _reference_targets(parameter, value, shown), negate)
    return rs.DateClause(base, date_options(shown, value))


def _token_options(value: str) -> tuple[tuple[Any, str | None], ...]:
    options: list[tuple[Any, str | None]] = []
    for part in split_values(value):
        if "|" not in part:
            options.append((rs.ANY_SYSTEM, part))
        else:
            system, code = part.split("|", 1)
            options.append((system or None, code or None))
    return tuple(options)


def _reference_targets(parameter: SearchParameter, value: str, shown: str) -> tuple[str, ...]:
    if parameter.canonical:
        return tuple(split_values(value))
    targets = []
    for part in split_values(value):
        if "/" in part:
            targets.append(normalise_reference(part))
        elif parameter.target is not None and part:
            targets.append(f"{parameter.target}/{part}")
        else:
            raise InvalidParameter(shown, "an empty reference")
    return tuple(targets)
