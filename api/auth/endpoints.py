"""The OAuth 2.0 token endpoint (client credentials) and the discovery documents.

``POST /auth/token`` (RFC 6749 §4.4) authenticates a client with HTTP Basic
(``client_secret_basic``) or with a signed assertion (``private_key_jwt``, SMART Backend
Services, RFC 7523) and answers an access token for the requested scopes the client's
registration covers. Secrets, assertions and tokens never reach the logs.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import jwt
from flask import Blueprint, Flask, Response, current_app, json, request

from api.auth import keys, tokens
from api.auth.access import OWNED_TYPES, PLAN_TYPES
from api.auth.throttle import Limited, source_address, throttle_for
from api.auth.tokens import AuthError
from api.config import Settings
from service import clients, scopes
from service.db import Database
from service.errors import Conflict, RuleViolation
from service.models import ApiClient
from service.rate_counters import CounterStoreError

blp = Blueprint("auth", __name__)
log = logging.getLogger("ipt_careplans.auth")

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384", "RS256", "ES256")
MAX_ASSERTION_SECONDS = 300
MAX_ASSERTION_LENGTH = 16 * 1024
MAX_SCOPE_LENGTH = 4096
BASIC_CHALLENGE = 'Basic realm="ipt-careplans"'
# Every type a scope can name, from the access tables: the plan's types, the types only a
# scope naming them reaches (AuditEvent: a wildcard never grants it, so it is listed on its
# own), the clinic's aggregate report (MeasureReport) and the clients' own subscriptions.
SCOPES_SUPPORTED = [
    "system/*.cruds",
    # Read and search of every type: what a bulk data client ($export) needs.
    "system/*.rs",
    *(f"system/{t}.rs" for t in (*PLAN_TYPES, *scopes.NAMED_ONLY, "MeasureReport")),
    *(f"system/{t}.cruds" for t in OWNED_TYPES),
    "user/*.rs",
    "user/*.cruds",
    "patient/*.rs",
    "patient/*.cruds",
]


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, error: str, description: str, *, basic: bool = False) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        # A client that authenticated with HTTP Basic is told so with 401 (RFC 6749 §5.2).
        self.status = 401 if basic else 400


def _no_store(body: dict[str, Any], status: int = 200) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ipt_settings"]
    return settings


def _database() -> Database:
    database: Database = current_app.extensions["ipt_database"]
    return database


def _form() -> dict[str, str]:
    """The form's parameters; each may be given once only (RFC 6749 §3.2)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request", "send the parameters as application/x-www-form-urlencoded"
        )
    params: dict[str, str] = {}
    for name, values in request.form.lists():
        if len(values) > 1:
            raise OAuthError("invalid_request", f"the parameter {name} is given more than once")
        params[name] = values[0]
    return params


def _basic_credentials() -> tuple[str, str] | None:
    """The client id and secret of an ``Authorization: Basic`` header (RFC 6749 §2.3.1)."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    kind, _, encoded = header.strip().partition(" ")
    if kind.lower() != "basic":
        raise OAuthError(
            "invalid_client", "authenticate the client with HTTP Basic or an assertion", basic=True
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client", "the Basic credentials are malformed", basic=True
        ) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "the Basic credentials are malformed", basic=True)
    return unquote_plus(client_id), unquote_plus(secret)


def _by_secret(client_id: str, secret: str, form: dict[str, str]) -> ApiClient:
    if "client_id" in form and form["client_id"] != client_id:
        raise OAuthError("invalid_request", "client_id differs from the authenticated client")
    client = clients.find_by_id(_database(), client_id)
    # check_secret does the same work for an unknown client, so timing reveals nothing.
    if not clients.check_secret(client, secret) or client is None or client.revoked_at:
        raise OAuthError("invalid_client", "client authentication failed", basic=True)
    return client


def _by_assertion(form: dict[str, str]) -> ApiClient:
    """A client authenticated by a signed JWT (RFC 7523 §2.2, SMART Backend Services)."""
    if form.get("client_assertion_type") != JWT_BEARER:
        raise OAuthError("invalid_client", f"client_assertion_type must be {JWT_BEARER}")
    assertion = form.get("client_assertion", "")
    if not assertion or len(assertion) > MAX_ASSERTION_LENGTH:
        raise OAuthError("invalid_request", "client_assertion is missing or too long")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OAuthError("invalid_client", "the client assertion is malformed") from None
    algorithm = header.get("alg")
    if algorithm not in ASSERTION_ALGORITHMS:
        raise OAuthError(
            "invalid_client",
            f"the client assertion must be signed with one of {', '.join(ASSERTION_ALGORITHMS)}",
        )
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or unverified.get("sub") != client_id:
        raise OAuthError("invalid_client", "the assertion's iss and sub must be the client id")
    if "client_id" in form and form["client_id"] != client_id:
        raise OAuthError("invalid_request", "client_id differs from the assertion's issuer")
    client = clients.find_by_id(_database(), client_id)
    if client is None or client.revoked_at is not None or client.jwks is None:
        raise OAuthError("invalid_client", "client authentication failed")
    settings = _settings()
    try:
        key = tokens.bind_key(tokens.select_jwk(client.jwks, header.get("kid")), str(algorithm))
        claims = jwt.decode(
            assertion,
            key.key,
            algorithms=[str(algorithm)],
            audience=settings.token_endpoint,
            issuer=client.id,
            leeway=tokens.LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except AuthError as error:
        raise OAuthError("invalid_client", f"client assertion refused: {error.reason}") from None
    except jwt.InvalidAudienceError:
        raise OAuthError(
            "invalid_client", f"the client assertion's aud must be {settings.token_endpoint}"
        ) from None
    except jwt.ExpiredSignatureError:
        raise OAuthError("invalid_client", "the client assertion has expired") from None
    except jwt.PyJWTError:
        raise OAuthError(
            "invalid_client", "the client assertion's signature or claims are not valid"
        ) from None
    expires = claims["exp"]
    ahead = MAX_ASSERTION_SECONDS + tokens.LEEWAY_SECONDS
    if not isinstance(expires, int | float) or expires > time.time() + ahead:
        raise OAuthError(
            "invalid_client", "the client assertion's exp must be at most 5 minutes ahead"
        )
    jti = claims["jti"]
    if not isinstance(jti, str):
        raise OAuthError("invalid_client", "the client assertion's jti must be a string")
    try:
        # Remembered for as long as the assertion could still be accepted, leeway included.
        until = datetime.fromtimestamp(expires + tokens.LEEWAY_SECONDS, UTC)
        clients.claim_assertion(_database(), client.id, jti, until)
    except Conflict:
        raise OAuthError("invalid_client", "this client assertion was already used") from None
    except RuleViolation as error:
        raise OAuthError("invalid_client", error.message) from None
    return client


def _authenticate(form: dict[str, str]) -> ApiClient:
    basic = _basic_credentials()
    if basic is not None and ("client_assertion" in form or "client_assertion_type" in form):
        raise OAuthError("invalid_request", "use one client authentication method, not two")
    if basic is not None:
        return _by_secret(*basic, form)
    if "client_assertion" in form or "client_assertion_type" in form:
        return _by_assertion(form)
    if "client_secret" in form:
        raise OAuthError(
            "invalid_client", "send the client secret with HTTP Basic, not in the form", basic=True
        )
    raise OAuthError("invalid_client", "the client is not authenticated", basic=True)


def _claimed_client(form: dict[str, str]) -> str | None:
    """The client id a request claims to be, before it is authenticated (or None)."""
    try:
        basic = _basic_credentials()
    except OAuthError:
        return None
    if basic is not None:
        return basic[0]
    assertion = form.get("client_assertion", "")
    if assertion and len(assertion) <= MAX_ASSERTION_LENGTH:
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            issuer = None
        if isinstance(issuer, str) and issuer:
            return issuer
    return form.get("client_id") or None


def _token(address: str) -> Response:
    form = _form()
    claimed = _claimed_client(form)
    throttle = throttle_for(current_app._get_current_object())  # type: ignore[attr-defined]
    if claimed is not None:
        # Refused before its credentials are checked: a guess that would be right is refused too.
        throttle.check_client(claimed, address)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only the client_credentials grant is supported")
    requested = form.get("scope", "")
    if not requested.strip():
        raise OAuthError("invalid_request", "scope is required: name the scopes the token needs")
    if len(requested) > MAX_SCOPE_LENGTH:
        raise OAuthError("invalid_request", "scope is too long")
    try:
        client = _authenticate(form)
    except OAuthError as error:
        if error.error == "invalid_client" and claimed is not None:
            throttle.failed(claimed, address)
        raise
    granted = scopes.grant(requested.split(), clients.registered_scopes(client))
    if not granted:
        raise OAuthError("invalid_scope", "none of the requested scopes is granted to this client")
    token, expires_in = tokens.issue(client, granted, _settings())
    log.info("token issued", extra={"client_id": client.id, "scope": " ".join(granted)})
    return _no_store(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": " ".join(granted),
        }
    )


@blp.post("/auth/token")
def token() -> Response:
    """Exchange client credentials for an access token (RFC 6749 §4.4).

    Rate-limited per source address and per client id (429 with ``Retry-After``).
    """
    address = source_address()
    try:
        throttle_for(current_app._get_current_object()).attempt(address)  # type: ignore[attr-defined]
        return _token(address)
    except Limited as limited:
        log.warning("token request rate-limited", extra={"reason": limited.description})
        response = _no_store(
            {"error": "too_many_requests", "error_description": limited.description}, 429
        )
        response.headers["Retry-After"] = str(limited.retry_after)
        return response
    except CounterStoreError as error:
        # Without its counters the endpoint cannot limit guessing: it refuses, briefly.
        log.error("rate-limit storage unreachable", extra={"reason": str(error)})
        response = _no_store(
            {
                "error": "temporarily_unavailable",
                "error_description": "the token endpoint is unavailable: try again shortly",
            },
            503,
        )
        response.headers["Retry-After"] = "5"
        return response
    except OAuthError as error:
        log.info("token refused", extra={"error": error.error, "reason": error.description})
        response = _no_store(
            {"error": error.error, "error_description": error.description}, error.status
        )
        if error.status == 401:
            response.headers["WWW-Authenticate"] = BASIC_CHALLENGE
        return response


@blp.get("/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """SMART on FHIR discovery: how to get a token, with which scopes."""
    settings = _settings()
    body = {
        "token_endpoint": settings.token_endpoint,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": [
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "permission-v2",
            "permission-v1",
        ],
        "jwks_uri": f"{settings.public_base_url}/.well-known/jwks.json",
    }
    return Response(json.dumps(body), mimetype="application/json")


@blp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """The public keys the service's access tokens are signed with."""
    return Response(json.dumps(keys.public_jwks()), mimetype="application/json")


def register(app: Flask) -> None:
    """Add the token endpoint and discovery documents. The signing keys are read now (those
    in the database once the schema is current), so that an unusable key file or a wrong
    key-encryption key stops the service at start."""
    app.register_blueprint(blp)
    settings: Settings = app.extensions["ipt_settings"]
    database: Database = app.extensions["ipt_database"]
    if settings.token_signing_key_file:
        keys.key_for(app)
        return
    if not settings.key_encryption_key_file:
        log.warning(
            "the token signing key is kept in the database unencrypted: set "
            "IPT_KEY_ENCRYPTION_KEY_FILE (or IPT_TOKEN_SIGNING_KEY_FILE) in production"
        )
    if database.schema_is_current():
        keys.key_for(app)
