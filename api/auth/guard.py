"""The guard in front of patient data: authenticate every request, authorise it by scope,
and keep a patient-bound token inside its patient's compartment.

A missing or invalid token answers 401 with ``WWW-Authenticate``; a token without the
scope a route needs answers 403 naming the scope. A resource of another patient's
compartment answers 404 as if it did not exist; a write for another patient 403.
"""

from __future__ import annotations

from flask import Flask, g, request

from api.auth import policy, scopes
from api.auth.access import Forbidden, Unauthenticated, hide_outside_compartment, require
from api.auth.principal import Principal
from api.auth.tokens import AuthError, verify


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


def _hide_other_patients() -> None:
    args = request.view_args or {}
    hide_outside_compartment(
        args.get("plan_id"), args.get("resource_type"), args.get("resource_id")
    )


def install(app: Flask) -> None:
    @app.before_request
    def guard() -> None:
        if policy.is_public() or request.method == "OPTIONS":
            return
        if not (request.path.startswith("/api/") or request.path.startswith("/fhir")):
            return
        principal = _authenticate()
        if principal.patient is None and scopes.patient_scoped(principal.scopes):
            raise Forbidden("patient scopes need a patient context: the token names no patient")
        g.principal = principal
        try:
            needed = policy.required()
        except policy.NoRule:
            raise Forbidden("this route has no access rule: it is refused") from None
        if needed is not None:
            require(needed.resource, needed.interaction)
        _hide_other_patients()
