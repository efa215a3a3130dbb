"""Machine clients of the API: registration, secrets, revocation and used client assertions.

A secret is shown once, when it is made; only a salted scrypt hash of it is stored. A
client using SMART Backend Services registers its public keys (a JWKS) instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Any

import jwt
from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from service.db import Database, fetch_first
from service.errors import Conflict, NotFound, RuleViolation
from service.models import ApiClient, UsedAssertion, new_id, utcnow

SECRET_BYTES = 32
# scrypt at n=2**14, r=8 takes 16 MiB and some tens of milliseconds per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LENGTH = 2**14, 8, 1, 32
_SCRYPT_MAX_N = 2**20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:\-]{0,254}$")
_SCOPE = re.compile(r"^[\x21-\x7e]{1,255}$")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PUBLIC_KEY_TYPES = ("RSA", "EC", "OKP")
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
# Compared against when a client is unknown, so that the answer takes as long either way.
_DUMMY_HASH = "scrypt${}${}${}${}${}".format(
    SCRYPT_N,
    SCRYPT_R,
    SCRYPT_P,
    base64.b64encode(b"\0" * 16).decode(),
    base64.b64encode(b"\0" * SCRYPT_LENGTH).decode(),
)


def normalise_patient(value: str) -> str:
    """A patient reference as ``Patient/<id>``, from ``<id>`` or ``Patient/<id>``.

    Raises ValueError when the value is neither.
    """
    text = value.strip()
    patient_id = text.removeprefix("Patient/")
    if not _FHIR_ID.match(patient_id):
        raise ValueError(f"a patient is 'Patient/<id>' or '<id>' (a FHIR id), not {value!r}")
    return f"Patient/{patient_id}"


def registered_scopes(client: ApiClient) -> list[str]:
    """The scopes a client may be granted, as registered."""
    return client.scopes.split()


def hash_secret(secret: str) -> str:
    """A salted scrypt hash: ``scrypt$n$r$p$salt_b64$hash_b64``."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        [
            "scrypt",
            str(SCRYPT_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_LENGTH, maxmem=256 * 1024 * 1024
    )


def check_secret(client: ApiClient | None, secret: str) -> bool:
    """Whether ``secret`` is the client's secret, compared in constant time.

    With no client (or one without a secret) the same work is done against a dummy hash
    and the answer is False, so timing does not tell which client ids exist.
    """
    stored = client.secret_hash if client is not None else None
    try:
        scheme, n, r, p, salt, expected = (stored or _DUMMY_HASH).split("$")
        cost = int(n), int(r), int(p)
        if scheme != "scrypt" or not 1 < cost[0] <= _SCRYPT_MAX_N:
            return False
        actual = _scrypt(secret, base64.b64decode(salt), *cost)
        matches = hmac.compare_digest(actual, base64.b64decode(expected))
    except (ValueError, TypeError):
        return False
    return matches and stored is not None


def _validate_jwks(jwks: Any) -> dict[str, Any]:
    """A JWKS of public signing keys only; private or symmetric key material is refused."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise RuleViolation.on("jwks", 'a JWKS is a JSON object {"keys": [...]} with a key')
    for index, key in enumerate(keys):
        where = f"jwks.keys.{index}"
        if not isinstance(key, dict) or key.get("kty") not in _PUBLIC_KEY_TYPES:
            raise RuleViolation.on(where, "each key needs kty RSA, EC or OKP")
        if any(member in key for member in _PRIVATE_MEMBERS):
            raise RuleViolation.on(where, "register public keys only: the key has private parts")
        if key.get("use", "sig") != "sig":
            raise RuleViolation.on(where, "keys are for signatures (use sig)")
        try:
            jwt.PyJWK(key)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            raise RuleViolation.on(where, "the key cannot be read as a JWK") from None
    return {"keys": keys}


def _validate(
    name: str, scopes: list[str], patient: str | None
) -> tuple[str, list[str], str | None]:
    if not _NAME.match(name):
        raise RuleViolation.on(
            "name", "a client name is 1-255 letters, digits and . _ @ : - (no spaces)"
        )
    if not scopes:
        raise RuleViolation.on("scopes", "a client needs at least one scope")
    for scope in scopes:
        if not _SCOPE.match(scope):
            raise RuleViolation.on("scopes", f"{scope!r} is not a scope")
    bound = None
    if patient is not None:
        try:
            bound = normalise_patient(patient)
        except ValueError as error:
            raise RuleViolation.on("patient", str(error)) from None
    elif any(scope.startswith("patient/") for scope in scopes):
        raise RuleViolation.on("patient", "patient/ scopes need the patient the client is for")
    return name, list(dict.fromkeys(scopes)), bound


def register(
    database: Database,
    name: str,
    scopes: list[str],
    patient: str | None = None,
    jwks: dict[str, Any] | None = None,
) -> tuple[ApiClient, str | None]:
    """Register a client; returns it and its secret, which is not kept and shown only now.

    A client with a JWKS authenticates with its keys and gets no secret. Names are unique
    (Conflict otherwise). Scopes are checked for form only here; callers check their grammar.
    """
    name, scopes, patient = _validate(name, scopes, patient)
    keys = _validate_jwks(jwks) if jwks is not None else None
    secret = None if keys is not None else secrets.token_urlsafe(SECRET_BYTES)
    client = ApiClient(
        id=new_id(),
        name=name,
        secret_hash=hash_secret(secret) if secret is not None else None,
        jwks=keys,
        scopes=" ".join(scopes),
        patient=patient,
        created_at=utcnow(),
    )
    try:
        with database.writing() as session:
            if session.scalar(select(ApiClient.id).where(ApiClient.name == name)) is not None:
                raise Conflict(f"a client named {name!r} already exists")
            session.add(client)
            session.flush()
    except IntegrityError:
        raise Conflict(f"a client named {name!r} already exists") from None
    return client, secret


def find_by_id(database: Database, client_id: str) -> ApiClient | None:
    """The client with this id (revoked or not), or None."""
    if not client_id or len(client_id) > 64:
        return None
    with database.reading() as session:
        return session.get(ApiClient, client_id)


_ACTIVE = select(ApiClient.__table__.c.id).where(
    ApiClient.__table__.c.id == bindparam("client_id"),
    ApiClient.__table__.c.revoked_at.is_(None),
)


def is_active(connection: Connection, client_id: str) -> bool:
    """Whether a client exists and is not revoked: asked on every authenticated request,
    so it reads one column with a prepared statement and builds no ORM object."""
    if not client_id or len(client_id) > 64:
        return False
    return fetch_first(connection, _ACTIVE, {"client_id": client_id}) is not None


def find_by_name(database: Database, name: str) -> ApiClient | None:
    """The client with this name (revoked or not), or None."""
    with database.reading() as session:
        return session.scalar(select(ApiClient).where(ApiClient.name == name))


def list_clients(database: Database) -> list[ApiClient]:
    """Every client, revoked ones included, by name."""
    with database.reading() as session:
        return list(session.scalars(select(ApiClient).order_by(ApiClient.name)))


def _named(session: Any, name: str) -> ApiClient:
    client: ApiClient | None = session.scalar(select(ApiClient).where(ApiClient.name == name))
    if client is None:
        raise NotFound(f"no client is named {name!r}")
    return client


def revoke(database: Database, name: str) -> ApiClient:
    """Revoke a client: it gets no more tokens and its tokens stop working. Idempotent."""
    with database.writing() as session:
        client = _named(session, name)
        if client.revoked_at is None:
            client.revoked_at = utcnow()
        session.flush()
        return client


def rotate_secret(database: Database, name: str) -> str:
    """Give a client a new secret (returned, shown only now); the old one stops working."""
    with database.writing() as session:
        client = _named(session, name)
        if client.revoked_at is not None:
            raise Conflict(f"client {name!r} is revoked")
        if client.jwks is not None:
            raise Conflict(f"client {name!r} authenticates with its keys, not a secret")
        secret = secrets.token_urlsafe(SECRET_BYTES)
        client.secret_hash = hash_secret(secret)
        return secret


def claim_assertion(database: Database, client_id: str, jti: str, expires_at: datetime) -> None:
    """Record a client assertion as used; Conflict when its jti was already used.

    Expired records go at the same time: an expired assertion is refused on its own.
    """
    if not jti or len(jti) > 255:
        raise RuleViolation.on("jti", "an assertion's jti is 1 to 255 characters")
    try:
        with database.writing() as session:
            session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < utcnow()))
            session.add(UsedAssertion(client_id=client_id, jti=jti, expires_at=expires_at))
            session.flush()
    except IntegrityError:
        raise Conflict("this client assertion was already used") from None
