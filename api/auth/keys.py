"""The key the service signs its access tokens with, and its public JWKS.

The key comes from ``IPT_TOKEN_SIGNING_KEY_FILE`` when set. Otherwise one EC P-256 key is
generated once and kept in the database, so that every process signs with the same key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask, current_app
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy.exc import IntegrityError

from api.app_state import once_per_app
from api.config import ConfigError, Settings
from service.db import Database
from service.models import SigningKey, utcnow

# The one generated key's row: a fixed primary key makes two processes that race to
# create it agree on the first one stored.
GENERATED_ROW = "generated-es256"
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
_EXTENSION = "ipt_token_key"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class TokenKey:
    """A signing key: the private key, its algorithm, its kid and its public JWK."""

    private_key: PrivateKey
    algorithm: str
    kid: str
    public_jwk: dict[str, str]

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        return self.private_key.public_key()


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _token_key(private_key: Any, source: str) -> TokenKey:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigError(f"{source}: an EC signing key must be on curve P-256")
        algorithm = "ES256"
        jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    elif isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise ConfigError(f"{source}: an RSA signing key needs at least 2048 bits")
        algorithm = "RS256"
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    else:
        raise ConfigError(f"{source}: the signing key must be RSA or EC P-256")
    public = {name: str(value) for name, value in jwk.items() if name != "key_ops"}
    kid = thumbprint(public)
    public.update(kid=kid, use="sig", alg=algorithm)
    return TokenKey(private_key, algorithm, kid, public)


def _from_pem(pem: bytes, source: str) -> TokenKey:
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        # The error text never quotes the key.
        raise ConfigError(
            f"{source}: not an unencrypted PEM private key ({type(error).__name__})"
        ) from None
    return _token_key(private_key, source)


def _pem(private_key: PrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _stored(database: Database) -> str | None:
    with database.reading() as session:
        row = session.get(SigningKey, GENERATED_ROW)
        return row.private_pem if row is not None else None


def _generated(database: Database) -> TokenKey:
    source = "the signing key stored in the database"
    pem = _stored(database)
    if pem is None:
        candidate = _pem(ec.generate_private_key(ec.SECP256R1()))
        try:
            with database.writing() as session:
                session.add(
                    SigningKey(kid=GENERATED_ROW, private_pem=candidate, created_at=utcnow())
                )
                session.flush()
        except IntegrityError:
            pass  # another process stored its key first: use that one
        pem = _stored(database)
        if pem is None:
            raise RuntimeError("the generated signing key could not be stored")
    return _from_pem(pem.encode(), source)


def load(settings: Settings, database: Database) -> TokenKey:
    """The signing key for these settings (no caching: see :func:`current_key`)."""
    if settings.token_signing_key_file:
        path = Path(settings.token_signing_key_file)
        try:
            pem = path.read_bytes()
        except OSError as error:
            raise ConfigError(
                f"IPT_TOKEN_SIGNING_KEY_FILE: cannot read {str(path)!r}: {error.strerror}"
            ) from None
        return _from_pem(pem, "IPT_TOKEN_SIGNING_KEY_FILE")
    return _generated(database)


def key_for(app: Flask) -> TokenKey:
    """The app's signing key, loaded once per app."""
    return once_per_app(
        app,
        _EXTENSION,
        lambda: load(app.extensions["ipt_settings"], app.extensions["ipt_database"]),
    )


def current_key() -> TokenKey:
    """The current app's signing key."""
    return key_for(current_app._get_current_object())  # type: ignore[attr-defined]


def public_jwks() -> dict[str, Any]:
    """The public keys tokens are signed with, as a JWKS (``/.well-known/jwks.json``)."""
    return {"keys": [dict(current_key().public_jwk)]}
