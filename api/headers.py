"""Security headers on every response."""

from __future__ import annotations

from flask import Flask, Response, request

# The docs page runs Swagger UI from the service itself; it styles elements inline.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DATA_PREFIXES = ("/api/", "/fhir", "/auth/")


def install(app: Flask) -> None:
    @app.after_request
    def secure(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        docs = request.path == "/docs" or request.path.startswith("/docs/")
        headers.setdefault("Content-Security-Policy", DOCS_POLICY if docs else API_POLICY)
        if request.path.startswith(DATA_PREFIXES):
            # Patient data and tokens are never kept by browsers or intermediaries.
            headers["Cache-Control"] = "no-store"
            headers["Pragma"] = "no-cache"
        return response
