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

_SAFE = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
# Added unless the response has its own value.
DEFAULTS = (*_SAFE, ("Content-Security-Policy", API_POLICY))
DOCS_DEFAULTS = (*_SAFE, ("Content-Security-Policy", DOCS_POLICY))
# Patient data and tokens are never kept by browsers or intermediaries: always these.
NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
_DATA_DEFAULTS = (*DEFAULTS, *NO_STORE)
_NAMES = frozenset(name.lower() for name, _ in _DATA_DEFAULTS)


def install(app: Flask) -> None:
    @app.after_request
    def secure(response: Response) -> Response:
        headers = response.headers
        path = request.path
        data = path.startswith(DATA_PREFIXES)
        docs = path == "/docs" or path.startswith("/docs/")
        # One pass over the response's headers: most responses set none of these, and get
        # them all at once.
        present = _NAMES.intersection([name.lower() for name, _ in headers.items()])
        if not present:
            headers.extend(_DATA_DEFAULTS if data else DOCS_DEFAULTS if docs else DEFAULTS)
            return response
        for name, value in DOCS_DEFAULTS if docs else DEFAULTS:
            if name.lower() not in present:
                headers.add(name, value)
        if data:
            for name, value in NO_STORE:
                headers.set(name, value)
        return response
