"""What the caller may do: scope checks and the patient compartment, used by the routes.

A token without the scope a route needs is refused with 403 naming the scope; a patient-
bound token may write only for its patient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from api.auth import policy, scopes
from api.auth.principal import current_principal
from api.http import database
from service.errors import NotFound
from service.models import CarePlan, StoredResource

REALM = 'Bearer realm="ipt-careplans"'


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
    """Refuse (403) unless the caller's scopes grant ``interaction`` on ``resource``."""
    principal = current_principal()
    if principal is None:
        raise Unauthenticated(None)
    granted = scopes.allows(principal.scopes, resource, interaction)
    if resource in policy.ADMIN_TYPES:
        system = [s for s in principal.scopes if s.startswith("system/")]
        granted = scopes.allows(system, resource, interaction)
    if not granted:
        raise Forbidden(
            f"the token's scopes do not allow this: it needs "
            f"{'system' if resource in policy.ADMIN_TYPES else 'system, user or patient'}"
            f"/{resource}.{interaction} (or a broader scope)"
        )


def allowed(resource: str, interaction: str) -> bool:
    principal = current_principal()
    return principal is not None and scopes.allows(principal.scopes, resource, interaction)


def compartment() -> str | None:
    """The patient the caller is confined to, if any ("Patient/123")."""
    principal = current_principal()
    return principal.patient if principal is not None else None


def require_patient(patient: str | None) -> None:
    """A write must be for the caller's patient when the caller is bound to one."""
    bound = compartment()
    if bound is not None and patient != bound:
        raise Forbidden(f"this token is limited to {bound}: it cannot write for {patient}")


def _plan_patient(session: Any, plan_id: str | None) -> str | None:
    if plan_id is None:
        return None
    return session.scalar(select(CarePlan.patient).where(CarePlan.id == plan_id))


def hide_outside_compartment(
    plan_id: str | None = None, resource_type: str | None = None, resource_id: str | None = None
) -> None:
    """A plan or resource of another patient answers 404, as if it did not exist."""
    bound = compartment()
    if bound is None:
        return
    with database().reading() as session:
        if plan_id is None and resource_type in ("CarePlan", "Goal") and resource_id:
            plan_id = session.scalar(
                select(StoredResource.plan_id).where(
                    StoredResource.resource_type == resource_type,
                    StoredResource.id == resource_id,
                )
            )
        patient = _plan_patient(session, plan_id)
    if patient is not None and patient != bound:
        raise NotFound(f"{resource_type or 'care plan'} {resource_id or plan_id} does not exist")


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
        hide_outside_compartment(resource_type=resource_type, resource_id=resource_id)
    if resource is not None:
        require_patient(subject_patient(resource))
