"""Who and from where, in the audit trail, and token requests recorded without secrets.

The user an EHR asserts (X-Actor) is kept apart from the user a token names; the source
address follows forwarding headers from trusted proxies only; token requests, granted and
refused, are recorded without their secrets.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Client, Server
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from test_auth_tokens import IDP, IDP_AUDIENCE, _idp_token, _jwks, _settings
from werkzeug.serving import make_server

from api.app import create_app
from api.config import ConfigError, load
from api.request_log import JsonFormatter
from service import audit_journal, clients
from service.db import Database
from service.models import AuditRecord

PROXY_NETWORKS = ("127.0.0.1/32", "10.1.0.0/16")


@pytest.fixture
def idp_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def behind_proxy(
    tmp_path: Path, database: Database, idp_key: rsa.RSAPrivateKey
) -> Iterator[Server]:
    """A server that trusts 127.0.0.1 and 10.1.0.0/16 as proxies and accepts an identity
    provider's tokens."""
    path = tmp_path / "idp-jwks.json"
    path.write_text(json.dumps(_jwks(idp_key)))
    settings = _settings(
        database,
        external_issuer=IDP,
        external_jwks_file=str(path),
        external_audience=IDP_AUDIENCE,
        trusted_proxies=tuple(ipaddress.ip_network(n) for n in PROXY_NETWORKS),
    )
    app = create_app(settings, database)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{http.server_port}", app, settings)
    http.shutdown()


def record_of(database: Database, request_id: str) -> list[AuditRecord]:
    audit_journal.move(database)
    with database.reading() as session:
        return list(
            session.scalars(select(AuditRecord).where(AuditRecord.request_id == request_id))
        )


def read(client: Client, plan: dict[str, Any], **headers: str) -> str:
    request_id = f"who-{uuid.uuid4().hex[:16]}"
    response = client.get(
        f"/fhir/CarePlan/{plan['id']}", headers={"X-Request-ID": request_id, **headers}
    )
    assert response.status_code == 200, response.text
    return request_id


# --- who ------------------------------------------------------------------------------------


def test_a_user_the_client_asserts_is_not_the_authenticated_user(
    client: Client, database: Database, plan: dict
) -> None:
    [record] = record_of(database, read(client, plan, **{"X-Actor": "dr.asserted"}))
    assert (record.agent, record.client_id, record.user_name) == (
        "dr.asserted",
        client.client_id,
        None,
    )
    [plain] = record_of(database, read(client, plan))
    assert (plain.agent, plain.user_name) == (client.client_id, None)


def test_the_user_of_an_identity_provider_token_is_the_token_s(
    behind_proxy: Server, database: Database, idp_key: rsa.RSAPrivateKey, plan: dict
) -> None:
    with_fhir_user = Client(
        behind_proxy.url, _idp_token(idp_key, fhirUser="Practitioner/7", client_id="ehr-app")
    )
    [record] = record_of(database, read(with_fhir_user, plan))
    assert (record.client_id, record.user_name, record.agent) == (
        "ehr-app",
        "Practitioner/7",
        "Practitioner/7",
    )
    by_sub = Client(behind_proxy.url, _idp_token(idp_key, client_id="ehr-app"))
    [record] = record_of(database, read(by_sub, plan, **{"X-Actor": "someone-else"}))
    # The token's user is authenticated; the name the client adds is its assertion.
    assert (record.user_name, record.agent) == ("user-42", "someone-else")


# --- where ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "address"),
    [
        ({}, "127.0.0.1"),
        ({"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9"),
        # The nearest address that is not a trusted proxy: what the client before it wrote
        # could be forged.
        ({"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3"}, "203.0.113.9"),
        ({"X-Forwarded-For": "198.51.100.1, 10.1.2.3"}, "198.51.100.1"),
        ({"Forwarded": 'for="[2001:db8::17]:4711";proto=https'}, "2001:db8::17"),
        ({"Forwarded": "for=192.0.2.60;proto=http, for=10.1.9.9"}, "192.0.2.60"),
        ({"X-Forwarded-For": "not-an-address"}, "not-an-address"),
    ],
)
def test_forwarded_addresses_are_taken_from_trusted_proxies(
    behind_proxy: Server,
    database: Database,
    idp_key: rsa.RSAPrivateKey,
    plan: dict,
    headers: dict[str, str],
    address: str,
) -> None:
    caller = Client(behind_proxy.url, _idp_token(idp_key, client_id="ehr-app"))
    [record] = record_of(database, read(caller, plan, **headers))
    assert record.address == address


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=198.51.100.1"},
    ],
)
def test_forwarding_headers_from_anyone_else_are_ignored(
    client: Client, database: Database, plan: dict, headers: dict[str, str]
) -> None:
    # The shared test server trusts no proxy: its peer is the address recorded.
    [record] = record_of(database, read(client, plan, **headers))
    assert record.address == "127.0.0.1"


# --- token requests -------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[list[str]]:
    """Every log line of the service while the test runs, as written (JSON), INFO and up."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("ipt_careplans")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lines
    root.setLevel(level)
    root.removeHandler(handler)


def test_token_requests_granted_and_refused_are_recorded_without_secrets(
    anonymous: Client, database: Database, captured: list[str]
) -> None:
    registered, secret = clients.register(
        database, f"audited-{uuid.uuid4().hex[:6]}", ["system/*.rs"]
    )
    assert secret is not None
    form = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    granted = anonymous.post(
        "/auth/token", data=form, auth=(registered.id, secret), headers={"X-Request-ID": "tok-ok"}
    )
    assert granted.status_code == 200
    wrong = "Wrong-" + uuid.uuid4().hex
    refused = anonymous.post(
        "/auth/token", data=form, auth=(registered.id, wrong), headers={"X-Request-ID": "tok-no"}
    )
    assert refused.status_code == 401
    in_form = anonymous.post(
        "/auth/token",
        data={**form, "client_id": "who-knows", "client_secret": wrong},
        headers={"X-Request-ID": "tok-form"},
    )
    assert in_form.status_code in (400, 401)
    [ok] = record_of(database, "tok-ok")
    [no] = record_of(database, "tok-no")
    [form_record] = record_of(database, "tok-form")
    assert (ok.interaction, ok.outcome, ok.client_id) == ("login", "0", registered.id)
    assert (no.interaction, no.outcome, no.status) == ("login", "4", 401)
    assert no.client_id == registered.id and no.address == "127.0.0.1"
    assert form_record.client_id == "who-knows"
    for record in (ok, no, form_record):
        assert record.query is None and record.patient is None
        stored = " ".join(str(getattr(record, c.key)) for c in AuditRecord.__table__.columns)
        assert secret not in stored and wrong not in stored
    refusals = [json.loads(line) for line in captured if "token request refused" in line]
    logged = {entry["request_id"]: entry for entry in refusals}
    assert logged["tok-no"]["client_id"] == registered.id
    assert logged["tok-no"]["address"] == "127.0.0.1"
    assert logged["tok-form"]["client_id"] == "who-knows"
    assert all(secret not in line and wrong not in line for line in captured)
    assert granted.json()["access_token"] not in " ".join(captured)


@pytest.fixture
def token_server(database: Database) -> Iterator[Any]:
    """Start servers allowing 3 token requests per address, trusting the given proxies."""
    running: list[Any] = []

    def start(*proxies: str) -> str:
        settings = _settings(
            database,
            token_attempts_per_address=3,
            trusted_proxies=tuple(ipaddress.ip_network(n) for n in proxies),
        )
        http = make_server("127.0.0.1", 0, create_app(settings, database), threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        running.append(http)
        return f"http://127.0.0.1:{http.server_port}"

    yield start
    for http in running:
        http.shutdown()


@pytest.mark.parametrize("trusted", [True, False])
def test_token_rate_limits_count_the_address_trusted_proxies_forward(
    database: Database, token_server: Any, trusted: bool
) -> None:
    registered, secret = clients.register(
        database, f"limited-{uuid.uuid4().hex[:6]}", ["system/*.rs"]
    )
    assert secret is not None
    url = token_server(*(["127.0.0.1/32"] if trusted else []))
    form = {"grant_type": "client_credentials", "scope": "system/*.rs"}

    def grant(forwarded: str) -> int:
        response = Client(url).http.post(
            f"{url}/auth/token",
            data=form,
            auth=(registered.id, secret),
            headers={"X-Forwarded-For": forwarded},
        )
        return response.status_code

    # Fresh addresses: the counts are shared by every app on this database.
    fresh = [f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}" for _ in range(4)]
    if trusted:
        assert [grant(fresh[0]) for _ in range(3)] == [200, 200, 200]
        assert grant(fresh[0]) == 429
        # Another forwarded address is another caller, with an allowance of its own.
        assert grant(fresh[1]) == 200
    else:
        # The header is ignored: four "different" addresses are one peer, over its limit.
        assert 429 in [grant(address) for address in fresh]


@pytest.mark.parametrize(
    ("value", "networks"),
    [
        ("10.0.0.0/8", ["10.0.0.0/8"]),
        (" 10.1.2.3 , 2001:db8::/32,", ["10.1.2.3/32", "2001:db8::/32"]),
        ("10.1.2.3/16", ["10.1.0.0/16"]),
        ("", []),
    ],
)
def test_trusted_proxies_are_read_as_networks(value: str, networks: list[str]) -> None:
    settings = load({"IPT_TRUSTED_PROXIES": value})
    assert [str(network) for network in settings.trusted_proxies] == networks


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.0/33", "10.0.0.1, *", "::g"])
def test_an_invalid_trusted_proxy_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="IPT_TRUSTED_PROXIES") as refused:
        load({"IPT_TRUSTED_PROXIES": value})
    assert "CIDR" in str(refused.value)
