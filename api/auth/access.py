"""What the caller may do: scope checks and the patient compartment, used by the routes.

One rule: a request is allowed when some scope of the token grants it in that scope's
context. A ``patient/`` scope grants only inside the token's patient context, and nothing
without one. A token that names a patient is confined to that patient's records whatever
scope grants the request. A token without the scope a route needs is refused with 403
naming the scope; a confined token meets another patient's records as if they did not
exist (the same status and message), and may write only for its patient.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select

from api.auth.principal import Principal, current_principal
from api.http import database
from service import resource_store, scopes
from service.errors import NotFound
from service.models import CarePlan, PlanIdentifier, StoredResource

REALM = 'Bearer realm="ipt-careplans"'
# The types whose records belong to a care plan, and so to its patient. A Flag (a safety
# signal) is published from the plan's records and takes no FHIR writes.
WRITABLE_TYPES = ("CarePlan", "Goal", "QuestionnaireResponse", "Observation")
PUBLISHED_TYPES = ("Flag",)
PLAN_TYPES = (*WRITABLE_TYPES, *PUBLISHED_TYPES)
# Types that belong to the client that created them, not to a patient: a Subscription is
# found only by its owner (api/fhir/subscriptions.py), and carries only what its owner's
# scopes and patient context allow.
OWNED_TYPES = ("Subscription",)


class Unauthenticated(Exception):
    """No valid token: 401."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason or "this route needs a bearer token")
        self.reason = reason

    @property
    def challenge(self) -> str:
        if self.reason is None:
            return REALM
        description = self.reason.replace('"', "'")
        return f'{REALM}, error="invalid_token", error_description="{description}"'


class Forbidden(Exception):
    """A valid token that does not allow what was asked: 403."""


def require(resource: str, interaction: str) -> None:
    """Refuse (403) unless a scope of the caller grants ``interaction`` on ``resource`` in
    its context (a ``patient/`` scope only with a patient context)."""
    principal = current_principal()
    if principal is None:
        raise Unauthenticated(None)
    if scopes.allows(principal.scopes, resource, interaction, principal.patient):
        return
    needed = f"system, user or patient/{resource}.{interaction}"
    if resource in scopes.NAMED_ONLY:
        needed += f" (a scope naming {resource}: a wildcard does not grant it)"
    else:
        needed += " (or a broader scope)"
    unused = "" if principal.patient is not None else _unused_patient_scopes(principal)
    raise Forbidden(f"the token's scopes do not allow this: it needs {needed}{unused}")


def _unused_patient_scopes(principal: Principal) -> str:
    if any(scope.context == "patient" for scope in scopes.parse_all(principal.scopes)):
        return "; its patient/ scopes grant nothing: the token names no patient"
    return ""


def allowed(resource: str, interaction: str) -> bool:
    """Whether the caller's scopes grant ``interaction`` on ``resource`` (no refusal)."""
    principal = current_principal()
    return principal is not None and scopes.allows(
        principal.scopes, resource, interaction, principal.patient
    )


def compartment() -> str | None:
    """The patient the caller is confined to, if any ("Patient/123").

    A token that names a patient is confined to that patient's records for every scope it
    holds, ``system/`` and ``user/`` ones and AuditEvent included: the patient context is
    what the token was issued for, so it never reaches another patient's records.
    """
    principal = current_principal()
    return principal.patient if principal is not None else None


def require_patient(patient: str | None) -> None:
    """A write must be for the caller's patient when the caller is bound to one."""
    bound = compartment()
    if bound is not None and patient != bound:
        raise Forbidden(f"this token is limited to {bound}: it cannot write for {patient}")


def _owner(
    session: Any, resource_type: str | None, resource_id: str | None, plan_id: str | None
) -> tuple[bool, str | None]:
    """Whether the plan or resource is stored, and the patient whose it is."""
    if plan_id is None and resource_type in PLAN_TYPES and resource_id:
        plan_id = session.scalar(
            select(StoredResource.plan_id).where(
                StoredResource.resource_type == resource_type,
                StoredResource.id == resource_id,
            )
        )
        if plan_id is None:
            return False, None
    if plan_id is None:
        return False, None
    patient = session.scalar(select(CarePlan.patient).where(CarePlan.id == plan_id))
    return patient is not None, patient


def hide_outside_compartment(
    absent: str,
    plan_id: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    *,
    stored_only: bool = False,
) -> None:
    """For a caller confined to a patient, a plan or resource of another patient is
    answered as one that does not exist: NotFound with ``absent``, the very message the
    route gives for an id nobody holds. With ``stored_only``, an id nobody holds is
    refused the same way (a write that would create it could otherwise tell the two
    apart)."""
    bound = compartment()
    if bound is None:
        return
    with database().reading() as session:
        stored, patient = _owner(session, resource_type, resource_id, plan_id)
    if (stored and patient != bound) or (stored_only and not stored):
        raise NotFound(absent)


def subject_patient(resource: Mapping[str, Any]) -> str | None:
    """The patient a FHIR resource is about ("Patient/123"), from its subject."""
    reference = (resource.get("subject") or {}).get("reference")
    if not isinstance(reference, str):
        return None
    parts = reference.rstrip("/").split("/")
    return f"Patient/{parts[-1]}" if len(parts) >= 2 and parts[-2] == "Patient" else reference


def authorize(
    resource_type: str,
    interaction: str,
    resource_id: str | None = None,
    resource: Mapping[str, Any] | None = None,
) -> None:
    """Check one FHIR interaction as the routes and Bundle entries need it: the scope, the
    compartment of the resource addressed, and the patient of the resource written."""
    require(resource_type, interaction)
    if resource_id is not None:
        hide_outside_compartment(
            f"{resource_type}/{resource_id} does not exist",
            resource_type=resource_type,
            resource_id=resource_id,
        )
    if resource is not None:
        require_patient(subject_patient(resource))
        if compartment() is not None:
            require_known_identifiers(
                _identifiers(resource.get("identifier")),
                _stored_identifiers(resource_type, resource_id),
            )


def _identifiers(listed: Any) -> set[tuple[Any, Any]]:
    if isinstance(listed, Mapping):
        listed = [listed]  # QuestionnaireResponse has one identifier, not a list
    if not isinstance(listed, list):
        return set()
    return {(i.get("system"), i.get("value")) for i in listed if isinstance(i, Mapping)}


def _stored_identifiers(resource_type: str, resource_id: str | None) -> set[tuple[Any, Any]]:
    if resource_id is None:
        return set()
    with database().reading() as session:
        stored = resource_store.current(session, resource_type, resource_id)
    if stored is None or stored.content is None:
        return set()
    return _identifiers(json.loads(stored.content).get("identifier"))


def require_known_identifiers(
    identifiers: Iterable[tuple[Any, Any]], held: Iterable[tuple[Any, Any]]
) -> None:
    """A token confined to a patient keeps the identifiers its records have but gives
    none new: identifiers are unique across patients, so taking one that another
    patient's record holds would be refused where a free one is not, and tell."""
    if compartment() is None:
        return
    if set(identifiers) - set(held):
        raise Forbidden(
            "a token confined to a patient cannot give a record a new identifier: "
            "identifiers are assigned by systems that are not confined to one patient"
        )


def require_known_plan_identifiers(
    plan_id: str | None, identifiers: list[Mapping[str, Any]] | None
) -> None:
    """The native API's form of :func:`require_known_identifiers` for a plan's
    ``identifiers`` (``plan_id`` None for a new plan)."""
    if compartment() is None or identifiers is None:
        return
    held: set[tuple[Any, Any]] = set()
    if plan_id is not None:
        with database().reading() as session:
            rows = session.execute(
                select(PlanIdentifier.system, PlanIdentifier.value).where(
                    PlanIdentifier.plan_id == plan_id
                )
            )
            held = {(system, value) for system, value in rows}
    require_known_identifiers(_identifiers(identifiers), held)


def refuse_chosen_id(resource_type: str, resource_id: str) -> None:
    """A caller confined to a patient cannot create a resource with an id of its choosing
    (update as create): the id may be another patient's, and creating it or not would
    tell. It answers as for a record that does not exist."""
    hide_outside_compartment(
        f"{resource_type}/{resource_id} does not exist",
        resource_type=resource_type,
        resource_id=resource_id,
        stored_only=True,
    )
