"""The OAuth2 token endpoint, access-token verification, signing keys and the client CLI."""

from __future__ import annotations

import base64
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import ROOT, Client, Server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from api.app import create_app
from api.auth import keys, tokens
from api.auth.principal import Principal
from api.auth.tokens import AuthError, verify
from api.config import ConfigError, Settings, load
from service import clients
from service.db import Database
from service.errors import Conflict, RuleViolation
from service.models import ApiClient

BASE = Settings().public_base_url
TOKEN_URL = f"{BASE}/auth/token"
AUDIENCE = f"{BASE}/fhir"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
IDP = "https://idp.example.org"
IDP_AUDIENCE = "https://ipt.example.org/fhir"


@pytest.fixture
def client(anonymous: Client) -> Client:
    """The token endpoint is called without a bearer token."""
    return anonymous


def _settings(database: Database, **overrides: Any) -> Settings:
    return Settings(
        database_url=database.url.render_as_string(hide_password=False),
        auto_migrate=False,
        log_level="WARNING",
        **overrides,
    )


@pytest.fixture
def app(database: Database) -> Flask:
    """An app of its own, so that its signing key is read afresh from the database."""
    return create_app(_settings(database), database)


def _grant(client: Client, data: dict[str, str], **kwargs: Any) -> Any:
    return client.post("/auth/token", data={"grant_type": "client_credentials", **data}, **kwargs)


def _server_claims(client: Client, token: str) -> dict[str, Any]:
    """Decode a token with the keys the server publishes."""
    jwks = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256"], audience=AUDIENCE, issuer=BASE
    )
    return claims


def _error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


# --- client_secret_basic --------------------------------------------------------------


def test_client_secret_basic_gets_a_signed_token(
    client: Client, database: Database, live: Server
) -> None:
    registered, secret = clients.register(
        database, "reporting", ["system/CarePlan.rs", "system/Goal.rs"], patient="Patient/123"
    )
    assert secret is not None and len(secret) >= 43
    response = _grant(
        client, {"scope": "system/CarePlan.rs system/Goal.rs"}, auth=(registered.id, secret)
    )
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == live.settings.token_lifetime_seconds
    assert body["scope"] == "system/CarePlan.rs system/Goal.rs"
    claims = _server_claims(client, body["access_token"])
    assert claims["sub"] == claims["client_id"] == registered.id
    assert claims["scope"] == "system/CarePlan.rs system/Goal.rs"
    assert claims["patient"] == "Patient/123"
    assert claims["exp"] - claims["iat"] == live.settings.token_lifetime_seconds
    assert claims["nbf"] <= time.time() + 1
    assert claims["jti"]


def test_only_a_hash_of_the_secret_is_stored(database: Database) -> None:
    registered, secret = clients.register(database, "hashed", ["system/*.rs"])
    assert secret is not None
    stored = clients.find_by_id(database, registered.id)
    assert stored is not None and stored.secret_hash is not None
    assert secret not in stored.secret_hash
    assert stored.secret_hash.startswith("scrypt$16384$8$1$")
    assert clients.check_secret(stored, secret)
    assert not clients.check_secret(stored, secret + "x")
    assert not clients.check_secret(None, secret)


def test_a_wrong_secret_is_refused_with_a_basic_challenge(
    client: Client, database: Database
) -> None:
    registered, _ = clients.register(database, "reporting", ["system/*.rs"])
    response = _grant(client, {"scope": "system/*.rs"}, auth=(registered.id, "not-the-secret"))
    _error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="ipt-careplans"'
    assert "access_token" not in response.json()


def test_a_revoked_client_gets_no_token(client: Client, database: Database) -> None:
    registered, secret = clients.register(database, "former", ["system/*.rs"])
    clients.revoke(database, "former")
    response = _grant(client, {"scope": "system/*.rs"}, auth=(registered.id, secret))
    _error(response, 401, "invalid_client")


def test_an_unknown_client_gets_no_token(client: Client) -> None:
    response = _grant(client, {"scope": "system/*.rs"}, auth=(str(uuid.uuid4()), "whatever"))
    _error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="ipt-careplans"'


def test_an_unauthenticated_request_or_a_secret_in_the_form_is_refused(
    client: Client, database: Database
) -> None:
    registered, secret = clients.register(database, "reporting", ["system/*.rs"])
    _error(_grant(client, {"scope": "system/*.rs"}), 401, "invalid_client")
    in_form = {"scope": "system/*.rs", "client_id": registered.id, "client_secret": str(secret)}
    _error(_grant(client, in_form), 401, "invalid_client")


def test_the_grant_type_is_required_and_must_be_client_credentials(
    client: Client, database: Database
) -> None:
    registered, secret = clients.register(database, "reporting", ["system/*.rs"])
    auth = (registered.id, str(secret))
    missing = client.post("/auth/token", data={"scope": "system/*.rs"}, auth=auth)
    _error(missing, 400, "invalid_request")
    password = client.post(
        "/auth/token", data={"grant_type": "password", "scope": "system/*.rs"}, auth=auth
    )
    _error(password, 400, "unsupported_grant_type")


def test_malformed_requests_are_invalid_requests(client: Client, database: Database) -> None:
    registered, secret = clients.register(database, "reporting", ["system/*.rs"])
    auth = (registered.id, str(secret))
    as_json = client.post(
        "/auth/token", json={"grant_type": "client_credentials", "scope": "x"}, auth=auth
    )
    _error(as_json, 400, "invalid_request")
    twice = client.post(
        "/auth/token",
        data=[("grant_type", "client_credentials"), ("scope", "a"), ("scope", "b")],
        auth=auth,
    )
    _error(twice, 400, "invalid_request")
    _error(_grant(client, {}, auth=auth), 400, "invalid_request")  # no scope


def test_scopes_outside_the_registration_are_not_granted(
    client: Client, database: Database
) -> None:
    registered, secret = clients.register(
        database, "reporting", ["system/CarePlan.rs", "system/Goal.rs"]
    )
    auth = (registered.id, str(secret))
    refused = _grant(client, {"scope": "system/CarePlan.cruds user/*.rs"}, auth=auth)
    _error(refused, 400, "invalid_scope")
    partial = _grant(client, {"scope": "system/CarePlan.r system/Goal.cruds openid"}, auth=auth)
    assert partial.status_code == 200, partial.text
    assert partial.json()["scope"] == "system/CarePlan.r"
    assert _server_claims(client, partial.json()["access_token"])["scope"] == "system/CarePlan.r"


# --- private_key_jwt (SMART Backend Services) ------------------------------------------


@pytest.fixture
def backend_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def backend(database: Database, backend_key: ec.EllipticCurvePrivateKey) -> ApiClient:
    jwk = ECAlgorithm.to_jwk(backend_key.public_key(), as_dict=True)
    registered, secret = clients.register(
        database, "backend", ["system/*.rs"], jwks={"keys": [{**jwk, "kid": "backend-1"}]}
    )
    assert secret is None
    return registered


def _assertion(
    client_id: str, key: Any, algorithm: str = "ES384", kid: str = "backend-1", **claims: Any
) -> str:
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


def _with_assertion(client: Client, assertion: str, scope: str = "system/*.rs") -> Any:
    return _grant(
        client,
        {
            "scope": scope,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
        },
    )


def test_private_key_jwt_gets_a_token(
    client: Client, backend: ApiClient, backend_key: ec.EllipticCurvePrivateKey
) -> None:
    response = _with_assertion(client, _assertion(backend.id, backend_key), "system/CarePlan.rs")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "system/CarePlan.rs"
    claims = _server_claims(client, body["access_token"])
    assert claims["client_id"] == backend.id
    assert "patient" not in claims


def test_private_key_jwt_with_an_rsa_key_and_rs384(client: Client, database: Database) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    registered, _ = clients.register(
        database, "rsa-backend", ["system/*.rs"], jwks={"keys": [{**jwk, "kid": "r1"}]}
    )
    response = _with_assertion(client, _assertion(registered.id, key, "RS384", kid="r1"))
    assert response.status_code == 200, response.text


def _from_now(claims: dict[str, Any]) -> dict[str, Any]:
    """Claims with their times (exp, nbf, iat) given in seconds from now, made absolute when
    the test runs: a time taken when the tests are collected is stale by the time a test
    runs late in a long run."""
    now = int(time.time())
    return {k: now + v if k in ("exp", "nbf", "iat") else v for k, v in claims.items()}


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": f"{BASE}/fhir"},
        {"exp": -120},
        {"exp": 900},
        {"sub": "someone-else"},
    ],
    ids=["wrong-aud", "expired", "exp-too-far-ahead", "sub-is-not-iss"],
)
def test_an_invalid_assertion_is_refused(
    client: Client,
    backend: ApiClient,
    backend_key: ec.EllipticCurvePrivateKey,
    claims: dict[str, Any],
) -> None:
    assertion = _assertion(backend.id, backend_key, **_from_now(claims))
    _error(_with_assertion(client, assertion), 400, "invalid_client")


def test_a_replayed_assertion_is_refused(
    client: Client, backend: ApiClient, backend_key: ec.EllipticCurvePrivateKey
) -> None:
    assertion = _assertion(backend.id, backend_key)
    assert _with_assertion(client, assertion).status_code == 200
    replay = _with_assertion(client, assertion)
    _error(replay, 400, "invalid_client")
    assert "already used" in replay.json()["error_description"]


def test_an_assertion_signed_by_another_key_is_refused(client: Client, backend: ApiClient) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    _error(_with_assertion(client, _assertion(backend.id, other)), 400, "invalid_client")
    unknown_kid = _assertion(backend.id, other, kid="not-registered")
    _error(_with_assertion(client, unknown_kid), 400, "invalid_client")


def test_an_assertion_with_a_shared_secret_algorithm_is_refused(
    client: Client, backend: ApiClient
) -> None:
    forged = _assertion(backend.id, "a-guessable-shared-secret-of-32-bytes!", "HS256")
    _error(_with_assertion(client, forged), 400, "invalid_client")


def test_a_key_client_has_no_secret_to_log_in_with(
    client: Client, backend: ApiClient, database: Database
) -> None:
    _error(_grant(client, {"scope": "system/*.rs"}, auth=(backend.id, "")), 401, "invalid_client")
    with pytest.raises(Conflict):
        clients.rotate_secret(database, "backend")


def test_private_keys_are_not_registered(database: Database) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    private_jwk = json.loads(ECAlgorithm.to_jwk(key))
    with pytest.raises(RuleViolation):
        clients.register(database, "leaky", ["system/*.rs"], jwks={"keys": [private_jwk]})


# --- verify() ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _own(app: Flask, client_id: str, key: Any = None, **claims: Any) -> str:
    """A token shaped like the service's own, with some claims changed."""
    signing = keys.key_for(app)
    now = int(time.time())
    body = {
        "iss": BASE,
        "sub": client_id,
        "client_id": client_id,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "scope": "system/*.rs",
        **claims,
    }
    return jwt.encode(
        body, key or signing.private_key, algorithm="ES256", headers={"kid": signing.kid}
    )


def test_verify_accepts_a_fresh_token(app: Flask, database: Database) -> None:
    registered, _ = clients.register(
        database, "bound", ["patient/*.rs", "system/Goal.r"], patient="77"
    )
    with app.app_context():
        token, lifetime = tokens.issue(registered, ["patient/*.rs"], app.extensions["ipt_settings"])
        principal = verify(token)
    assert lifetime == 300
    assert principal.client_id == registered.id
    assert principal.scopes == frozenset({"patient/*.rs"})
    assert principal.patient == "Patient/77"
    assert principal.user is None
    assert principal.issuer == "self"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": -120}, "expired"),
        ({"nbf": 600, "exp": 900}, "not valid yet"),
        ({"aud": "https://elsewhere.example.org/fhir"}, "audience"),
        ({"iss": "https://elsewhere.example.org"}, "issuer"),
    ],
)
def test_verify_refuses_invalid_claims(
    app: Flask, database: Database, claims: dict[str, Any], reason: str
) -> None:
    registered, _ = clients.register(database, "reporting", ["system/*.rs"])
    with app.app_context(), pytest.raises(AuthError, match=reason):
        verify(_own(app, registered.id, **_from_now(claims)))


def test_verify_refuses_a_bad_signature(app: Flask, database: Database) -> None:
    registered, _ = clients.register(database, "reporting", ["system/*.rs"])
    with app.app_context():
        forged = _own(app, registered.id, key=ec.generate_private_key(ec.SECP256R1()))
        with pytest.raises(AuthError, match="signature"):
            verify(forged)
        header, payload, signature = _own(app, registered.id).split(".")
        tampered = _own(app, registered.id, scope="system/*.cruds").split(".")[1]
        with pytest.raises(AuthError, match="signature"):
            verify(f"{header}.{tampered}.{signature}")
        # The public key used as an HMAC secret (algorithm confusion), built by hand since
        # PyJWT refuses to.
        public_pem = keys.key_for(app).public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        hs_header = _b64(json.dumps({"alg": "HS256", "kid": keys.key_for(app).kid}).encode())
        signed = f"{hs_header}.{payload}".encode()
        confused = f"{hs_header}.{payload}.{_b64(hmac.new(public_pem, signed, 'sha256').digest())}"
        with pytest.raises(AuthError):
            verify(confused)


def test_verify_refuses_the_token_of_a_revoked_client(app: Flask, database: Database) -> None:
    registered, _ = clients.register(database, "reporting", ["system/*.rs"])
    with app.app_context():
        token, _ = tokens.issue(registered, ["system/*.rs"], app.extensions["ipt_settings"])
        assert verify(token).client_id == registered.id
        clients.revoke(database, "reporting")
        with pytest.raises(AuthError, match="revoked"):
            verify(token)


def test_a_verified_token_is_remembered_only_until_it_expires() -> None:
    cache = tokens.VerifiedTokens(size=2)
    principal = Principal(client_id="reporting", scopes=frozenset({"system/*.rs"}))
    cache.put("header.claims.signature", principal, expires=100.0)
    assert cache.get("header.claims.signature", now=99.9) is principal
    # The exact string only: another token (even a prefix or an extension) is not known.
    assert cache.get("header.claims.signatur", now=99.9) is None
    assert cache.get("header.claims.signature2", now=99.9) is None
    assert cache.get("header.claims.signature", now=100.0) is None
    assert cache.get("header.claims.signature", now=50.0) is None  # dropped once expired


def test_the_verified_tokens_kept_are_bounded() -> None:
    cache = tokens.VerifiedTokens(size=2)
    principal = Principal(client_id="reporting")
    for name in ("a.b.c", "d.e.f", "g.h.i"):
        cache.put(name, principal, expires=100.0)
    assert cache.get("a.b.c", now=1.0) is None
    assert cache.get("g.h.i", now=1.0) is principal


def test_a_remembered_token_stops_working_when_its_client_is_revoked(
    app: Flask, database: Database
) -> None:
    registered, _ = clients.register(database, "nightly", ["system/*.rs"])
    with app.app_context():
        token, _ = tokens.issue(registered, ["system/*.rs"], app.extensions["ipt_settings"])
        assert verify(token).client_id == registered.id
        assert verify(token).client_id == registered.id  # now from the cache
        clients.revoke(database, "nightly")
        with pytest.raises(AuthError, match="revoked"):
            verify(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b.c.d.e"])
def test_verify_refuses_malformed_tokens(app: Flask, token: str) -> None:
    with app.app_context(), pytest.raises(AuthError):
        verify(token)


# --- signing keys -----------------------------------------------------------------------


def test_every_process_signs_with_the_one_generated_key(database: Database) -> None:
    settings = _settings(database)
    processes = [Database(settings.database_url) for _ in range(6)]
    found: list[str] = []

    def load_key(own: Database) -> None:
        found.append(keys.load(settings, own).kid)

    threads = [threading.Thread(target=load_key, args=(own,)) for own in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for own in processes:
        own.dispose()
    assert len(found) == 6 and len(set(found)) == 1
    key = keys.load(settings, database)
    assert key.kid == found[0] == keys.thumbprint(key.public_jwk)
    assert key.algorithm == "ES256"


def test_a_configured_key_file_signs_the_tokens(tmp_path: Path, database: Database) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "signing.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    app = create_app(_settings(database, token_signing_key_file=str(path)), database)
    registered, _ = clients.register(database, "reporting", ["system/*.rs"])
    with app.app_context():
        (published,) = keys.public_jwks()["keys"]
        token, _ = tokens.issue(registered, ["system/*.rs"], app.extensions["ipt_settings"])
        assert verify(token).client_id == registered.id
    assert published["alg"] == "RS256" and "d" not in published
    assert published["kid"] == jwt.get_unverified_header(token)["kid"]
    path.write_text("not a key")
    with pytest.raises(ConfigError, match="IPT_TOKEN_SIGNING_KEY_FILE"):
        create_app(_settings(database, token_signing_key_file=str(path)), database)


# --- external identity provider --------------------------------------------------------


@pytest.fixture
def idp_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks(key: rsa.RSAPrivateKey, kid: str = "idp-1") -> dict[str, Any]:
    return {"keys": [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}]}


def _idp_token(key: rsa.RSAPrivateKey, kid: str = "idp-1", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": IDP,
        "aud": IDP_AUDIENCE,
        "sub": "user-42",
        "azp": "ehr-app",
        "iat": now,
        "exp": now + 300,
        "scope": "user/*.rs patient/Goal.r",
        **claims,
    }
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def idp_app(tmp_path: Path, database: Database, idp_key: rsa.RSAPrivateKey) -> Flask:
    path = tmp_path / "idp-jwks.json"
    path.write_text(json.dumps(_jwks(idp_key)))
    settings = _settings(
        database,
        external_issuer=IDP,
        external_jwks_file=str(path),
        external_audience=IDP_AUDIENCE,
    )
    return create_app(settings, database)


def test_an_external_token_is_accepted(idp_app: Flask, idp_key: rsa.RSAPrivateKey) -> None:
    with idp_app.app_context():
        principal = verify(_idp_token(idp_key, fhirUser="Practitioner/7", patient="123"))
        plain = verify(_idp_token(idp_key, scope=["system/CarePlan.rs"], azp=None))
    assert principal.client_id == "ehr-app"
    assert principal.user == "Practitioner/7"
    assert principal.patient == "Patient/123"
    assert principal.scopes == frozenset({"user/*.rs", "patient/Goal.r"})
    assert principal.issuer == IDP
    assert plain.client_id == plain.user == "user-42"
    assert plain.scopes == frozenset({"system/CarePlan.rs"})
    assert plain.patient is None


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "https://other-idp.example.org"}, "issuer"),
        ({"aud": "https://someone-else.example.org"}, "audience"),
        ({"exp": -120}, "expired"),
        ({"patient": "Patient/not an id"}, "patient"),
    ],
)
def test_an_invalid_external_token_is_refused(
    idp_app: Flask, idp_key: rsa.RSAPrivateKey, claims: dict[str, Any], reason: str
) -> None:
    with idp_app.app_context(), pytest.raises(AuthError, match=reason):
        verify(_idp_token(idp_key, **_from_now(claims)))


def test_an_external_token_signed_by_another_key_is_refused(
    idp_app: Flask, idp_key: rsa.RSAPrivateKey
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with idp_app.app_context():
        with pytest.raises(AuthError, match="signature"):
            verify(_idp_token(other))
        with pytest.raises(AuthError, match="issuer's keys"):
            verify(_idp_token(other, kid="idp-2"))


def test_the_jwks_file_is_read_again_when_it_changes(
    idp_app: Flask, idp_key: rsa.RSAPrivateKey
) -> None:
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = Path(idp_app.extensions["ipt_settings"].external_jwks_file)
    with idp_app.app_context():
        assert verify(_idp_token(idp_key)).client_id == "ehr-app"
        jwks = _jwks(idp_key)
        jwks["keys"] += _jwks(rotated, "idp-2")["keys"]
        path.write_text(json.dumps(jwks))
        assert verify(_idp_token(rotated, kid="idp-2")).client_id == "ehr-app"


@pytest.fixture
def jwks_server(idp_key: rsa.RSAPrivateKey) -> Iterator[str]:
    served = json.dumps(_jwks(idp_key))

    def jwks_app(environ: Any, start_response: Any) -> Any:
        return Response(served, mimetype="application/json")(environ, start_response)

    http = make_server("127.0.0.1", 0, jwks_app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}/jwks.json"
    http.shutdown()


def test_external_keys_are_fetched_from_a_jwks_url(
    database: Database, jwks_server: str, idp_key: rsa.RSAPrivateKey
) -> None:
    settings = _settings(
        database, external_issuer=IDP, external_jwks_url=jwks_server, external_audience=IDP_AUDIENCE
    )
    app = create_app(settings, database)
    with app.app_context():
        assert verify(_idp_token(idp_key)).user == "user-42"
        with pytest.raises(AuthError, match="audience"):
            verify(_idp_token(idp_key, aud="nope"))


# --- discovery and settings -------------------------------------------------------------


def test_smart_configuration(client: Client) -> None:
    config = client.get("/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == TOKEN_URL
    assert config["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "private_key_jwt",
    ]
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    assert config["grant_types_supported"] == ["client_credentials"]
    assert {"system/*.cruds", "system/CarePlan.rs", "user/*.rs", "patient/*.rs"} <= set(
        config["scopes_supported"]
    )
    assert set(config["capabilities"]) == {
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "permission-v2",
        "permission-v1",
    }
    assert config["jwks_uri"] == f"{BASE}/.well-known/jwks.json"
    (key,) = client.get("/.well-known/jwks.json").json()["keys"]
    assert key["kty"] == "EC" and key["alg"] == "ES256" and "d" not in key


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"IPT_PUBLIC_BASE_URL": "https://ipt.example.org/"}, "IPT_PUBLIC_BASE_URL"),
        ({"IPT_PUBLIC_BASE_URL": "ftp://ipt.example.org"}, "IPT_PUBLIC_BASE_URL"),
        ({"IPT_TOKEN_LIFETIME_SECONDS": "10"}, "IPT_TOKEN_LIFETIME_SECONDS"),
        ({"IPT_TOKEN_LIFETIME_SECONDS": "4000"}, "IPT_TOKEN_LIFETIME_SECONDS"),
        ({"IPT_TOKEN_SIGNING_KEY_FILE": "/nonexistent.pem"}, "IPT_TOKEN_SIGNING_KEY_FILE"),
        ({"IPT_EXTERNAL_ISSUER": IDP}, "IPT_EXTERNAL_AUDIENCE"),
        ({"IPT_EXTERNAL_ISSUER": IDP, "IPT_EXTERNAL_AUDIENCE": "a"}, "IPT_EXTERNAL_JWKS_URL"),
        (
            {
                "IPT_EXTERNAL_ISSUER": IDP,
                "IPT_EXTERNAL_AUDIENCE": "a",
                "IPT_EXTERNAL_JWKS_URL": "http://idp.example.org/jwks",
            },
            "IPT_EXTERNAL_JWKS_URL",
        ),
    ],
)
def test_invalid_token_settings_are_refused_by_name(environ: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(environ)


def test_token_settings_are_read(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text("{}")
    settings = load(
        {
            "IPT_PUBLIC_BASE_URL": "https://ipt.example.org/careplans",
            "IPT_TOKEN_LIFETIME_SECONDS": "600",
            "IPT_EXTERNAL_ISSUER": IDP,
            "IPT_EXTERNAL_AUDIENCE": IDP_AUDIENCE,
            "IPT_EXTERNAL_JWKS_FILE": str(jwks),
            "IPT_EXTERNAL_SCOPE_CLAIM": "scp",
        }
    )
    assert settings.token_endpoint == "https://ipt.example.org/careplans/auth/token"
    assert settings.token_audience == "https://ipt.example.org/careplans/fhir"
    assert settings.token_lifetime_seconds == 600
    assert settings.external_scope_claim == "scp"
    assert settings.external_patient_claim == "patient"


# --- the command line --------------------------------------------------------------------


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "IPT_DATABASE_URL": database_url},
        cwd=ROOT,
        timeout=120,
    )


def _field(output: str, name: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(f"{name}: ")]
    return line.split(": ", 1)[1]


@pytest.mark.slow
def test_cli_manages_clients(client: Client, database_url: str, tmp_path: Path) -> None:
    created = _cli(
        "clients", "create", "--name", "nightly-export", "--scopes", "system/*.rs",
        database_url=database_url,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    client_id, secret = _field(created.stdout, "client_id"), _field(created.stdout, "client_secret")
    assert _grant(client, {"scope": "system/*.rs"}, auth=(client_id, secret)).status_code == 200

    key = ec.generate_private_key(ec.SECP384R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [ECAlgorithm.to_jwk(key.public_key(), as_dict=True)]}))
    with_keys = _cli(
        "clients", "create", "--name", "bound-app", "--scopes", "patient/*.rs",
        "--patient", "Patient/9", "--jwks", str(jwks), database_url=database_url,
    )  # fmt: skip
    assert with_keys.returncode == 0, with_keys.stderr
    assert "client_secret" not in with_keys.stdout

    duplicate = _cli(
        "clients", "create", "--name", "nightly-export", "--scopes", "system/*.rs",
        database_url=database_url,
    )  # fmt: skip
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
    bad_scope = _cli(
        "clients", "create", "--name", "x", "--scopes", "everything", database_url=database_url
    )
    assert bad_scope.returncode != 0 and "everything" in bad_scope.stderr

    listed = _cli("clients", "list", database_url=database_url)
    assert listed.returncode == 0, listed.stderr
    assert client_id in listed.stdout and "Patient/9" in listed.stdout
    assert secret not in listed.stdout and "scrypt" not in listed.stdout

    rotated = _cli("clients", "rotate-secret", "nightly-export", database_url=database_url)
    assert rotated.returncode == 0, rotated.stderr
    new_secret = _field(rotated.stdout, "client_secret")
    assert _grant(client, {"scope": "system/*.rs"}, auth=(client_id, secret)).status_code == 401
    assert _grant(client, {"scope": "system/*.rs"}, auth=(client_id, new_secret)).status_code == 200

    revoked = _cli("clients", "revoke", "nightly-export", database_url=database_url)
    assert revoked.returncode == 0, revoked.stderr
    assert _grant(client, {"scope": "system/*.rs"}, auth=(client_id, new_secret)).status_code == 401
    assert "nightly-export" in _cli("clients", "list", database_url=database_url).stdout
    missing = _cli("clients", "revoke", "nobody", database_url=database_url)
    assert missing.returncode != 0 and "nobody" in missing.stderr


@pytest.mark.slow
def test_cli_prints_a_token_that_verifies(database: Database, database_url: str) -> None:
    registered, _ = clients.register(
        database, "script", ["system/CarePlan.rs", "system/Goal.rs"], patient="Patient/5"
    )
    printed = _cli("token", "--client", "script", database_url=database_url)
    assert printed.returncode == 0, printed.stderr
    narrow = _cli(
        "token", "--client", "script", "--scopes", "system/Goal.r", database_url=database_url
    )
    assert narrow.returncode == 0, narrow.stderr
    app = create_app(_settings(database), database)
    with app.app_context():
        principal = verify(printed.stdout.strip())
        assert verify(narrow.stdout.strip()).scopes == frozenset({"system/Goal.r"})
    assert principal.client_id == registered.id
    assert principal.scopes == frozenset({"system/CarePlan.rs", "system/Goal.rs"})
    assert principal.patient == "Patient/5"
    refused = _cli(
        "token", "--client", "script", "--scopes", "system/*.cruds", database_url=database_url
    )
    assert refused.returncode != 0
    clients.revoke(database, "script")
    assert _cli("token", "--client", "script", database_url=database_url).returncode != 0


def test_an_external_token_reaches_patient_data_as_its_scopes_allow(
    idp_app: Flask, idp_key: rsa.RSAPrivateKey, database: Database
) -> None:
    http = idp_app.test_client()
    readers = {"Authorization": f"Bearer {_idp_token(idp_key, scope='user/*.rs')}"}
    listed = http.get("/fhir/CarePlan", headers=readers)
    assert listed.status_code == 200
    assert listed.get_json()["resourceType"] == "Bundle"
    refused = http.post(
        "/api/v1/care-plans",
        json={"patient": "Patient/1", "problem_areas": ["grief"], "start_date": "2026-01-05"},
        headers=readers,
    )
    assert refused.status_code == 403
    assert "CarePlan.c" in refused.get_json()["detail"]
    stranger = {"Authorization": f"Bearer {_idp_token(idp_key, iss='https://other.example')}"}
    assert http.get("/fhir/CarePlan", headers=stranger).status_code == 401
