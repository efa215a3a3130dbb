"""What every request gets besides its answer: security headers, a request id and log line,
metrics, an audit record. Each of these is paid by every request, so each is kept cheap;
these tests pin what they do."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from conftest import Client
from flask import Flask, Response
from prometheus_client import REGISTRY

from api import headers, request_log

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@pytest.fixture
def app() -> Flask:
    app = Flask("overhead")
    request_log.install(app)
    headers.install(app)

    @app.get("/fhir/thing")
    def plain() -> str:
        return "{}"

    @app.get("/api/v1/own")
    def own() -> Response:
        response = Response("{}")
        response.headers["Content-Security-Policy"] = "default-src 'self'"
        response.headers["x-frame-options"] = "SAMEORIGIN"
        response.headers["Cache-Control"] = "max-age=60"
        return response

    @app.get("/docs")
    def docs() -> str:
        return "<html></html>"

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    return app


def test_every_response_gets_each_security_header_once(app: Flask) -> None:
    client = app.test_client()
    data = client.get("/fhir/thing").headers
    for name, value in SECURITY.items():
        assert data.getlist(name) == [value]
    assert data.getlist("Content-Security-Policy") == [headers.API_POLICY]
    assert data.getlist("Cache-Control") == ["no-store"]
    assert data.getlist("Pragma") == ["no-cache"]
    probe = client.get("/healthz").headers
    assert probe.getlist("Content-Security-Policy") == [headers.API_POLICY]
    assert "Cache-Control" not in probe and "Pragma" not in probe
    assert client.get("/docs").headers.getlist("Content-Security-Policy") == [headers.DOCS_POLICY]


def test_a_response_keeps_its_own_policy_but_never_its_own_caching_of_data(app: Flask) -> None:
    own = app.test_client().get("/api/v1/own").headers
    assert own.getlist("Content-Security-Policy") == ["default-src 'self'"]
    assert own.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert own.getlist("Cache-Control") == ["no-store"]
    assert own.getlist("Pragma") == ["no-cache"]
    for name in ("X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Resource-Policy"):
        assert own.getlist(name) == [SECURITY[name]]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(request_log.JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = request_log.log
    kept = logger.level, logger.handlers[:]
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    yield handler
    logger.setLevel(kept[0])
    logger.handlers[:] = kept[1]


def test_one_log_line_per_request_without_its_url(app: Flask, lines: Lines) -> None:
    client = app.test_client()
    given = client.get("/fhir/thing?patient=Patient/secret-1", headers={"X-Request-ID": "r-1"})
    made = client.get("/fhir/thing", headers={"X-Request-ID": "not valid!"})
    assert given.headers["X-Request-ID"] == "r-1"
    generated = made.headers["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    first, second = lines.lines
    assert first["request_id"] == "r-1"
    assert (first["logger"], first["level"], first["message"]) == (
        "ipt_careplans.requests",
        "INFO",
        "request",
    )
    assert (first["method"], first["route"], first["status"]) == ("GET", "/fhir/thing", 200)
    assert isinstance(first["duration_ms"], float)
    assert second["request_id"] == generated
    assert "secret-1" not in json.dumps(lines.lines)
    assert client.get("/nowhere").status_code == 404
    assert lines.lines[-1]["route"] == "(no route)"


def test_requests_are_counted_by_method_route_and_status(client: Client) -> None:
    labels = {"method": "GET", "route": "/fhir/<resource_type>/<resource_id>"}

    def counted(status: str) -> tuple[float, float]:
        found = {**labels, "status": status}
        return (
            REGISTRY.get_sample_value("ipt_http_requests_total", found) or 0.0,
            REGISTRY.get_sample_value("ipt_http_request_duration_seconds_count", found) or 0.0,
        )

    before, missing_before = counted("200"), counted("404")
    plan = client.create_plan()
    for _ in range(3):
        assert client.get(f"/fhir/CarePlan/{plan['id']}").status_code == 200
    assert client.get("/fhir/CarePlan/missing").status_code == 404
    assert counted("200") == (before[0] + 3, before[1] + 3)
    assert counted("404") == (missing_before[0] + 1, missing_before[1] + 1)
