"""The last pass over the OpenAPI document, for what no single route can say about itself.

One place, applied to every operation as the document is produced:

* the token endpoint (``POST /auth/token``, a plain Flask route) and an OAuth 2.0
  ``clientCredentials`` security scheme whose token URL it is, so that the docs page can
  fetch its own token; each operation names the SMART scope it needs, taken from the
  access table the guard enforces (:mod:`api.auth.policy`);
* no query parameter carries an ``example``, ``examples`` or ``default``: Swagger UI fills
  those in as values on "Try it out", turning an example into a filter. They are kept as
  text in the parameter's description;
* each error status gets an example of its own (problem+json on the native API, an
  OperationOutcome on /fhir) instead of one generated from the Problem schema;
* FHIR's ``{resource_type}`` path parameter lists the types the server serves.
"""

from __future__ import annotations

import copy
import json
import re
from http import HTTPStatus
from typing import Any

from apispec import APISpec
from flask import Flask

from api import examples
from api.auth import endpoints as auth_endpoints
from api.auth import policy
from api.fhir.resources import CONFORMANCE_TYPES, PLAN_TYPES, WRITABLE_TYPES
from service import scopes

OAUTH_SCHEME = "smart"
BEARER_SCHEME = "bearer"
BASIC_SCHEME = "clientSecretBasic"
TOKEN_PATH = "/auth/token"
PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"
_METHODS = ("get", "put", "post", "patch", "delete")
_LETTERS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
# Which FHIR operations also answer the conformance resources (read only).
_CONFORMANCE_READ = ("/fhir/{resource_type}/{resource_id}", "get")
_CONFORMANCE_SEARCH = ("/fhir/{resource_type}", "get")
# The interactions (view names) that write: only the writable types take them.
_WRITES = ("create", "update", "conditional_update", "patch", "delete")


class FinishedSpec(APISpec):
    """An APISpec whose document has had :func:`finish` applied (``app`` set once the
    routes are registered)."""

    app: Flask | None = None

    def to_dict(self) -> dict[str, Any]:
        document = super().to_dict()
        if self.app is None:
            return document
        return finish(copy.deepcopy(document), self.app)


def install(spec: APISpec, app: Flask) -> None:
    """Make ``spec`` produce the finished document for ``app`` (called once its routes are
    registered; both the served /openapi.json and the committed file come from it)."""
    spec.__class__ = FinishedSpec
    assert isinstance(spec, FinishedSpec)
    spec.app = app


def finish(document: dict[str, Any], app: Flask) -> dict[str, Any]:
    """The document with the token endpoint, security, examples and enums added."""
    endpoints = _endpoints(app)
    _add_token_endpoint(document)
    needed: dict[tuple[str, str], list[list[str]] | None] = {}
    for path, method, operation in _operations(document):
        if path == TOKEN_PATH:
            continue
        endpoint = endpoints.get((path, method.upper()))
        scopes_needed = _needed_scopes(path, method, endpoint)
        needed[(path, method)] = scopes_needed
        _secure(operation, scopes_needed, any_token=endpoint in policy.AUTHENTICATED)
        _unfill_query_parameters(operation)
        _type_enum(document["paths"][path], path, method, operation)
        first = [group[0] for group in scopes_needed] if scopes_needed is not None else None
        _error_examples(document, path, operation, first)
    _add_security_schemes(document, needed)
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if method in _METHODS
    ]


def _endpoints(app: Flask) -> dict[tuple[str, str], str]:
    """(OpenAPI path, method) -> Flask endpoint, from the app's URL map."""
    found: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            found.setdefault((path, method), rule.endpoint)
    return found


# --- security ------------------------------------------------------------------------------


def _needed_scopes(path: str, method: str, endpoint: str | None) -> list[list[str]] | None:
    """The narrowest SMART v2 scopes the operation needs (system context; user/ and
    patient/ work alike), as alternatives: one of the lists, every scope of it. [] when
    the route checks each part itself, None when it is public."""
    if endpoint is None:
        return None
    if not (path.startswith("/api/") or path.startswith("/fhir")):
        return None
    if path in policy.PUBLIC_PATHS or path.startswith(policy.PUBLIC_PREFIXES):
        return None
    if endpoint in policy.SELF_CHECKED:
        return []
    if endpoint.startswith("fhir."):
        letter = policy.FHIR.get(endpoint.removeprefix("fhir."))
        if letter is None:
            return []
        types: tuple[str, ...] = PLAN_TYPES if "{resource_type}" in path else policy.ADMIN_TYPES
        if endpoint.removeprefix("fhir.") in _WRITES:
            types = WRITABLE_TYPES
        if path.startswith("/fhir/Subscription"):
            types = ("Subscription",)  # routes of their own type, named in the path
        return [[f"system/{resource}.{letter}"] for resource in types]
    permissions = policy.needs(endpoint, method.upper())
    if not permissions:
        return []
    return [[f"system/{p.resource}.{p.interaction}" for p in permissions]]


def _secure(
    operation: dict[str, Any], needed: list[list[str]] | None, *, any_token: bool = False
) -> None:
    if needed is None:
        if operation.get("security") == []:
            return
        operation["security"] = []
        return
    if operation.get("security") == []:
        return  # documented as public by its route (the conformance resources)
    alternatives: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]
    alternatives += [{OAUTH_SCHEME: scopes_all} for scopes_all in needed] or [{OAUTH_SCHEME: []}]
    operation["security"] = alternatives
    if needed:
        names = " or ".join(" and ".join(f"`{scope}`" for scope in group) for group in needed)
        both = any(len(group) > 1 for group in needed)
        text = (
            f"**Scope:** {names}{' (each of them)' if both else ''}: the same with `user/` or "
            "`patient/`, or a broader scope (`.cruds`, `.rs`, `*`) also grants it."
        )
    elif any_token:
        text = "**Scope:** none: any valid token reads it (it holds no patient data)."
    else:
        text = "**Scope:** each part of the request is checked against the token's scopes."
    description = operation.get("description", "")
    operation["description"] = f"{description}\n\n{text}" if description else text


def _scope_description(text: str) -> str:
    scope = scopes.parse(text)
    if scope is None:
        return text
    letters = [_LETTERS[letter] for letter in "cruds" if letter in scope.interactions]
    resource = "every resource type" if scope.resource == "*" else f"{scope.resource}"
    if scope.resource == "*":
        resource += " except AuditEvent"
    context = {
        "system": "any patient (a system)",
        "user": "the records the user may see",
        "patient": "one patient (the client's patient)",
    }[scope.context]
    return f"{', '.join(letters)} {resource}: {context}"


def _add_security_schemes(
    document: dict[str, Any], needed: dict[tuple[str, str], list[list[str]] | None]
) -> None:
    offered = list(auth_endpoints.SCOPES_SUPPORTED)
    for scopes_needed in needed.values():
        for group in scopes_needed or ():
            for scope in group:
                if scope not in offered:
                    offered.append(scope)
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[OAUTH_SCHEME] = {
        "type": "oauth2",
        "description": (
            "OAuth 2.0 client credentials at POST /auth/token: the client's id and secret "
            "(sent with HTTP Basic) for a token with the ticked SMART scopes. Only the "
            "scopes the client is registered for are granted. Register a client with "
            "`ipt-careplans clients create`."
        ),
        "flows": {
            "clientCredentials": {
                "tokenUrl": TOKEN_PATH,
                "scopes": {scope: _scope_description(scope) for scope in offered},
            }
        },
    }
    schemes[BASIC_SCHEME] = {
        "type": "http",
        "scheme": "basic",
        "description": "A client's id and secret, for POST /auth/token only (client_secret_basic).",
    }
    document["security"] = [{BEARER_SCHEME: []}, {OAUTH_SCHEME: []}]


# --- the token endpoint --------------------------------------------------------------------

_OAUTH_ERROR_EXAMPLES: dict[int, dict[str, tuple[str, str, str]]] = {
    400: {
        "missing_scope": (
            "No scope requested",
            "invalid_request",
            "scope is required: name the scopes the token needs",
        ),
        "wrong_grant": (
            "Another grant type",
            "unsupported_grant_type",
            "only the client_credentials grant is supported",
        ),
        "scope_not_granted": (
            "None of the scopes is registered for the client",
            "invalid_scope",
            "none of the requested scopes is granted to this client",
        ),
        "assertion_refused": (
            "A client assertion that is not accepted",
            "invalid_client",
            "the client assertion has expired",
        ),
    },
    401: {
        "wrong_secret": (
            "Unknown client or wrong secret",
            "invalid_client",
            "client authentication failed",
        ),
        "secret_in_form": (
            "client_secret in the form instead of HTTP Basic",
            "invalid_client",
            "send the client secret with HTTP Basic, not in the form",
        ),
    },
    429: {
        "throttled": (
            "Too many attempts",
            "too_many_requests",
            "too many failed attempts for this client: try again in 60 seconds",
        ),
    },
    503: {
        "no_counters": (
            "The rate-limit storage is unreachable",
            "temporarily_unavailable",
            "the token endpoint is unavailable: try again shortly",
        ),
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}


def _add_token_endpoint(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["TokenRequest"] = {
        "type": "object",
        "required": ["grant_type", "scope"],
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "scope": {
                "type": "string",
                "description": "Space-separated SMART scopes, e.g. `system/CarePlan.rs "
                "system/Goal.rs`; the token gets those the client is registered for",
            },
            "client_id": {
                "type": "string",
                "description": "Optional; when given it must be the authenticated client",
            },
            "client_assertion_type": {
                "type": "string",
                "enum": [auth_endpoints.JWT_BEARER],
                "description": "private_key_jwt only",
            },
            "client_assertion": {
                "type": "string",
                "description": "private_key_jwt only: a JWT signed with one of the client's "
                f"registered keys ({', '.join(auth_endpoints.ASSERTION_ALGORITHMS)}); iss and "
                "sub the client id, aud the token endpoint's URL, exp at most 5 minutes "
                "ahead, jti used once",
            },
        },
        "additionalProperties": True,
    }
    schemas["TokenResponse"] = {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope"],
        "properties": {
            "access_token": {"type": "string", "description": "A signed JWT"},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer", "description": "Seconds the token is valid"},
            "scope": {"type": "string", "description": "The scopes granted, space-separated"},
        },
    }
    schemas["OAuthError"] = {
        "type": "object",
        "description": "An OAuth 2.0 error (RFC 6749 §5.2)",
        "required": ["error", "error_description"],
        "properties": {
            "error": {
                "type": "string",
                "enum": [
                    "invalid_request",
                    "invalid_client",
                    "invalid_scope",
                    "unsupported_grant_type",
                    "too_many_requests",
                    "temporarily_unavailable",
                ],
            },
            "error_description": {"type": "string"},
        },
    }
    responses: dict[str, Any] = {
        "200": {
            "description": "The access token (not cached: Cache-Control no-store)",
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/TokenResponse"},
                    "example": {
                        "access_token": "eyJhbGciOiJSUzM4NCIsImtpZCI6IjIwMjYtMDEifQ.eyJ…",
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "scope": "system/CarePlan.rs system/Goal.rs",
                    },
                }
            },
        }
    }
    descriptions = {
        400: "A malformed request, another grant type, no granted scope, or a refused client "
        "assertion",
        401: "The client's HTTP Basic credentials are wrong (or the secret was sent in the form)",
        429: "Too many token requests from this address, or failed ones for this client",
        503: "The rate-limit storage cannot be reached: the endpoint refuses for now",
    }
    for status, named in _OAUTH_ERROR_EXAMPLES.items():
        response: dict[str, Any] = {
            "description": descriptions[status],
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/OAuthError"},
                    "examples": {
                        name: {
                            "summary": summary,
                            "value": {"error": error, "error_description": text},
                        }
                        for name, (summary, error, text) in named.items()
                    },
                }
            },
        }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {
                    "description": auth_endpoints.BASIC_CHALLENGE,
                    "schema": {"type": "string"},
                }
            }
        if status in (429, 503):
            response["headers"] = dict(_RETRY_AFTER)
        responses[str(status)] = response
    document.setdefault("paths", {})[TOKEN_PATH] = {
        "post": {
            "tags": ["auth"],
            "summary": "Get an access token (OAuth 2.0 client credentials)",
            "description": (
                "RFC 6749 §4.4. The client authenticates with its id and secret in "
                "`Authorization: Basic` (client_secret_basic; a `client_secret` in the form is "
                "refused) or with a signed JWT in `client_assertion` (private_key_jwt, SMART "
                "Backend Services). The token carries the requested scopes the client is "
                "registered for. Rate-limited per source address and per client id.\n\n"
                "On this page: **Authorize** with the `smart` scheme (client id and secret, "
                "tick the scopes) fetches a token here and sends it with every request."
            ),
            "operationId": "token",
            "security": [{BASIC_SCHEME: []}, {}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {"$ref": "#/components/schemas/TokenRequest"},
                    }
                },
            },
            "responses": responses,
        }
    }
    tags = document.setdefault("tags", [])
    if not any(tag.get("name") == "auth" for tag in tags):
        tags.insert(0, {"name": "auth", "description": "Access tokens (OAuth 2.0, SMART)"})


# --- query parameters ----------------------------------------------------------------------


def _unfill_query_parameters(operation: dict[str, Any]) -> None:
    """Move what Swagger UI would fill in (example, examples, default) into the text."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "query":
            continue
        schema = parameter.get("schema", {})
        notes = []
        for holder in (parameter, schema):
            if "example" in holder:
                notes.append(f"Example: `{_text(holder.pop('example'))}`.")
            for value in holder.pop("examples", None) or ():
                if isinstance(value, dict) and "value" in value:
                    value = value["value"]
                notes.append(f"Example: `{_text(value)}`.")
        for holder in (schema, parameter):
            if "default" in holder:
                notes.insert(0, f"Default: {_text(holder.pop('default'))}.")
        if notes:
            description = parameter.get("description", "")
            if description and not description.endswith((".", ")")):
                description += "."
            parameter["description"] = " ".join(filter(None, [description, *notes]))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- FHIR resource types -------------------------------------------------------------------


def _type_enum(item: dict[str, Any], path: str, method: str, operation: dict[str, Any]) -> None:
    """Give each operation its own ``resource_type`` parameter listing what it serves."""
    if "{resource_type}" not in path:
        return
    shared = [p for p in item.get("parameters", []) if p.get("name") == "resource_type"]
    for parameter in shared:
        item["parameters"].remove(parameter)
    if not item.get("parameters"):
        item.pop("parameters", None)
    writes = method in ("put", "patch", "delete") or (method == "post" and "_search" not in path)
    types = list(WRITABLE_TYPES if writes else PLAN_TYPES)
    if (path, method) in (_CONFORMANCE_READ, _CONFORMANCE_SEARCH):
        types += list(CONFORMANCE_TYPES)
    own = [p for p in operation.get("parameters", []) if p.get("name") == "resource_type"]
    parameter = own[0] if own else {"in": "path", "name": "resource_type", "required": True}
    parameter["schema"] = {"type": "string", "enum": types}
    parameter["description"] = "A resource type this server serves"
    if not own:
        operation.setdefault("parameters", []).insert(0, parameter)


# --- error examples ------------------------------------------------------------------------

_PROBLEMS: dict[int, tuple[str | None, str]] = {
    400: (
        "malformed",
        "the body is not valid JSON: Expecting property name enclosed in double quotes at "
        "line 1, column 2",
    ),
    401: ("unauthenticated", "this route needs a bearer token"),
    404: ("not-found", f"care plan {examples.PLAN_ID!r} does not exist"),
    405: (None, "The method is not allowed for the requested URL."),
    406: (None, "only JSON is produced here"),
    409: (
        "conflict",
        "the write conflicts with stored data: an identifier or number is already taken",
    ),
    410: ("gone", f"care plan {examples.PLAN_ID!r} was deleted"),
    412: (
        "version-mismatch",
        "care plan is at version 3, not 2: read it again and re-apply the change",
    ),
    413: (None, "the request body is larger than this service accepts"),
    415: ("unsupported-media-type", "send the body as application/json, not text/plain"),
    422: ("validation", "invalid problem_areas.2"),
    429: (None, "too many requests: try again shortly"),
    503: (None, "the database is unavailable or busy: retry shortly"),
    500: (None, "the server could not complete the request; it has been logged"),
}
_FHIR_ISSUES: dict[int, tuple[str, str]] = {
    400: ("invalid", "unknown search parameter 'colour' (Prefer: handling=strict)"),
    401: ("login", "this route needs a bearer token"),
    404: ("not-found", "CarePlan/019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d61 does not exist"),
    405: ("not-supported", "audit records cannot be changed"),
    406: ("not-supported", "only application/fhir+json is produced"),
    409: ("conflict", "the identifier urn:oid:1.2.3|IPT-1 is already taken"),
    410: ("deleted", "CarePlan/019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d61 was deleted"),
    412: ("conflict", "CarePlan/019bfe4c-5b2a-7c3e-9a55-3c2b3f0b8d61 is at version 3, not 2"),
    413: ("too-costly", "the request body is larger than this service accepts"),
    415: ("not-supported", "send the body as application/fhir+json, not text/plain"),
    422: ("business-rule", "the resource cannot be represented as an IPT care plan"),
    503: ("transient", "the database is unavailable or busy: retry shortly"),
    500: ("exception", "the server could not complete the request; it has been logged"),
}


_PLAN = f"/api/v1/care-plans/{examples.PLAN_ID}"
# The request an example problem answers (its ``instance``).
_INSTANCES = {
    **dict.fromkeys((400, 401, 403, 404, 405, 406, 410, 412, 500, 503), _PLAN),
    **dict.fromkeys((409, 413, 415, 422, 429), "/api/v1/care-plans"),
}


def _forbidden(needed: list[str] | None) -> str:
    # A Bundle's entries are checked one by one: the example is a refused create.
    scope = needed[0].removeprefix("system/") if needed else "CarePlan.c"
    resource = scope.split(".")[0]
    if resource in scopes.NAMED_ONLY:
        tail = f" (a scope naming {resource}: a wildcard does not grant it)"
    else:
        tail = " (or a broader scope)"
    return f"the token's scopes do not allow this: it needs system, user or patient/{scope}{tail}"


def problem_example(status: int, path: str, needed: list[str] | None = None) -> dict[str, Any]:
    """A realistic problem+json body for ``status`` on ``path``."""
    kind, detail = _PROBLEMS.get(status, (None, HTTPStatus(status).phrase))
    if status == 403:
        kind, detail = "forbidden", _forbidden(needed)
    body: dict[str, Any] = {
        "type": f"urn:ipt-careplans:problem:{kind}" if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": path,
        "request_id": "6f1c2a9e4b7d4e0f8a3b5c6d7e8f9a0b",
    }
    if status == 422:
        body["errors"] = [
            {
                "field": "problem_areas.2",
                "pointer": "/problem_areas/2",
                "location": "json",
                "message": "Must be one of: grief, role-dispute, role-transition, "
                "interpersonal-deficits.",
            }
        ]
    return body


def outcome_example(status: int, needed: list[str] | None = None) -> dict[str, Any]:
    """A realistic OperationOutcome for ``status`` on the FHIR interface."""
    code, diagnostics = _FHIR_ISSUES.get(status, ("exception", HTTPStatus(status).phrase))
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if status == 403:
        issue["code"], issue["diagnostics"] = "forbidden", _forbidden(needed)
        if needed == []:
            issue["expression"] = ["Bundle.entry[0]"]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _error_examples(
    document: dict[str, Any], path: str, operation: dict[str, Any], needed: list[str] | None
) -> None:
    """Each error response's example, by reference to a shared one in
    ``components/examples`` (one per status and interface, one per scope for 403)."""
    fhir = path == "/fhir" or path.startswith("/fhir/")
    for code, response in list(operation.get("responses", {}).items()):
        if code == "default":
            response = operation["responses"][code] = _default_error(fhir)
        status = 500 if code == "default" else int(code) if code.isdigit() else 0
        if status < 400 or "$ref" in response:
            continue
        for media_type, content in response.get("content", {}).items():
            if "example" in content or "examples" in content:
                continue
            if media_type == FHIR_JSON:
                body = outcome_example(status, needed)
            elif media_type in (PROBLEM_JSON, "application/json"):
                body = problem_example(status, _INSTANCES[status], needed)
            else:
                continue
            name = _example_name(fhir, status, needed)
            summary = f"{status} {HTTPStatus(status).phrase}"
            document["components"].setdefault("examples", {})[name] = {
                "summary": summary,
                "value": body,
            }
            content["examples"] = {
                f"{status}": {"$ref": f"#/components/examples/{name}"},
            }


def _example_name(fhir: bool, status: int, needed: list[str] | None) -> str:
    name = f"{'Outcome' if fhir else 'Problem'}{status}"
    if status == 403:
        scope = needed[0].removeprefix("system/") if needed else "Bundle"
        name += "_" + re.sub(r"[^A-Za-z0-9]", "_", scope)
    return name


def _default_error(fhir: bool) -> dict[str, Any]:
    if fhir:
        return {
            "description": "An unexpected error",
            "content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}},
        }
    return {
        "description": "An unexpected error",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
