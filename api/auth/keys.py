"""The keys the service signs its access tokens with, and its public JWKS.

The key comes from ``IPT_TOKEN_SIGNING_KEY_FILE`` when set. Otherwise EC P-256 keys are
kept in the database, so that every process signs with the same key: encrypted with
AES-256-GCM under the key-encryption key of ``IPT_KEY_ENCRYPTION_KEY_FILE`` (the row's id
is the associated data, so a ciphertext moved to another row does not decrypt), or in the
clear, with a warning at every start, when none is configured. Plain keys written before
encryption existed are encrypted when the service starts with a key-encryption key.

``ipt-careplans keys rotate`` retires the signing key and stores a new one. A retired key
signs nothing more; its public key stays in the JWKS, and tokens it signed are accepted,
until every such token has expired; then it is dropped. Each process reads the keys again
every ``KEY_REFRESH_SECONDS``, and at once (at most once a second) for an unknown ``kid``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask, current_app
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from api.config import ConfigError, Settings, key_encryption_key
from service.db import Database
from service.models import SigningKey, utcnow

log = logging.getLogger("ipt_careplans.auth")

# The first generated key's row: a fixed primary key makes two processes that race to
# create it agree on the first one stored. Rotated keys' rows are named by their kid.
GENERATED_ROW = "generated-es256"
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
_EXTENSION = "ipt_token_keys"
_LOCK = threading.Lock()
KEK_VARIABLE = "IPT_KEY_ENCRYPTION_KEY_FILE"
_ENCRYPTED = "aes256gcm:"
KEY_REFRESH_SECONDS = 30
# A retired key stays published for the token lifetime and this margin: a process may sign
# with it until its next refresh, and verifiers allow 30 seconds of clock leeway.
RETENTION_MARGIN_SECONDS = KEY_REFRESH_SECONDS + 30
_UNKNOWN_KID_RELOAD_SECONDS = 1.0

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


def retention_seconds(settings: Settings) -> int:
    """How long a retired key stays published: until every token it signed has expired."""
    return settings.token_lifetime_seconds + RETENTION_MARGIN_SECONDS


@dataclass(frozen=True)
class KeyRing:
    """The signing key, and the retired keys whose tokens may still be valid."""

    signing: TokenKey
    retired: tuple[tuple[TokenKey, float], ...]  # each with when it is dropped (epoch)
    loaded: float
    from_file: bool

    def published(self, now: float) -> list[TokenKey]:
        """The keys tokens are verified with now: the signing key first."""
        return [self.signing, *(key for key, until in self.retired if now < until)]

    def find(self, kid: Any, now: float) -> TokenKey | None:
        """The published key with this kid, if any."""
        return next((key for key in self.published(now) if key.kid == kid), None)


def _cipher(settings: Settings) -> AESGCM | None:
    if not settings.key_encryption_key_file:
        return None
    return AESGCM(key_encryption_key(KEK_VARIABLE, settings.key_encryption_key_file))


def _encrypt(cipher: AESGCM, row: str, pem: str) -> str:
    nonce = os.urandom(12)
    sealed = cipher.encrypt(nonce, pem.encode(), row.encode())
    return _ENCRYPTED + base64.urlsafe_b64encode(nonce + sealed).decode()


def _decrypt(cipher: AESGCM | None, row: str, stored: str) -> bytes:
    if cipher is None:
        raise ConfigError(
            f"{KEK_VARIABLE} is not set, but the signing keys in the database are encrypted: "
            "set it to the key-encryption key they were encrypted with"
        )
    try:
        if not stored.startswith(_ENCRYPTED):
            raise ValueError("unknown format")
        raw = base64.urlsafe_b64decode(stored[len(_ENCRYPTED) :])
        return cipher.decrypt(raw[:12], raw[12:], row.encode())
    except (InvalidTag, ValueError, binascii.Error):
        raise ConfigError(
            f"{KEK_VARIABLE}: this key cannot decrypt the signing keys stored in the database "
            "(is it the key-encryption key they were encrypted with?)"
        ) from None


@dataclass(frozen=True)
class _Row:
    kid: str
    private_pem: str | None
    encrypted_key: str | None
    created_at: datetime
    retired_at: datetime | None


def _rows(database: Database) -> list[_Row]:
    with database.reading() as session:
        found = session.execute(
            select(
                SigningKey.kid,
                SigningKey.private_pem,
                SigningKey.encrypted_key,
                SigningKey.created_at,
                SigningKey.retired_at,
            ).order_by(SigningKey.created_at, SigningKey.kid)
        ).all()
    return [_Row(*row) for row in found]


def _new_row(row: str | None, cipher: AESGCM | None) -> tuple[SigningKey, TokenKey]:
    private_key = ec.generate_private_key(ec.SECP256R1())
    key = _token_key(private_key, "a generated signing key")
    name = row or key.kid
    pem = _pem(private_key)
    stored = SigningKey(kid=name, created_at=utcnow())
    if cipher is not None:
        stored.encrypted_key = _encrypt(cipher, name, pem)
    else:
        stored.private_pem = pem
    return stored, key


def _create_first(database: Database, cipher: AESGCM | None) -> None:
    row, _ = _new_row(GENERATED_ROW, cipher)
    try:
        with database.writing() as session:
            session.add(row)
            session.flush()
    except IntegrityError:
        pass  # another process stored its key first: that one is used


def _private(row: _Row, cipher: AESGCM | None) -> TokenKey:
    source = "the signing key stored in the database"
    if row.encrypted_key is not None:
        return _from_pem(_decrypt(cipher, row.kid, row.encrypted_key), source)
    if row.private_pem is None:
        raise ConfigError(f"{source} ({row.kid}) is empty")
    return _from_pem(row.private_pem.encode(), source)


def _encrypt_plain(database: Database, rows: list[_Row], cipher: AESGCM) -> None:
    """Encrypt the keys stored in the clear (written without a key-encryption key)."""
    for row in rows:
        if row.encrypted_key is None and row.private_pem is not None:
            with database.writing() as session:
                session.execute(
                    update(SigningKey)
                    .where(SigningKey.kid == row.kid, SigningKey.encrypted_key.is_(None))
                    .values(
                        encrypted_key=_encrypt(cipher, row.kid, row.private_pem), private_pem=None
                    )
                )
            log.info("a signing key stored in the clear is now encrypted", extra={"kid": row.kid})


def _database_ring(settings: Settings, database: Database, *, write: bool = True) -> KeyRing:
    cipher = _cipher(settings)
    rows = _rows(database)
    if write and not any(row.retired_at is None for row in rows):
        _create_first(database, cipher)
        rows = _rows(database)
    if write and cipher is not None:
        _encrypt_plain(database, rows, cipher)
    now = time.time()
    keep = retention_seconds(settings)
    current = [row for row in rows if row.retired_at is None]
    retired = [
        row
        for row in rows
        if row.retired_at is not None and row.retired_at.timestamp() + keep > now
    ]
    # Every stored key is decrypted, so that a wrong key-encryption key is noticed at once.
    for row in rows:
        if row not in current and row not in retired:
            _private(row, cipher)
    if not current:
        raise ConfigError("no signing key is stored in the database")
    return KeyRing(
        signing=_private(current[-1], cipher),
        retired=tuple(
            (_private(row, cipher), row.retired_at.timestamp() + keep)
            for row in reversed(retired)
            if row.retired_at is not None
        ),
        loaded=now,
        from_file=False,
    )


def load_ring(settings: Settings, database: Database, *, write: bool = True) -> KeyRing:
    """The keys for these settings, read now. ``write=False`` neither creates a key nor
    encrypts plain ones (for ``check-config``)."""
    if settings.token_signing_key_file:
        path = Path(settings.token_signing_key_file)
        try:
            pem = path.read_bytes()
        except OSError as error:
            raise ConfigError(
                f"IPT_TOKEN_SIGNING_KEY_FILE: cannot read {str(path)!r}: {error.strerror}"
            ) from None
        key = _from_pem(pem, "IPT_TOKEN_SIGNING_KEY_FILE")
        return KeyRing(key, (), time.time(), from_file=True)
    return _database_ring(settings, database, write=write)


def load(settings: Settings, database: Database) -> TokenKey:
    """The signing key for these settings, read now (see :func:`key_for` for the cached one)."""
    return load_ring(settings, database).signing


def ring_for(app: Flask, *, unknown_kid: bool = False) -> KeyRing:
    """The app's keys, read again when they are older than KEY_REFRESH_SECONDS (or, for an
    unknown kid, older than a second)."""
    ring: KeyRing | None = app.extensions.get(_EXTENSION)
    now = time.time()
    stale_after = _UNKNOWN_KID_RELOAD_SECONDS if unknown_kid else KEY_REFRESH_SECONDS
    if ring is not None and (ring.from_file or now - ring.loaded < stale_after):
        return ring
    with _LOCK:
        ring = app.extensions.get(_EXTENSION)
        if ring is None or (not ring.from_file and time.time() - ring.loaded >= stale_after):
            try:
                ring = load_ring(app.extensions["ipt_settings"], app.extensions["ipt_database"])
            except (ConfigError, SQLAlchemyError) as error:
                if ring is None:
                    raise
                # A running process keeps the keys it has rather than failing every request;
                # it tries again at the next refresh.
                reason = str(error) if isinstance(error, ConfigError) else type(error).__name__
                log.error("the signing keys could not be read again", extra={"reason": reason})
                ring = replace(ring, loaded=time.time())
            app.extensions[_EXTENSION] = ring
    return ring


def key_for(app: Flask) -> TokenKey:
    """The key the app signs with now."""
    return ring_for(app).signing


def verification_key(app: Flask, kid: Any) -> TokenKey | None:
    """The published key with this kid, or None (after reading the keys again)."""
    key = ring_for(app).find(kid, time.time())
    if key is None:
        key = ring_for(app, unknown_kid=True).find(kid, time.time())
    return key


def current_key() -> TokenKey:
    """The current app's signing key."""
    return key_for(current_app._get_current_object())  # type: ignore[attr-defined]


def public_jwks() -> dict[str, Any]:
    """The public keys tokens are verified with, as a JWKS (``/.well-known/jwks.json``):
    the signing key, then the retired keys whose tokens may still be valid."""
    ring = ring_for(current_app._get_current_object())  # type: ignore[attr-defined]
    return {"keys": [dict(key.public_jwk) for key in ring.published(time.time())]}


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: the new key, the retired one(s), and the keys dropped."""

    signing: TokenKey
    retired: list[str]
    published_until: datetime
    dropped: list[str]


def rotate(settings: Settings, database: Database) -> Rotation:
    """Retire the signing key and store a new one; drop keys retired long enough ago."""
    if settings.token_signing_key_file:
        raise ConfigError(
            "IPT_TOKEN_SIGNING_KEY_FILE is set: the service signs with that file's key; "
            "rotate it by replacing the file"
        )
    before = load_ring(settings, database)  # also checks the key-encryption key
    row, key = _new_row(None, _cipher(settings))
    now = utcnow()
    cutoff = now - timedelta(seconds=retention_seconds(settings))
    with database.writing() as session:
        dropped = list(
            session.scalars(
                select(SigningKey.kid).where(
                    SigningKey.retired_at.is_not(None), SigningKey.retired_at < cutoff
                )
            )
        )
        session.execute(delete(SigningKey).where(SigningKey.kid.in_(dropped)))
        session.execute(
            update(SigningKey).where(SigningKey.retired_at.is_(None)).values(retired_at=now)
        )
        row.created_at = now
        session.add(row)
    return Rotation(
        signing=key,
        retired=[before.signing.kid],
        published_until=now + timedelta(seconds=retention_seconds(settings)),
        dropped=dropped,
    )
