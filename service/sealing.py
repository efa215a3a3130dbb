"""Secrets a client gives the service to send on (a subscription's channel headers), sealed
at rest.

Sealed with AES-256-GCM under the key-encryption key of ``IPT_KEY_ENCRYPTION_KEY_FILE``,
the one that protects the token signing keys, with the owning row's id as associated data
(a sealed value copied to another row does not open). Without a key-encryption key the
value is stored base64-encoded only, as the signing keys then are: the service warns at
every start that secrets are kept in the clear.

The process's key is set once at start (:func:`use_key`, from the settings); a process
that never sets it reads ``IPT_KEY_ENCRYPTION_KEY_FILE`` from its environment.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEK_VARIABLE = "IPT_KEY_ENCRYPTION_KEY_FILE"
_ENCRYPTED = "aes256gcm:"
_PLAIN = "plain:"
_UNSET = object()
_lock = threading.Lock()
_key: bytes | object | None = _UNSET


class SealError(ValueError):
    """A sealed value that cannot be opened with the key at hand (the message names no
    secret)."""


def use_key(key: bytes | None) -> None:
    """The key-encryption key this process seals and opens with (None: none configured)."""
    global _key
    with _lock:
        _key = key


def process_key() -> bytes | None:
    """The key set by :func:`use_key`, else the one ``IPT_KEY_ENCRYPTION_KEY_FILE`` names."""
    global _key
    with _lock:
        if _key is _UNSET:
            path = os.environ.get(KEK_VARIABLE, "").strip()
            _key = _read_key(path) if path else None
        return _key if isinstance(_key, bytes) else None


def _read_key(path: str) -> bytes:
    compact = "".join(Path(path).read_text(encoding="ascii").split())
    try:
        key = base64.b64decode(compact.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise SealError(f"{KEK_VARIABLE}: the file must hold 32 random bytes, base64-encoded")
    return key


def seal(text: str, row: str, key: bytes | None) -> str:
    """``text`` sealed for the row ``row``."""
    if key is None:
        return _PLAIN + base64.urlsafe_b64encode(text.encode()).decode()
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, text.encode(), row.encode())
    return _ENCRYPTED + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(stored: str, row: str, key: bytes | None) -> str:
    """The text :func:`seal` sealed for ``row``."""
    try:
        if stored.startswith(_PLAIN):
            return base64.urlsafe_b64decode(stored[len(_PLAIN) :]).decode()
        if not stored.startswith(_ENCRYPTED):
            raise ValueError("unknown format")
        if key is None:
            raise SealError(
                f"{KEK_VARIABLE} is not set, but the value was sealed with a key-encryption key"
            )
        raw = base64.urlsafe_b64decode(stored[len(_ENCRYPTED) :])
        return AESGCM(key).decrypt(raw[:12], raw[12:], row.encode()).decode()
    except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError) as error:
        if isinstance(error, SealError):
            raise
        raise SealError(
            f"{KEK_VARIABLE}: this key cannot open the sealed value (is it the key-encryption "
            "key it was sealed with?)"
        ) from None
