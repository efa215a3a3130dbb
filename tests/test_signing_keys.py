"""The token-signing keys at rest (encrypted with the key-encryption key) and their rotation."""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import TEST_DATABASE_URL, run_cli
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, text
from werkzeug.serving import make_server

from api.app import create_app
from api.auth import keys, tokens
from api.config import ConfigError, Settings, load
from service import clients
from service.db import Database, normalise_url
from service.models import SigningKey

pytestmark = pytest.mark.slow

SCOPE = "system/CarePlan.rs"
KEK_VARIABLE = "IPT_KEY_ENCRYPTION_KEY_FILE"


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Database]:
    """A database of its own, migrated: its signing keys are this test's alone."""
    if not TEST_DATABASE_URL:
        database = Database(f"sqlite:///{tmp_path / 'keys.db'}")
        yield database
        database.dispose()
        return
    schema = f"keys_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = Database(TEST_DATABASE_URL)
    with admin.engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = normalise_url(TEST_DATABASE_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    database = Database(url.render_as_string(hide_password=False))
    yield database
    database.dispose()
    with admin.engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def migrated(fresh: Database) -> Database:
    fresh.upgrade()
    return fresh


def _kek(path: Path) -> Path:
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n", encoding="ascii")
    return path


def _settings(database: Database, kek: Path | None = None, **overrides: Any) -> Settings:
    return Settings(
        database_url=database.url.render_as_string(hide_password=False),
        auto_migrate=False,
        log_level="ERROR",
        key_encryption_key_file=str(kek) if kek else None,
        token_lifetime_seconds=30,
        **overrides,
    )


def _env(database: Database, kek: Path | None) -> dict[str, str]:
    env = {
        "IPT_DATABASE_URL": database.url.render_as_string(hide_password=False),
        "IPT_AUTO_MIGRATE": "false",
        "IPT_TOKEN_LIFETIME_SECONDS": "30",
    }
    if kek is not None:
        env[KEK_VARIABLE] = str(kek)
    return env


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start an app (a fresh process state) on a real HTTP port; its base URL."""
    running: list[Any] = []

    def start(settings: Settings, database: Database) -> str:
        server = make_server("127.0.0.1", 0, create_app(settings, database), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in running:
        server.shutdown()


def _rows(database: Database) -> list[SigningKey]:
    with database.reading() as session:
        found = list(session.scalars(select(SigningKey).order_by(SigningKey.created_at)))
        session.expunge_all()
    return found


def _token(url: str, client_id: str, secret: str) -> str:
    answer = requests.post(
        f"{url}/auth/token",
        data={"grant_type": "client_credentials", "scope": SCOPE},
        auth=(client_id, secret),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def _read(url: str, token: str) -> requests.Response:
    return requests.get(
        f"{url}/fhir/CarePlan", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _kids(url: str) -> list[str]:
    return [
        key["kid"]
        for key in requests.get(f"{url}/.well-known/jwks.json", timeout=10).json()["keys"]
    ]


def test_the_key_is_stored_encrypted(migrated: Database, tmp_path: Path, serve: Any) -> None:
    kek = _kek(tmp_path / "kek")
    url = serve(_settings(migrated, kek), migrated)
    (row,) = _rows(migrated)
    assert row.private_pem is None and row.encrypted_key is not None
    assert "PRIVATE KEY" not in row.encrypted_key
    # Decrypted apart from the service, with the key-encryption key and the row's id.
    raw = base64.urlsafe_b64decode(row.encrypted_key.removeprefix("aes256gcm:"))
    kek_bytes = base64.b64decode(kek.read_text())
    pem = AESGCM(kek_bytes).decrypt(raw[:12], raw[12:], row.kid.encode())
    private = serialization.load_pem_private_key(pem, password=None)
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert base64.b64encode(der).decode()[:40] not in row.encrypted_key
    (published,) = requests.get(f"{url}/.well-known/jwks.json", timeout=10).json()["keys"]
    assert published["kid"] == keys.thumbprint(keys._token_key(private, "test").public_jwk)


def test_without_a_key_encryption_key_the_key_is_plain_and_check_config_warns(
    migrated: Database, serve: Any
) -> None:
    serve(_settings(migrated), migrated)
    (row,) = _rows(migrated)
    assert row.encrypted_key is None and row.private_pem is not None
    result = run_cli("check-config", env=_env(migrated, None))
    assert result.returncode == 0, result.stderr
    assert "unencrypted" in result.stderr and KEK_VARIABLE in result.stderr


@pytest.mark.parametrize("other", ["another key", "no key"])
def test_a_wrong_key_encryption_key_stops_the_start_naming_the_variable(
    migrated: Database, tmp_path: Path, serve: Any, other: str
) -> None:
    serve(_settings(migrated, _kek(tmp_path / "kek")), migrated)
    wrong = _kek(tmp_path / "wrong") if other == "another key" else None
    with pytest.raises(ConfigError, match=KEK_VARIABLE):
        create_app(_settings(migrated, wrong), migrated)
    result = run_cli("check-config", env=_env(migrated, wrong))
    assert result.returncode != 0
    assert KEK_VARIABLE in result.stderr
    assert "PRIVATE KEY" not in result.stderr + result.stdout
    assert run_cli("keys", "rotate", env=_env(migrated, wrong)).returncode != 0
    assert len(_rows(migrated)) == 1  # nothing was changed


@pytest.mark.parametrize(
    "content", ["", "c2hvcnQ=", "not base64 at all!", base64.b64encode(bytes(range(16))).decode()]
)
def test_an_unusable_key_encryption_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kek"
    path.write_text(content, encoding="ascii")
    with pytest.raises(ConfigError, match=KEK_VARIABLE) as refused:
        load({KEK_VARIABLE: str(path)})
    assert "32 random bytes" in str(refused.value)
    with pytest.raises(ConfigError, match=KEK_VARIABLE):
        load({KEK_VARIABLE: str(tmp_path / "missing")})


def test_rotation_keeps_old_tokens_valid_until_they_expire_then_drops_the_key(
    migrated: Database, tmp_path: Path, serve: Any
) -> None:
    kek = _kek(tmp_path / "kek")
    settings = _settings(migrated, kek)
    first = serve(settings, migrated)
    client, secret = clients.register(migrated, "rotating", [SCOPE], None, None)
    assert secret is not None
    before = _token(first, client.id, secret)
    (old_kid,) = _kids(first)
    old_key = keys.load(settings, migrated)

    rotated = run_cli("keys", "rotate", env=_env(migrated, kek))
    assert rotated.returncode == 0, rotated.stderr
    assert f"retired: {old_kid}" in rotated.stdout
    second = serve(settings, migrated)
    new_kid, kept = _kids(second)
    assert kept == old_kid and new_kid != old_kid
    after = _token(second, client.id, secret)
    # A token of the old key verifies everywhere; one of the new key too, on the
    # instance that loaded its keys before the rotation (an unknown kid reloads them).
    assert _read(second, before).status_code == 200
    assert _read(first, after).status_code == 200
    assert _read(first, before).status_code == 200
    assert _kids(first) == [new_kid, old_kid]
    assert all(row.encrypted_key and row.private_pem is None for row in _rows(migrated))

    # Once every token of the old key has expired, it is no longer published or accepted.
    with migrated.writing() as session:
        for row in session.scalars(select(SigningKey).where(SigningKey.retired_at.is_not(None))):
            assert row.retired_at is not None
            row.retired_at -= timedelta(seconds=settings.token_lifetime_seconds + 61)
    third = serve(settings, migrated)
    assert _kids(third) == [new_kid]
    forged_late, _ = tokens.issue(client, [SCOPE], settings, key=old_key)
    for token in (before, forged_late):
        refused = _read(third, token)
        assert refused.status_code == 401
        assert "unknown signing key" in refused.headers["WWW-Authenticate"]
    assert _read(third, after).status_code == 200
    again = run_cli("keys", "rotate", env=_env(migrated, kek))
    assert again.returncode == 0, again.stderr
    assert "dropped: generated-es256" in again.stdout
    assert len(_rows(migrated)) == 2


def test_rotation_is_refused_when_the_key_comes_from_a_file(
    migrated: Database, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(keys._pem(keys.ec.generate_private_key(keys.ec.SECP256R1())).encode())
    env = {**_env(migrated, None), "IPT_TOKEN_SIGNING_KEY_FILE": str(key_file)}
    result = run_cli("keys", "rotate", env=env)
    assert result.returncode != 0
    assert "IPT_TOKEN_SIGNING_KEY_FILE" in result.stderr
    assert _rows(migrated) == []


def test_a_plain_key_from_before_the_upgrade_keeps_working_and_is_encrypted(
    fresh: Database, tmp_path: Path, serve: Any
) -> None:
    fresh.upgrade("0006")
    pem = keys._pem(keys.ec.generate_private_key(keys.ec.SECP256R1()))
    with fresh.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO signing_keys (kid, private_pem, created_at) "
                "VALUES ('generated-es256', :pem, CURRENT_TIMESTAMP)"
            ),
            {"pem": pem},
        )
    fresh.upgrade()
    plain_settings = _settings(fresh)
    old_key = keys.load(plain_settings, fresh)
    client, _ = clients.register(fresh, "upgraded", [SCOPE], None, None)
    issued_before, _ = tokens.issue(client, [SCOPE], plain_settings, key=old_key)

    url = serve(_settings(fresh, _kek(tmp_path / "kek")), fresh)
    (row,) = _rows(fresh)
    assert row.private_pem is None and row.encrypted_key is not None
    assert "PRIVATE KEY" not in row.encrypted_key
    assert _kids(url) == [old_key.kid]
    assert _read(url, issued_before).status_code == 200


def test_a_running_process_keeps_its_keys_when_they_cannot_be_read_again(
    migrated: Database, tmp_path: Path, serve: Any
) -> None:
    kek = _kek(tmp_path / "kek")
    settings = _settings(migrated, kek)
    url = serve(settings, migrated)
    client, secret = clients.register(migrated, "steady", [SCOPE], None, None)
    assert secret is not None
    valid = _token(url, client.id, secret)
    _kek(kek)  # the file now holds another key: reading the stored keys again fails
    stranger = keys._token_key(keys.ec.generate_private_key(keys.ec.SECP256R1()), "test")
    unknown, _ = tokens.issue(client, [SCOPE], settings, key=stranger)
    time.sleep(1.2)  # past the reload interval for an unknown kid
    refused = _read(url, unknown)
    assert refused.status_code == 401
    assert "unknown signing key" in refused.headers["WWW-Authenticate"]
    assert _read(url, valid).status_code == 200
    assert _token(url, client.id, secret)
