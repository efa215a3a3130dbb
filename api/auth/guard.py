"""The guard in front of patient data: authenticate every request, authorise it by scope,
and keep a patient-bound token inside its patient's compartment.

A missing or invalid token answers 401 with ``WWW-Authenticate``; a token without the
scope a route needs answers 403 naming the scope. A resource of another patient's
compartment answers 404 exactly as an id nobody holds; a write for another patient 403.
"""

from __future__ import annotations

from flask import Flask, g, request

from api.auth import policy
from api.auth.access import Forbidden, Unauthenticated, hide_outside_compartment, require
from api.auth.principal import Principal
from api.auth.tokens import AuthError, verify
from api.fhir.resources import absent_version


def _authenticate() -> Principal:
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthenticated(None)
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    try:
        return verify(token.strip())
    except AuthError as error:
        raise Unauthenticated(str(error)) from None


def _absent(args: dict[str, str]) -> str:
    """What the route answers for an id nobody holds: a record of another patient is
    answered with exactly this."""
    if "plan_id" in args:
        return f"care plan {args['plan_id']!r} does not exist"
    reference = f"{args.get('resource_type')}/{args.get('resource_id')}"
    if request.endpoint == "fhir.vread":
        return absent_version(reference, args.get("version_id", ""))
    return f"{reference} does not exist"


def _hide_other_patients() -> None:
    args = request.view_args or {}
    if "plan_id" not in args and "resource_id" not in args:
        return
    hide_outside_compartment(
        _absent(args), args.get("plan_id"), args.get("resource_type"), args.get("resource_id")
    )


def install(app: Flask) -> None:
    @app.before_request
    def guard() -> None:
        if policy.is_public() or request.method == "OPTIONS":
            return
        if not (request.path.startswith("/api/") or request.path.startswith("/fhir")):
            return
        principal = _authenticate()
        g.principal = principal
        try:
            needed = policy.required()
        except policy.NoRule:
            raise Forbidden("this route has no access rule: it is refused") from None
        for permission in needed or ():
            require(permission.resource, permission.interaction)
        _hide_other_patients()
