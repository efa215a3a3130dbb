"""HTTP details shared by the native endpoints: versions as ETags, the actor, paging links."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, g, has_app_context, request
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import Connection
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import BadRequest

from api.auth.principal import current_principal
from api.body import json_body
from service.db import Database

_ETAG = re.compile(r'^\s*(?:W/)?"(\d{1,18})"\s*$')
_ACTOR = re.compile(r"^[\w.@:/+\- ]{1,255}$")
ANONYMOUS = "anonymous"
_READ_CONNECTION = "ipt_read_connection"


def database() -> Database:
    db: Database = current_app.extensions["ipt_database"]
    return db


def read_connection() -> Connection:
    """The connection the current request's single-statement reads share.

    Checking the token's client and reading the resource then take one connection from
    the pool, not two. It is opened on first use and closed when the request ends
    (:func:`release_read_connection`).
    """
    connection: Connection | None = g.get(_READ_CONNECTION)
    if connection is None:
        connection = database().single_statement_connection()
        setattr(g, _READ_CONNECTION, connection)
    return connection


def release_read_connection(_error: BaseException | None = None) -> None:
    """Give the request's read connection back to the pool (a later read takes another).

    At the end of the request, and before a write transaction of it begins.
    """
    if not has_app_context():
        return
    connection: Connection | None = g.pop(_READ_CONNECTION, None)
    if connection is not None:
        connection.close()


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version() -> int | None:
    """The version in ``If-Match``, or None when the header is absent or ``*``.

    Accepts the service's own ETags (``"3"``) and their weak form (``W/"3"``).
    """
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    match = _ETAG.match(header)
    if not match:
        raise BadRequest(
            f'If-Match must be one ETag such as "3" (the version of the record), not {header!r}'
        )
    return int(match.group(1))


def not_modified(version: int) -> bool:
    """True when the client's ``If-None-Match`` names the current version."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(
        _ETAG.match(tag) and _ETAG.match(tag).group(1) == str(version)  # type: ignore[union-attr]
        for tag in header.split(",")
    )


def names_tag(tag: str) -> bool:
    """True when the client's ``If-None-Match`` is ``*`` or names this entity tag (as
    sent, or in its weak form): for documents whose ETag is more than a version."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in header.split(","))


def versioned(body: Any, version: int, status: int = 200) -> tuple[Any, int, dict[str, str]]:
    """A response body with its ETag."""
    return body, status, {"ETag": etag(version)}


def conditional(record: Any) -> Any:
    """A record read: 304 when the client's ``If-None-Match`` names its version."""
    if not_modified(record.version):
        return unchanged(record.version)
    return versioned(record, record.version)


def created(record: Any, location: str) -> tuple[Any, int, dict[str, str]]:
    """201 with the new record, its ETag and where it lives."""
    body, status, headers = versioned(record, record.version, 201)
    headers["Location"] = location
    return body, status, headers


def unchanged(version: int, tag: str | None = None) -> Response:
    """304 Not Modified, with the ETag of the version (or ``tag``, when given)."""
    response = Response(status=304)
    response.headers["ETag"] = etag(version) if tag is None else tag
    return response


def actor() -> str:
    """Who is acting: recorded with every change.

    The user an authenticated client names in ``X-Actor`` (an EHR acting for one of its
    users), else the token's user or client. The audit trail keeps the client beside it.
    """
    name = request.headers.get("X-Actor")
    if name is None:
        principal = current_principal()
        return principal.actor if principal is not None else ANONYMOUS
    if not _ACTOR.match(name):
        raise BadRequest("X-Actor must be 1-255 letters, digits, spaces or . @ : / + - _")
    return name


def page_links(
    page: int, page_size: int, total: int, added: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """self/first/prev/next/last links that keep every other query parameter, and add
    ``added`` (parameters the server picked for the first page, kept by the others)."""
    last = max(1, math.ceil(total / page_size))
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in ("page", "page_size")]
    params += [(k, v) for k, v in (added or {}).items() if k not in request.args]

    def link(number: int) -> str:
        query = urlencode([*params, ("page", number), ("page_size", page_size)])
        return f"{request.path}?{query}"

    return {
        "self": link(page),
        "first": link(1),
        "prev": link(page - 1) if page > 1 else None,
        "next": link(page + 1) if page < last else None,
        "last": link(last),
    }


def page_body(
    items: list[Any], page: int, page_size: int, total: int, added: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "items": items,
        "total": total,
        "page": page,
        "page_size": page_size,
        "links": page_links(page, page_size, total, added),
    }


def slice_page(items: list[Any], query: dict[str, Any]) -> dict[str, Any]:
    """Page through a short list held in memory (the records of one plan)."""
    page, size = query["page"], query["page_size"]
    return page_body(items[(page - 1) * size : page * size], page, size, len(items))


def request_id() -> str:
    return str(getattr(g, "request_id", ""))


_PROBLEM_DESCRIPTIONS = {
    401: "No valid bearer token (see WWW-Authenticate)",
    403: "The token's scopes do not allow this; the problem names the scope needed",
    304: "Not modified: the version in If-None-Match is current",
    400: "Malformed request: a body that is not JSON or is nested too deep, a parameter "
    "holding text that cannot be stored, a bad If-Match or X-Actor header",
    404: "Not found",
    409: "Conflicts with stored data (duplicate identifier or session, dependent records)",
    410: "Deleted",
    412: "If-Match names an outdated version: read the record again and retry",
    413: "Request body too large",
    415: "The body is not application/json",
    406: "Not acceptable: the Accept header allows none of the media types served",
    422: "Invalid fields or a broken IPT rule; every problem is listed with its field",
}

IF_MATCH = {
    "in": "header",
    "name": "If-Match",
    "required": False,
    "schema": {"type": "string"},
    "description": 'The ETag (version) last read, e.g. "3": the change is refused with 412 if the '
    "record has changed since.",
}
IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "schema": {"type": "string"},
    "description": "The ETag last read: 304 Not Modified when it is still current.",
}
X_ACTOR = {
    "in": "header",
    "name": "X-Actor",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "The user or system making the change, recorded with it (default anonymous).",
}
ETAG_HEADER = {
    "ETag": {"description": 'The version of the record, e.g. "3"', "schema": {"type": "string"}}
}


def documented(blp: Any, *statuses: int, parameters: list[dict[str, Any]] | None = None) -> Any:
    """Document the problem responses and header parameters of an endpoint."""
    from api.schemas import ProblemSchema

    def decorate(view: Any) -> Any:
        # Any request may be refused 400 by the request gate (a parameter holding text
        # that cannot be stored, a malformed header), and any needs a token.
        for status in dict.fromkeys((*statuses, 400, 401, 403)):
            if status == 304:
                view = blp.alt_response(304, description=_PROBLEM_DESCRIPTIONS[304])(view)
            else:
                view = blp.alt_response(
                    status,
                    schema=ProblemSchema,
                    content_type="application/problem+json",
                    description=_PROBLEM_DESCRIPTIONS[status],
                )(view)
        if parameters:
            view = blp.doc(parameters=parameters)(view)
        return view

    return decorate


class StrictParser(FlaskParser):
    """Query parameters are checked like bodies: an unknown one is an error, not ignored.

    The JSON body is the one :mod:`api.body` parsed and checked (nesting depth, numbers,
    text the database can store), never parsed again here.
    """

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": None,
        "querystring": None,
    }

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req) or not req.get_data(cache=True).strip():
            return core.missing
        return json_body()


class ApiBlueprint(Blueprint):
    """The service's blueprints: strict parameters; on the native API (``/api/``), an
    ``Idempotency-Key`` on every POST (:mod:`api.idempotency`), taken and documented
    here for all of them."""

    ARGUMENTS_PARSER = StrictParser()

    def add_url_rule(
        self, rule: str, endpoint: Any = None, view_func: Any = None, *args: Any, **options: Any
    ) -> None:
        from api.idempotency import idempotent

        native = (self.url_prefix or "").startswith("/api/")
        if native and isinstance(view_func, type) and issubclass(view_func, MethodView):
            if "post" in view_func.__dict__:
                view_func.post = idempotent(view_func.post)  # type: ignore[attr-defined]
        elif native and view_func is not None and "POST" in options.get("methods", ()):
            view_func = idempotent(view_func)
        super().add_url_rule(rule, endpoint, view_func, *args, **options)
