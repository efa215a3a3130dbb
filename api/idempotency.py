"""``Idempotency-Key`` on every native POST: a retry gets the first answer, not a second effect.

:class:`api.http.ApiBlueprint` wraps the ``post`` of every route it registers with
:func:`idempotent` and documents the header there, so that every native POST, present or
future, takes a key the same way. The keys themselves are kept by
:mod:`service.idempotency`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
import time
import weakref
from copy import deepcopy
from datetime import timedelta
from typing import Any

from flask import Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import BadRequest

from api.auth.principal import current_principal
from api.body import json_body
from service import idempotency
from service.db import Database

log = logging.getLogger("ipt_careplans.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# 1-255 printable ASCII characters (space to tilde).
_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
ANONYMOUS_CLIENT = "anonymous"
# Expired keys are dropped by a request that sends a key, at most this often per process.
PURGE_INTERVAL = 60.0

IDEMPOTENCY_KEY = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": "A key the client makes up for this request (a UUID, say), to send it "
    "again safely: a retry with the same key and the same body within the retention time "
    "(24 hours by default) gets the first answer back (status, body, ETag, Location, and "
    "`Idempotent-Replayed: true`) instead of doing it twice, also when the first is still "
    "running. The same key with a different body or URL is refused with 422. Keys belong "
    "to the client that sent them; only successful answers are kept. 1-255 printable ASCII "
    "characters, else 400.",
}


def idempotent(view: Any) -> Any:
    """Wrap a POST view: with an ``Idempotency-Key`` it runs once per key (see module)."""
    if getattr(view, "_idempotent", False):
        return view

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        asked = idempotency.Request(
            client_id=_client(),
            key=_checked(key),
            fingerprint=_fingerprint(),
            retention=timedelta(
                seconds=current_app.extensions["ipt_settings"].idempotency_retention_seconds
            ),
        )
        database: Database = current_app.extensions["ipt_database"]

        def act() -> tuple[Response, idempotency.StoredAnswer]:
            response = current_app.make_response(view(*args, **kwargs))
            if response.status_code >= 300:
                raise idempotency.Unanswered(response)
            return response, _answer_of(response)

        result = idempotency.answer_once(database, asked, act)
        _purge_now_and_then(database)
        if isinstance(result, idempotency.StoredAnswer):
            return _replayed(result)
        return result

    wrapper._idempotent = True  # type: ignore[attr-defined]
    # The header joins the parameters the view documents (a copy: wraps shares the dict).
    apidoc = deepcopy(getattr(view, "_apidoc", {}))
    manual = apidoc.setdefault("manual_doc", {})
    manual["parameters"] = [*manual.get("parameters", []), IDEMPOTENCY_KEY]
    wrapper._apidoc = apidoc  # type: ignore[attr-defined]
    return wrapper


def _checked(key: str) -> str:
    if not _KEY.match(key):
        raise BadRequest(
            f"{HEADER} must be 1-255 printable ASCII characters (a UUID, say); "
            f"the one sent has {len(key)} characters"
            + ("" if len(key) > 255 or not key else ", some of them not printable ASCII")
        )
    return key


def _client() -> str:
    principal = current_principal()
    return principal.client_id if principal is not None else ANONYMOUS_CLIENT


def _fingerprint() -> str:
    """A digest of what the request asks: its method, path and body (parsed, so that key
    order and spacing do not matter), and for whom: the token's user and patient, so that
    one client's users never get each other's answers."""
    body = json_body() if request.get_data(cache=True).strip() else None
    principal = current_principal()
    caller = [principal.user, principal.patient] if principal is not None else None
    text = json.dumps(
        [request.method, request.path, body, caller],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _answer_of(response: Response) -> idempotency.StoredAnswer:
    return idempotency.StoredAnswer(
        status=response.status_code,
        body=response.get_data(as_text=True),
        content_type=response.content_type or "application/json",
        etag=response.headers.get("ETag"),
        location=response.headers.get("Location"),
    )


def _replayed(answer: idempotency.StoredAnswer) -> Response:
    response = Response(answer.body, status=answer.status, content_type=answer.content_type)
    if answer.etag is not None:
        response.headers["ETag"] = answer.etag
    if answer.location is not None:
        response.headers["Location"] = answer.location
    response.headers[REPLAYED_HEADER] = "true"
    return response


_last_purge: weakref.WeakKeyDictionary[Database, float] = weakref.WeakKeyDictionary()
_purge_lock = threading.Lock()


def _purge_now_and_then(database: Database) -> None:
    """Drop expired keys, once a minute at most: the table holds only live ones and a
    few minutes' worth of expired ones (which are never replayed)."""
    now = time.monotonic()
    with _purge_lock:
        if now - _last_purge.get(database, -PURGE_INTERVAL) < PURGE_INTERVAL:
            return
        _last_purge[database] = now
    try:
        idempotency.purge_expired(database)
    except SQLAlchemyError:
        # The answer is made; the next request with a key tries again.
        log.warning("expired idempotency keys could not be dropped", exc_info=True)
        _last_purge.pop(database, None)
