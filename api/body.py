"""The request, read once and checked before any route sees it.

Every route reads its body and its parameters through this module, so the checks below
hold for all of them at once:

* **Size, whatever the framing.** :class:`BodyLimit` reads the body at the WSGI level,
  with ``Content-Length`` or chunked, and never more than the limit: a larger body is
  answered 413 (it is not cut at the limit and read as if it were whole).
* **JSON as data, not as a program.** :func:`json_body` measures the nesting depth before
  parsing (the parser recurses once per level), refuses ``NaN``/``Infinity`` and numbers
  no database column holds, and names the line and column of a syntax error.
* **Only text a record can hold.** A lone UTF-16 surrogate or a NUL character cannot be
  stored in PostgreSQL's text and JSON types (nor encoded as UTF-8), and the other C0
  control characters (U+0001 to U+001F but tab, line feed and carriage return) are
  neither FHIR string content nor XML, so a narrative holding one would not be valid
  XHTML: such a string anywhere in a JSON body is refused with 422 naming its element,
  and in a query parameter, form field or path segment with 400 naming the parameter.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Any

from flask import Flask, g, request
from werkzeug.exceptions import RequestEntityTooLarge

# Far deeper than any valid resource (a CarePlan with extensions in its activities' details
# is about 12 levels; a transaction Bundle adds 3), far shallower than the parser's limit.
MAX_DEPTH = 100
# Numbers whose digits alone exceed this are no value any element holds.
MAX_NUMBER_DIGITS = 40
JSON_TYPES = frozenset({"application/json", "application/fhir+json", "application/json-patch+json"})
_TOO_LARGE = "ipt.body_too_large"
# Read and thrown away past the limit so that the client, still sending, gets the 413
# instead of a reset connection; beyond this the connection is simply closed.
_DISCARD_LIMIT = 64 * 1024 * 1024
_CHUNK = 64 * 1024
# A JSON string: its content is not JSON structure.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# What JSON text must contain for a parsed string to hold a control character or a
# surrogate (JSON writes neither unescaped).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:00[01][0-9a-fA-F]|[dD][89a-fA-F])")
UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_UNSTORABLE_MESSAGE = {
    "\x00": "contains a NUL character (U+0000), which cannot be stored",
}
_CONTROL_MESSAGE = "contains the control character {code}, which FHIR text and XHTML cannot hold"
_SURROGATE_MESSAGE = (
    "contains a lone UTF-16 surrogate ({code}), which is not a character and cannot be stored"
)

Path = tuple[str | int, ...]


class BodyError(Exception):
    """A body or parameter refused before any route read it: its status and the element.

    ``errors`` holds (path, message) pairs; a path is the element's keys and indexes
    from the body's root, or ``(name,)`` for a parameter.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[tuple[Path, str]] | None = None,
        location: str = "json",
        root: Any = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.location = location
        # The body's resourceType, if any: FHIR names elements from it.
        self.resource_type = root.get("resourceType") if isinstance(root, dict) else None


# --- the WSGI level: the body's size ------------------------------------------------------


class BodyLimit:
    """WSGI middleware: read the body once, at most ``limit`` bytes, whatever its framing.

    The app then sees a body with an exact ``Content-Length``. A body over the limit is
    not given to the app at all: the request is marked, and :func:`install`'s first hook
    answers it 413 in the route's own error format.
    """

    def __init__(self, app: Callable[..., Any], limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        limit = self.limit()
        stream = environ.get("wsgi.input")
        length_header = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if stream is not None and (length_header or chunked):
            body, too_large = _read(stream, length_header, chunked, limit)
            if too_large:
                environ[_TOO_LARGE] = True
                body = b""
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)


def _read(stream: Any, length_header: str, chunked: bool, limit: int) -> tuple[bytes, bool]:
    """(the body, whether it is over ``limit``); an over-long body is read and discarded."""
    length: int | None = None
    if not chunked:
        try:
            length = max(int(length_header), 0)
        except ValueError:
            length = 0  # as Werkzeug reads an unparsable Content-Length: no body
    if length is not None and length > limit:
        _discard(stream, length)
        return b"", True
    wanted = limit + 1 if length is None else length
    parts, size = [], 0
    while size < wanted:
        part = stream.read(min(_CHUNK, wanted - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        _discard(stream, _DISCARD_LIMIT)
        return b"", True
    return b"".join(parts), False


def _discard(stream: Any, length: int) -> None:
    """Read and drop what the client is still sending (at most ``_DISCARD_LIMIT`` bytes)."""
    remaining = min(length, _DISCARD_LIMIT)
    while remaining > 0:
        part = stream.read(min(_CHUNK, remaining))
        if not part:
            break
        remaining -= len(part)


# --- the JSON body --------------------------------------------------------------------------


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (strings skipped)."""
    structure = _STRING.sub('""', text) if '"' in text else text
    brackets = _BRACKETS.findall(structure)
    opening = sum(1 for b in brackets if b in "[{")
    if opening <= MAX_DEPTH:
        return opening
    return max(accumulate(_DEPTH_STEP[b] for b in brackets), default=0)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > MAX_NUMBER_DIGITS + 10:
        raise ValueError(f"the number {text[:20]}… is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"the number {text[:20]}… has more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes) -> Any:
    """Parse a JSON body with the checks of this module; raise :class:`BodyError`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(
            400, f"the body is not UTF-8: invalid byte at offset {error.start}"
        ) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise BodyError(400, "the body is empty: send a JSON document")
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise BodyError(
            400, f"the body is nested {depth} levels deep; at most {MAX_DEPTH} are accepted"
        )
    try:
        value = json.loads(text, parse_float=_float, parse_int=_int, parse_constant=_constant)
    except json.JSONDecodeError as error:
        raise BodyError(
            400,
            f"the body is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}",
        ) from None
    except ValueError as error:
        raise BodyError(400, f"the body is not valid JSON: {error}") from None
    if _UNSTORABLE_ESCAPE.search(text):
        problems = [
            (path, message)
            for path, text in _strings(value)
            if (message := unstorable_message(text)) is not None
        ]
        if problems:
            raise BodyError(422, "the body holds text that cannot be stored", problems, root=value)
    return value


def unstorable_message(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    found = UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    code = f"U+{ord(char):04X}"
    if char in _UNSTORABLE_MESSAGE:
        return _UNSTORABLE_MESSAGE[char]
    if char < " ":
        return _CONTROL_MESSAGE.format(code=code)
    return _SURROGATE_MESSAGE.format(code=code)


def printable(text: str) -> str:
    """``text`` with every character a record cannot hold as its ``\\uXXXX`` escape, to
    name it in an error."""
    return UNSTORABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _strings(value: Any) -> Iterator[tuple[Path, str]]:
    """Every string of a parsed JSON value (object keys included) with its path."""
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield (*path, key), key
                stack.append(((*path, key), child))
        elif isinstance(item, list):
            stack.extend(((*path, index), child) for index, child in enumerate(item))


def json_body() -> Any:
    """The request's JSON body, parsed and checked once per request."""
    if "ipt_json_body" not in g:
        g.ipt_json_body = parse_json(request.get_data(cache=True))
    return g.ipt_json_body


def is_json() -> bool:
    return request.mimetype in JSON_TYPES or request.mimetype.endswith("+json")


# --- parameters -----------------------------------------------------------------------------


def _parameters() -> Iterable[tuple[str, str, str]]:
    """(location, name, value) of every text parameter of the request."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str):
            yield "path", name, value
    for name, value in request.args.items(multi=True):
        yield "query", name, value
    if request.mimetype == "application/x-www-form-urlencoded":
        for name, value in request.form.items(multi=True):
            yield "form", name, value


def _check_parameters() -> None:
    for location, name, value in _parameters():
        for text in (name, value):
            message = unstorable_message(text)
            if message:
                raise BodyError(
                    400,
                    f"the {location} parameter {name!r} {message}",
                    [((name,), message)],
                    location=location,
                )


def install(app: Flask) -> None:
    """Check every request's framing and parameters before the other hooks run."""
    app.wsgi_app = BodyLimit(  # type: ignore[method-assign]
        app.wsgi_app, lambda: int(app.config["MAX_CONTENT_LENGTH"])
    )

    @app.before_request
    def check_request() -> None:
        if request.environ.get(_TOO_LARGE):
            raise RequestEntityTooLarge()
        _check_parameters()
