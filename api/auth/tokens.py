"""Access tokens: issuing the service's own, and verifying its own and an external issuer's.

The service's tokens are JWTs signed with its key (see :mod:`api.auth.keys`): ``iss`` is
``IPT_PUBLIC_BASE_URL``, ``aud`` its ``/fhir``, and they stop working when their client is
revoked. Tokens of an external identity provider (``IPT_EXTERNAL_*``) are verified with its
published keys; the verifier is chosen by the token's ``iss``.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from flask import Flask, current_app

from api.app_state import once_per_app
from api.auth import keys
from api.auth.principal import Principal
from api.config import Settings
from api.http import read_connection
from service import clients
from service.models import ApiClient

LEEWAY_SECONDS = 30
MAX_TOKEN_LENGTH = 16 * 1024
# Asymmetric algorithms only: a shared-secret (HS*) or unsigned token is never accepted.
EXTERNAL_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_OWN_REQUIRED = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"]
_EXTENSION = "ipt_external_verifier"
_CACHE_EXTENSION = "ipt_verified_tokens"
# Verified tokens kept per process: a client holds one token for its lifetime, so a few
# thousand cover every active client of a worker.
VERIFIED_CACHE_SIZE = 4096


class AuthError(Exception):
    """A token that does not authenticate its bearer; ``reason`` says why (no token content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def issue(
    client: ApiClient,
    scopes: list[str],
    settings: Settings,
    *,
    key: keys.TokenKey | None = None,
) -> tuple[str, int]:
    """A signed access token for ``client`` with ``scopes``, and its lifetime in seconds.

    ``key`` defaults to the current app's signing key.
    """
    key = key or keys.current_key()
    now = int(time.time())
    lifetime = settings.token_lifetime_seconds
    claims: dict[str, Any] = {
        "iss": settings.public_base_url,
        "sub": client.id,
        "client_id": client.id,
        "aud": settings.token_audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(16),
        "scope": " ".join(scopes),
    }
    if client.patient:
        claims["patient"] = client.patient
    token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
    return token, lifetime


def _patient(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuthError("the token's patient claim is not a string")
    try:
        return clients.normalise_patient(value)
    except ValueError:
        raise AuthError("the token's patient claim is not a patient id") from None


def _decode(token: str, key: Any, algorithms: list[str], **checks: Any) -> dict[str, Any]:
    """Verify signature and claims, turning PyJWT's errors into reasons."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=algorithms, leeway=LEEWAY_SECONDS, **checks
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("the token is not valid yet") from None
    except jwt.InvalidIssuerError:
        raise AuthError("the token has the wrong issuer") from None
    except jwt.InvalidAudienceError:
        raise AuthError("the token is not meant for this service (wrong audience)") from None
    except jwt.InvalidSignatureError:
        raise AuthError("the token's signature is not valid") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthError(f"the token lacks the {error.claim} claim") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("the token is signed with an algorithm not accepted here") from None
    except (jwt.InvalidKeyError, jwt.PyJWKError):
        raise AuthError("the token's signature is not valid") from None
    except jwt.DecodeError:
        raise AuthError("the token is malformed") from None
    except jwt.InvalidTokenError:
        raise AuthError("the token is not valid") from None
    return claims


@dataclass(frozen=True)
class _Verified:
    """A token whose signature and claims were checked, and when it stops being valid."""

    principal: Principal
    expires: float


class VerifiedTokens:
    """The service's own tokens already verified, by their exact string, until they expire.

    Checking a signature costs far more than answering a read, and a client sends the same
    token with every request. An entry is used only before the token's ``exp``; after that
    the token is verified from scratch (and refused once past the leeway). The client's
    revocation is not cached: it is looked up on every request.
    """

    def __init__(self, size: int = VERIFIED_CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[str, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str, now: float) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if now >= entry.expires:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry.principal

    def put(self, token: str, principal: Principal, expires: float) -> None:
        with self._lock:
            self._entries[token] = _Verified(principal, expires)
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _verified_tokens(app: Flask) -> VerifiedTokens:
    return once_per_app(app, _CACHE_EXTENSION, VerifiedTokens)


def _require_active_client(client_id: str) -> None:
    if not clients.is_active(read_connection(), client_id):
        raise AuthError("the token's client is unknown or revoked")


def _verify_own(token: str, header: dict[str, Any], app: Flask) -> Principal:
    settings: Settings = app.extensions["ipt_settings"]
    # The signing key or a retired one whose tokens may still be valid (see api.auth.keys).
    key = keys.verification_key(app, header.get("kid"))
    if key is None:
        raise AuthError("the token's signature is not valid (unknown signing key)")
    claims = _decode(
        token,
        key.public_key,
        [key.algorithm],
        audience=settings.token_audience,
        issuer=settings.public_base_url,
        options={"require": _OWN_REQUIRED},
    )
    client_id = claims["client_id"]
    if not isinstance(client_id, str) or claims["sub"] != client_id:
        raise AuthError("the token names no valid client")
    _require_active_client(client_id)
    scope = claims.get("scope")
    principal = Principal(
        client_id=client_id,
        scopes=frozenset(scope.split() if isinstance(scope, str) else ()),
        user=None,
        patient=_patient(claims.get("patient")),
        issuer="self",
    )
    expires = claims["exp"]
    if isinstance(expires, int | float) and expires > time.time():
        _verified_tokens(app).put(token, principal, float(expires))
    return principal


def bind_key(jwk: dict[str, Any], algorithm: str) -> jwt.PyJWK:
    """A public JWK bound to the algorithm a token's header names.

    Refused (AuthError) when the JWK is not a signing key, declares another algorithm, or
    its type does not fit the algorithm.
    """
    declared = jwk.get("alg")
    if (declared is not None and declared != algorithm) or jwk.get("use", "sig") != "sig":
        raise AuthError("the token's signing key does not allow its algorithm")
    if jwk.get("kty") not in ("RSA", "EC", "OKP"):
        raise AuthError("the token's signing key is not a public key")
    try:
        return jwt.PyJWK(jwk, algorithm=algorithm)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        raise AuthError("the token's signing key does not allow its algorithm") from None


def select_jwk(jwks: Any, kid: Any) -> dict[str, Any]:
    """The key of a JWKS with this ``kid``; with no kid, the set's only key."""
    candidates = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(candidates, list):
        raise AuthError("the issuer's keys cannot be read")
    usable = [key for key in candidates if isinstance(key, dict)]
    if kid is None and len(usable) == 1:
        return usable[0]
    for key in usable:
        if kid is not None and key.get("kid") == kid:
            return key
    raise AuthError("the token's signing key is not one of its issuer's keys")


@dataclass
class _JwksFile:
    """A JWKS file, read again when its modification time or size changes."""

    path: Path
    stamp: tuple[int, int] | None = None
    jwks: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self, kid: Any) -> dict[str, Any]:
        with self.lock:
            try:
                stat = os.stat(self.path)
                stamp = (stat.st_mtime_ns, stat.st_size)
                if stamp != self.stamp:
                    self.jwks = json.loads(self.path.read_text(encoding="utf-8"))
                    self.stamp = stamp
            except (OSError, ValueError):
                raise AuthError("the external issuer's keys cannot be read") from None
            return select_jwk(self.jwks, kid)


@dataclass
class _External:
    """The external identity provider's verifier, with its cached keys."""

    settings: Settings
    url_client: jwt.PyJWKClient | None = None
    file: _JwksFile | None = None

    @classmethod
    def build(cls, settings: Settings) -> _External:
        verifier = cls(settings)
        if settings.external_jwks_url:
            verifier.url_client = jwt.PyJWKClient(
                settings.external_jwks_url, cache_keys=True, lifespan=300, timeout=5
            )
        elif settings.external_jwks_file:
            verifier.file = _JwksFile(Path(settings.external_jwks_file))
        return verifier

    def jwk(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        if self.url_client is not None:
            try:
                found = self.url_client.get_signing_key_from_jwt(token)
            except jwt.PyJWKClientConnectionError:
                raise AuthError("the external issuer's keys cannot be fetched") from None
            except (jwt.PyJWKClientError, jwt.PyJWKError, jwt.DecodeError):
                raise AuthError("the token's signing key is not one of its issuer's keys") from None
            # PyJWK keeps the JWK as published; it is re-bound to the token's algorithm.
            return dict(found._jwk_data)
        if self.file is not None:
            return self.file.key(header.get("kid"))
        raise AuthError("no keys are configured for the external issuer")

    def verify(self, token: str, header: dict[str, Any]) -> Principal:
        settings = self.settings
        algorithm = header.get("alg")
        if algorithm not in EXTERNAL_ALGORITHMS:
            raise AuthError("the token is signed with an algorithm not accepted here")
        key = bind_key(self.jwk(token, header), str(algorithm))
        claims = _decode(
            token,
            key.key,
            [str(algorithm)],
            audience=settings.external_audience,
            issuer=settings.external_issuer,
            options={"require": ["iss", "aud", "exp"]},
        )
        client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub")
        if not isinstance(client_id, str) or not client_id:
            raise AuthError("the token names no client (client_id, azp or sub)")
        user = claims.get("fhirUser") or claims.get("sub")
        return Principal(
            client_id=client_id,
            scopes=frozenset(_scopes(claims.get(settings.external_scope_claim))),
            user=user if isinstance(user, str) and user else None,
            patient=_patient(claims.get(settings.external_patient_claim)),
            issuer=str(settings.external_issuer),
        )


def _scopes(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []


def _external_for(app: Flask) -> _External:
    return once_per_app(app, _EXTENSION, lambda: _External.build(app.extensions["ipt_settings"]))


def verify(token: str) -> Principal:
    """The principal a bearer token authenticates; AuthError with the reason otherwise.

    Checks the signature, issuer, audience, expiry and start of validity, and for the
    service's own tokens that their client still exists and is not revoked.
    """
    if not token or not isinstance(token, str):
        raise AuthError("no access token was given")
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise AuthError("the token is malformed")
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    known = _verified_tokens(app).get(token, time.time())
    if known is not None:
        _require_active_client(known.client_id)
        return known
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthError("the token is malformed") from None
    settings: Settings = app.extensions["ipt_settings"]
    issuer = unverified.get("iss")
    if issuer == settings.public_base_url:
        return _verify_own(token, header, app)
    if settings.external_issuer is not None and issuer == settings.external_issuer:
        return _external_for(app).verify(token, header)
    raise AuthError("the token has the wrong issuer")
