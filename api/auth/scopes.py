"""SMART on FHIR scopes, v2 (``system/CarePlan.cruds``) and v1 (``user/Goal.read``).

A scope grants interactions on a resource type (or ``*``) in a context: ``patient`` (one
patient's compartment), ``user`` or ``system``. Interactions are SMART v2's letters:
c(reate), r(ead), u(pdate), d(elete), s(earch). v1's ``read`` is ``rs``, ``write`` is
``cud`` and ``*`` is ``cruds``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

INTERACTIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<resource>\*|[A-Z][A-Za-z]+)\."
    r"(?P<permissions>read|write|\*|c?r?u?d?s?)(?:\?.*)?$"
)


@dataclass(frozen=True)
class Scope:
    context: str
    resource: str
    interactions: frozenset[str]

    def allows(self, resource: str, interaction: str) -> bool:
        return self.resource in ("*", resource) and interaction in self.interactions

    def covers(self, other: Scope) -> bool:
        """Whether this scope grants everything ``other`` asks (same context)."""
        return (
            self.context == other.context
            and self.resource in ("*", other.resource)
            and other.interactions <= self.interactions
        )


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Scope | None:
    """A resource scope, or None for other scopes (``openid``, ``launch/patient``…).

    A v2 scope with a query (``?category=…``) is not granted: its restriction cannot be
    honoured here. Results are remembered (scopes are immutable): every request checks
    its token's few scopes.
    """
    match = _SCOPE.match(text)
    if not match or "?" in text or not match.group("permissions"):
        return None
    permissions = match.group("permissions")
    letters = _V1.get(permissions, permissions)
    return Scope(match.group("context"), match.group("resource"), frozenset(letters))


def parse_all(texts: Iterable[str]) -> list[Scope]:
    return [scope for scope in map(parse, texts) if scope is not None]


def grant(requested: Iterable[str], registered: Iterable[str]) -> list[str]:
    """The requested scopes a client's registration covers, as requested."""
    allowed = parse_all(registered)
    granted = []
    for text in requested:
        scope = parse(text)
        if scope is not None and any(a.covers(scope) for a in allowed):
            granted.append(text)
    return granted


def allows(scopes: Iterable[str], resource: str, interaction: str) -> bool:
    """Whether any of the scopes grants ``interaction`` on ``resource``."""
    return any(scope.allows(resource, interaction) for scope in parse_all(scopes))


def patient_scoped(scopes: Iterable[str]) -> bool:
    """Whether every resource scope is in the patient context (a patient-bound token)."""
    parsed = parse_all(scopes)
    return bool(parsed) and all(scope.context == "patient" for scope in parsed)
