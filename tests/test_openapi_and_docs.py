"""The OpenAPI document teaches the API on its own, is committed current, and renders offline."""

from __future__ import annotations

import json
import re

from conftest import ROOT, Client

from api.cli import openapi_document

COMMITTED = ROOT / "openapi" / "openapi.json"


def test_committed_openapi_document_is_what_the_code_generates() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == openapi_document(), (
        "openapi/openapi.json is stale: run `ipt-careplans openapi write`"
    )


def test_served_document_is_the_committed_one(client: Client) -> None:
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert served.json()["openapi"] == "3.1.0"


def test_every_operation_has_a_summary_a_description_and_documented_errors() -> None:
    spec = json.loads(COMMITTED.read_text(encoding="utf-8"))
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "patch", "delete", "put")
    ]
    assert len(operations) >= 17
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        if method != "get" or "{" in path:
            assert operation.get("description") or operation.get("summary"), where
        assert any(code.startswith("4") for code in operation["responses"]), where


def test_request_bodies_of_creates_have_examples() -> None:
    spec = json.loads(COMMITTED.read_text(encoding="utf-8"))
    for path in (
        "/api/v1/care-plans",
        "/api/v1/care-plans/{plan_id}/goals",
        "/api/v1/care-plans/{plan_id}/homework",
        "/api/v1/care-plans/{plan_id}/sessions",
    ):
        post = spec["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]
        assert "example" in body, path
        created = post["responses"]["201"]
        assert "example" in created["content"]["application/json"], path
        assert "ETag" in created["headers"], path


def test_enumerations_come_from_the_domain_code_lists() -> None:
    spec = json.loads(COMMITTED.read_text(encoding="utf-8"))
    plan = spec["components"]["schemas"]["PlanCreate"]["properties"]
    assert plan["problem_areas"]["items"]["enum"] == [
        "grief",
        "role-dispute",
        "role-transition",
        "interpersonal-deficits",
    ]
    assert plan["problem_areas"]["maxItems"] == 2
    session = spec["components"]["schemas"]["SessionFields"]["properties"]
    assert session["phq9_total"]["maximum"] == 27


def test_docs_page_loads_its_assets_from_the_service_itself(client: Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources, page.text
    for source in sources:
        assert source.startswith("/"), f"{source} is not served by the service"
        asset = client.get(source)
        assert asset.status_code == 200, source
        assert len(asset.content) > 100, source
    assert "/openapi.json" in client.get("/docs/init.js").text
