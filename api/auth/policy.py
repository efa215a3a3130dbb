"""Which scope every route needs: one table for the native API and the FHIR interface.

A permission is a resource type and a SMART v2 interaction letter (c, r, u, d, s). The
native API uses the scopes of the FHIR resources it touches: a plan, its phases, sessions
and homework are CarePlans (sessions and homework are activities of a phase CarePlan, so
changing them updates it); goals are Goals; administrations of rating scales are
Observations (their totals are published as such) and safety signals are Flags. A route
that shows records of several types needs a permission for each (a plan's progress shows
its scores, which FHIR serves as Observations): every one is checked, and the first
missing one is refused. The clinic's outcomes report is a MeasureReport: aggregate
figures, with a scope of its own.

The instrument declarations (``/api/v1/instruments``) hold no patient data: any
authenticated client reads them, whatever its scopes (``AUTHENTICATED``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import request

# Routes any caller may use: no patient data behind them. /metrics carries only counts by
# route template, status and resource type: no ids, URLs, query strings or record contents.
PUBLIC_PREFIXES = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/.well-known/",
    "/auth/",
)
PUBLIC_PATHS = ("/", "/fhir/metadata")
# Basic: the subscription topics' definitions (no other Basic resource is served).
CONFORMANCE_TYPES = ("StructureDefinition", "CodeSystem", "ValueSet", "Questionnaire", "Basic")
ADMIN_TYPES = ("AuditEvent",)


@dataclass(frozen=True)
class Permission:
    resource: str
    interaction: str


# Native API: (blueprint.view, method) -> the permission it needs, or the permissions it
# needs all of.
NATIVE: dict[tuple[str, str], Permission | tuple[Permission, ...]] = {
    ("care-plans.CarePlans", "GET"): Permission("CarePlan", "s"),
    ("care-plans.CarePlans", "POST"): Permission("CarePlan", "c"),
    ("care-plans.CarePlan", "GET"): Permission("CarePlan", "r"),
    ("care-plans.CarePlan", "PATCH"): Permission("CarePlan", "u"),
    ("care-plans.CarePlan", "DELETE"): Permission("CarePlan", "d"),
    ("care-plans.PlanChanges", "GET"): Permission("CarePlan", "r"),
    ("phases.Phases", "GET"): Permission("CarePlan", "r"),
    ("phases.Phase", "GET"): Permission("CarePlan", "r"),
    ("phases.Phase", "PATCH"): Permission("CarePlan", "u"),
    ("goals.Goals", "GET"): Permission("Goal", "s"),
    ("goals.Goals", "POST"): Permission("Goal", "c"),
    ("goals.Goal", "GET"): Permission("Goal", "r"),
    ("goals.Goal", "PATCH"): Permission("Goal", "u"),
    ("goals.Goal", "DELETE"): Permission("Goal", "d"),
    ("homework.HomeworkList", "GET"): Permission("CarePlan", "r"),
    ("homework.HomeworkList", "POST"): Permission("CarePlan", "u"),
    ("homework.Homework", "GET"): Permission("CarePlan", "r"),
    ("homework.Homework", "PATCH"): Permission("CarePlan", "u"),
    ("homework.Homework", "DELETE"): Permission("CarePlan", "u"),
    ("sessions.Sessions", "GET"): Permission("CarePlan", "r"),
    ("sessions.Sessions", "POST"): Permission("CarePlan", "u"),
    ("sessions.Session", "GET"): Permission("CarePlan", "r"),
    ("sessions.Session", "PATCH"): Permission("CarePlan", "u"),
    ("sessions.Session", "DELETE"): Permission("CarePlan", "u"),
    ("administrations.Administrations", "GET"): Permission("Observation", "s"),
    ("administrations.Administrations", "POST"): Permission("Observation", "c"),
    ("administrations.Administration", "GET"): Permission("Observation", "r"),
    ("administrations.Administration", "PATCH"): Permission("Observation", "u"),
    ("administrations.Administration", "DELETE"): Permission("Observation", "d"),
    ("safety-signals.SafetySignals", "GET"): Permission("Flag", "s"),
    ("safety-signals.SafetySignal", "GET"): Permission("Flag", "r"),
    ("safety-signals.Acknowledgement", "POST"): Permission("Flag", "u"),
    ("progress.PlanProgress", "GET"): (Permission("CarePlan", "r"), Permission("Observation", "r")),
    ("progress-documents.ProgressChart", "GET"): (
        Permission("CarePlan", "r"),
        Permission("Observation", "r"),
    ),
    ("progress-documents.PlanSummary", "GET"): (
        Permission("CarePlan", "r"),
        Permission("Goal", "r"),
        Permission("Observation", "r"),
    ),
    ("reports.OutcomesReport", "GET"): Permission("MeasureReport", "r"),
}
# Native routes any authenticated client may use, whatever its scopes: no patient data.
AUTHENTICATED = frozenset({"instruments.Instruments", "instruments.Instrument"})


def needs(endpoint: str, method: str) -> tuple[Permission, ...] | None:
    """Every permission a native route needs; None when the table has no rule for it."""
    found = NATIVE.get((endpoint, method))
    if found is None:
        return None
    return found if isinstance(found, tuple) else (found,)


# FHIR interface: view function name -> interaction on the resource type in the URL.
FHIR: dict[str, str] = {
    "read": "r",
    "vread": "r",
    "instance_history": "r",
    "type_history": "s",
    "search_type": "s",
    "search_post": "s",
    "create": "c",
    "update": "u",
    "conditional_update": "u",
    "patch": "u",
    "delete": "d",
    "audit_read": "r",
    "audit_search": "s",
    # Audit records are never changed: these answer 405, but only to an auditor (one who
    # may read them); no scope grants writing them.
    "audit_type_write": "r",
    "audit_instance_write": "r",
    # Subscriptions: each only its owner's (the routes check the owner).
    "subscription_create": "c",
    "subscription_read": "r",
    "subscription_update": "u",
    "subscription_delete": "d",
    "subscription_search": "s",
    "subscription_status": "r",
    "subscription_status_type": "r",
    "subscription_events": "r",
}
# Routes that check each part of the request themselves.
SELF_CHECKED = (
    "fhir.bundle",
    "fhir.system_history",
    # Bulk export: the read scope of each type exported, and the job's own client.
    "fhir.export_system",
    "fhir.export_patients",
    "fhir.export_patient",
    "fhir.export_status",
    "fhir.export_cancel",
    "fhir.export_file",
)


class NoRule(Exception):
    """A data route without an access rule: refused rather than left open."""


def is_public() -> bool:
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return True
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0] != "fhir" or parts[1] not in CONFORMANCE_TYPES:
        return False
    # Reading and searching them; a search may come as a form (POST …/_search).
    return request.method == "GET" or (
        request.method == "POST" and len(parts) == 3 and parts[2] == "_search"
    )


def required() -> tuple[Permission, ...] | None:
    """The permissions the current request needs, all of them; None when the route checks
    each part itself (Bundles, system history) or no route matches (it answers 404 or 405
    itself).

    A matched data route missing from the tables raises NoRule: access fails closed.
    """
    endpoint = request.endpoint or ""
    if endpoint in SELF_CHECKED or endpoint in AUTHENTICATED or not request.url_rule:
        return None
    if endpoint.startswith("fhir."):
        interaction = FHIR.get(endpoint.removeprefix("fhir."))
        resource = (request.view_args or {}).get("resource_type") or "AuditEvent"
        if interaction is None:
            raise NoRule(endpoint)
        return (Permission(str(resource), interaction),)
    permissions = needs(endpoint, request.method)
    if not permissions:
        raise NoRule(endpoint)
    return permissions
