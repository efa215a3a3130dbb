"""A secret sent in a query parameter never reaches the audit trail: its value is redacted
in one place before a query is stored, whether the request was answered or refused."""

from __future__ import annotations

import pytest
from conftest import Client
from test_audit import rows

from fhir_mappings.audit_event import SECRET_PARAMETERS, redact_query
from service.db import Database

SECRET = "s3cr3t-VALUE-42"
NAMES = [*sorted(SECRET_PARAMETERS), "Access_Token", "ACCESS_TOKEN", "access_token:exact"]


def stored_text(database: Database) -> str:
    """Every value of every stored audit record, as served to an audit reader too."""
    return "\n".join(
        " ".join(str(value) for value in row.values() if value is not None)
        for row in rows(database)
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_secret_parameter_of_an_answered_search_is_redacted(
    client: Client, database: Database, name: str
) -> None:
    response = client.get(
        "/fhir/CarePlan", params={"status": "active", name: SECRET, "_count": "1"}
    )
    assert response.status_code in (200, 400), response.text
    text = stored_text(database)
    assert SECRET not in text
    assert "status=active" in text


@pytest.mark.parametrize("name", ["access_token", "client_secret", "Password"])
def test_a_secret_parameter_of_a_refused_request_is_redacted(
    anonymous: Client, database: Database, name: str
) -> None:
    response = anonymous.get("/fhir/Goal", params={name: SECRET, "lifecycle-status": "active"})
    assert response.status_code == 401
    assert SECRET not in stored_text(database)


def test_a_secret_in_a_posted_search_form_is_redacted(client: Client, database: Database) -> None:
    response = client.post(
        "/fhir/CarePlan/_search",
        data={"status": "active", "access_token": SECRET},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    text = stored_text(database)
    assert SECRET not in text
    assert "access_token=redacted" in text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a=1&access_token=x&b=2", "a=1&access_token=redacted&b=2"),
        ("CLIENT_SECRET=x", "CLIENT_SECRET=redacted"),
        ("access%5Ftoken=x", "access%5Ftoken=redacted"),
        ("token:exact=x&token", "token:exact=redacted&token"),
        ("patient=Patient%2F1&_count=5", "patient=Patient%2F1&_count=5"),
        ("code=x&codes=y", "code=redacted&codes=y"),
        ("", ""),
    ],
)
def test_redaction_keeps_everything_but_the_secret(query: str, expected: str) -> None:
    assert redact_query(query) == expected
