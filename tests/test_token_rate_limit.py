"""Rate limits of POST /auth/token: guessing secrets is throttled, in every process alike."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from werkzeug.serving import make_server

from api.app import create_app
from api.config import ConfigError, Settings, load
from service import clients
from service.db import Database

SCOPE = "system/CarePlan.rs"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _octet() -> int:
    return secrets.randbelow(250) + 2


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Endpoint:
    """A running app's token endpoint, called from a chosen loopback source address."""

    host: str
    port: int
    # An address of its own: counters are kept in the shared test database, where other
    # tests' token requests from 127.0.0.1 would count against this endpoint's limits.
    address: str = field(default_factory=lambda: f"127.{_octet()}.{_octet()}.{_octet()}")

    def grant(self, client_id: str, secret: str, *, source: str | None = None) -> Answer:
        source = source or self.address
        credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        connection = http.client.HTTPConnection(
            self.host, self.port, timeout=10, source_address=(source, 0)
        )
        try:
            connection.request(
                "POST",
                "/auth/token",
                body=urlencode({"grant_type": "client_credentials", "scope": SCOPE}),
                headers={
                    "Authorization": f"Basic {credentials}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            response = connection.getresponse()
            body = json.loads(response.read())
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        finally:
            connection.close()


def _settings(database: Database, **overrides: Any) -> Settings:
    return Settings(
        database_url=database.url.render_as_string(hide_password=False),
        auto_migrate=False,
        log_level="ERROR",
        **overrides,
    )


@pytest.fixture
def start(database: Database) -> Iterator[Any]:
    """Start an app of its own (its own process state) on the shared test database."""
    running: list[Any] = []

    def run(**overrides: Any) -> Endpoint:
        app = create_app(_settings(database, **overrides), database)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append(server)
        return Endpoint("127.0.0.1", server.server_port)

    yield run
    for server in running:
        server.shutdown()


def _client(database: Database) -> tuple[str, str]:
    client, secret = clients.register(database, f"rate-{uuid.uuid4().hex}", [SCOPE], None, None)
    assert secret is not None
    return client.id, secret


def _assert_limited(answer: Answer) -> None:
    assert answer.status == 429, answer.body
    assert answer.body["error"] == "too_many_requests"
    assert "try again in" in answer.body["error_description"]
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert answer.headers["cache-control"] == "no-store"
    assert "access_token" not in answer.body


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_forty_wrong_secrets_are_throttled_and_the_right_one_refused_while_limited(
    database: Database, start: Any
) -> None:
    endpoint = start()
    client_id, secret = _client(database)
    answers = [endpoint.grant(client_id, f"wrong-{n}") for n in range(40)]
    limit = Settings().token_failures_per_client_address
    assert [a.status for a in answers[:limit]] == [401] * limit
    assert all(a.body["error"] == "invalid_client" for a in answers[:limit])
    for answer in answers[limit:]:
        _assert_limited(answer)
    _assert_limited(endpoint.grant(client_id, secret))
    # Another client at the same address is not locked out by these failures.
    other_id, other_secret = _client(database)
    granted = endpoint.grant(other_id, other_secret)
    assert granted.status == 200 and granted.body["access_token"]


def test_failures_at_one_address_do_not_lock_the_client_out_of_another(
    database: Database, start: Any
) -> None:
    endpoint = start(token_failures_per_client_address=3, token_failures_per_client=6)
    client_id, secret = _client(database)
    for _ in range(3):
        assert endpoint.grant(client_id, "wrong").status == 401
    _assert_limited(endpoint.grant(client_id, secret))
    assert endpoint.grant(client_id, secret, source="127.0.0.2").status == 200
    # Failures spread over addresses reach the client's overall limit: refused everywhere.
    for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
        assert endpoint.grant(client_id, "wrong", source=source).status == 401
    for source in ("127.0.0.1", "127.0.0.6"):
        _assert_limited(endpoint.grant(client_id, secret, source=source))


def test_requests_per_address_are_limited_whatever_they_carry(
    database: Database, start: Any
) -> None:
    endpoint = start(token_attempts_per_address=5)
    client_id, secret = _client(database)
    statuses = [endpoint.grant(client_id, secret).status for _ in range(5)]
    assert statuses == [200] * 5
    _assert_limited(endpoint.grant(client_id, secret))
    _assert_limited(endpoint.grant("no-such-client", "x"))
    # Another address is counted apart.
    assert endpoint.grant(client_id, secret, source="127.0.0.7").status == 200


@pytest.mark.parametrize("storage", ["database", "redis"])
def test_limits_are_shared_by_two_app_instances(
    database: Database, start: Any, storage: str
) -> None:
    overrides: dict[str, Any] = {"token_failures_per_client_address": 4}
    if storage == "redis":
        if not _redis_answers():
            pytest.skip("no Redis server answers at 127.0.0.1:6379")
        # Other test runs may share this Redis: the address limit stays out of the way.
        overrides.update(rate_limit_storage=REDIS_URL, token_attempts_per_address=100_000)
    first, second = start(**overrides), start(**overrides)
    second.address = first.address  # one caller, two instances
    client_id, secret = _client(database)
    assert [first.grant(client_id, "wrong").status for _ in range(2)] == [401, 401]
    assert [second.grant(client_id, "wrong").status for _ in range(2)] == [401, 401]
    _assert_limited(first.grant(client_id, secret))
    _assert_limited(second.grant(client_id, secret))


def test_unreachable_counter_storage_refuses_rather_than_letting_guesses_through(
    database: Database, start: Any
) -> None:
    endpoint = start(rate_limit_storage="redis://127.0.0.1:1/0")
    client_id, secret = _client(database)
    answer = endpoint.grant(client_id, secret)
    assert answer.status == 503
    assert answer.body["error"] == "temporarily_unavailable"
    assert answer.headers["retry-after"] == "5"
    assert "access_token" not in answer.body


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"IPT_RATE_LIMIT_STORAGE": "memory://"}, "IPT_RATE_LIMIT_STORAGE"),
        ({"IPT_RATE_LIMIT_STORAGE": "redis://"}, "IPT_RATE_LIMIT_STORAGE"),
        ({"IPT_TOKEN_ATTEMPTS_PER_ADDRESS": "0"}, "IPT_TOKEN_ATTEMPTS_PER_ADDRESS"),
        ({"IPT_TOKEN_FAILURES_PER_CLIENT": "many"}, "IPT_TOKEN_FAILURES_PER_CLIENT"),
        ({"IPT_TOKEN_FAILURES_PER_CLIENT_ADDRESS": "-3"}, "IPT_TOKEN_FAILURES_PER_CLIENT_ADDRESS"),
    ],
)
def test_invalid_rate_limit_settings_are_refused_by_name(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(environ)


def test_rate_limit_settings_are_read() -> None:
    settings = load(
        {
            "IPT_RATE_LIMIT_STORAGE": REDIS_URL,
            "IPT_TOKEN_ATTEMPTS_PER_ADDRESS": "30",
            "IPT_TOKEN_FAILURES_PER_CLIENT_ADDRESS": "5",
            "IPT_TOKEN_FAILURES_PER_CLIENT": "50",
        }
    )
    assert (
        settings.rate_limit_storage,
        settings.token_attempts_per_address,
        settings.token_failures_per_client_address,
        settings.token_failures_per_client,
    ) == (REDIS_URL, 30, 5, 50)
