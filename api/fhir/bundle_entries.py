"""The shape of a batch or transaction Bundle, checked before anything reads it.

``check_envelope`` checks the Bundle itself and ``check_entry`` one of its entries: the
entry and its request are objects, every element has its FHIR JSON type, the request's
method and URL say something this server does, and the resource of a POST or PUT is a
valid FHIR R4 resource of the URL's type (``validate_structure``). What the rest of the
Bundle code reads is the :class:`Entry` made here, never the raw JSON, so no wrong type
can reach authorization, ordering or mapping code. Every problem is reported as an
:class:`EntryError` whose expressions name the element (``Bundle.entry[2].request.url``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from werkzeug.datastructures import MultiDict

from api.fhir.http import parse_etag
from api.fhir.resources import PLAN_TYPES, WRITABLE_TYPES, base_url, read_only_reason
from fhir_mappings.apply import FHIR_ID
from fhir_mappings.parse import validate_structure
from fhir_mappings.parse_common import MappingError

METHODS = ("GET", "POST", "PUT", "DELETE")
# The elements FHIR R4 gives Bundle.entry and Bundle.entry.request.
_ENTRY_ELEMENTS = frozenset(
    {"id", "extension", "link", "fullUrl", "resource", "search", "request", "response"}
)
_REQUEST_ELEMENTS = frozenset(
    {"id", "extension", "method", "url", "ifNoneMatch", "ifModifiedSince", "ifMatch", "ifNoneExist"}
)
_REQUEST_STRINGS = ("method", "url", "ifNoneMatch", "ifModifiedSince", "ifMatch", "ifNoneExist")
_ROOT = re.compile(r"\.root(?=[.\[]|$)")
# A conditional reference: a search of a type, relative to the server's base.
_CONDITIONAL = re.compile(r"^(?P<type>[A-Z][A-Za-z]*)\?(?P<query>.*)$", re.DOTALL)


class EntryError(Exception):
    """A Bundle, or one of its entries, failed: the status, issue code and what was wrong.

    ``expressions`` are (FHIRPath, message) pairs, one issue each; ``index`` is the entry
    (None when the failure belongs to no single entry).
    """

    def __init__(
        self,
        index: int | None,
        status: int,
        code: str,
        message: str,
        expressions: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.index, self.status, self.code, self.message = index, status, code, message
        self.expressions = expressions or []

    @classmethod
    def at(cls, index: int | None, status: int, code: str, path: str, message: str) -> EntryError:
        """A failure caused by one element."""
        return cls(index, status, code, f"{path}: {message}", [(path, message)])


@dataclass(frozen=True)
class Entry:
    """One entry of a Bundle, its shape checked. ``resource`` is set for POST and PUT only."""

    index: int
    method: str
    resource_type: str
    resource_id: str | None
    query: MultiDict[str, str]
    full_url: str | None
    resource: dict[str, Any] | None
    if_match: int | None
    if_none_exist: MultiDict[str, str] | None
    if_none_match: str | None
    if_modified_since: datetime | None

    @property
    def path(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def conditional(self) -> bool:
        """A conditional create or update: what it writes depends on what it finds."""
        return self.if_none_exist is not None or (self.method == "PUT" and self.resource_id is None)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def check_envelope(body: Any) -> tuple[str, list[Any]]:
    """The Bundle's type (batch or transaction) and its entries, still unchecked."""

    def refuse(path: str, message: str, code: str = "structure") -> EntryError:
        return EntryError.at(None, 400, code, path, message)

    if not isinstance(body, dict):
        raise refuse(
            "Bundle", f"the body must be a Bundle resource (a JSON object), not {_kind(body)}"
        )
    if body.get("resourceType") != "Bundle":
        found = body.get("resourceType")
        raise refuse("Bundle.resourceType", f"must be 'Bundle', not {found!r}", "invalid")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise refuse("Bundle.type", f"must be the string batch or transaction, not {_kind(kind)}")
    if kind not in ("batch", "transaction"):
        raise refuse(
            "Bundle.type", f"this endpoint takes a batch or transaction, not {kind!r}", "invalid"
        )
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise refuse("Bundle.entry", f"must be a list of entries, not {_kind(entries)}")
    return kind, entries


def _split_url(index: int, url: str) -> tuple[str, str | None, MultiDict[str, str]]:
    """(type, id or None, query) of a request URL, relative or under this server's base."""
    path = f"Bundle.entry[{index}].request.url"
    try:
        parts = urlsplit(url)
    except ValueError as error:  # a malformed host, such as "http://["
        raise EntryError.at(index, 400, "invalid", path, f"is not a URL: {error}") from None
    if parts.scheme or parts.netloc:
        if not url.startswith(base_url() + "/"):
            raise EntryError.at(index, 400, "invalid", path, "is not a URL of this server")
        parts = urlsplit(url[len(base_url()) + 1 :])
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not segments or segments[0] not in PLAN_TYPES:
        raise EntryError.at(
            index,
            400,
            "not-supported",
            path,
            f"{url!r} does not name a type this server serves ({', '.join(PLAN_TYPES)})",
        )
    if len(segments) > 2:
        raise EntryError.at(
            index, 400, "not-supported", path, f"{url!r}: only type and type/id URLs are supported"
        )
    resource_id = segments[1] if len(segments) == 2 else None
    if resource_id is not None and not FHIR_ID.match(resource_id):
        raise EntryError.at(index, 400, "invalid", path, f"{resource_id!r} is not a FHIR id")
    return segments[0], resource_id, MultiDict(parse_qsl(parts.query, keep_blank_values=True))


def _criteria(index: int, element: str, text: str) -> MultiDict[str, str]:
    params = MultiDict(parse_qsl(text.removeprefix("?"), keep_blank_values=True))
    if not params:
        raise EntryError.at(
            index, 400, "invalid", f"Bundle.entry[{index}].request.{element}", "has no criteria"
        )
    return params


def _check_keys(index: int, path: str, value: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in value:
        if key == "modifierExtension":
            raise EntryError.at(
                index, 400, "not-supported", f"{path}.{key}", "is not understood by this server"
            )
        if key.removeprefix("_") not in allowed:
            raise EntryError.at(
                index, 400, "structure", f"{path}.{key}", "is not an element of a Bundle entry"
            )


def check_entry(index: int, raw: Any) -> Entry:
    """Check one entry's shape and resource; raise EntryError naming what is wrong."""
    path = f"Bundle.entry[{index}]"

    def refuse(
        element: str, message: str, status: int = 400, code: str = "structure"
    ) -> EntryError:
        return EntryError.at(index, status, code, f"{path}{element}", message)

    if not isinstance(raw, dict):
        raise refuse("", f"an entry is a JSON object, not {_kind(raw)}")
    _check_keys(index, path, raw, _ENTRY_ELEMENTS)
    req = raw.get("request")
    if req is None:
        raise refuse(".request", "is required in a batch or transaction (bdl-3)")
    if not isinstance(req, dict):
        raise refuse(".request", f"must be an object, not {_kind(req)}")
    _check_keys(index, f"{path}.request", req, _REQUEST_ELEMENTS)
    for name in _REQUEST_STRINGS:
        if name in req and not isinstance(req[name], str):
            raise refuse(f".request.{name}", f"must be a string, not {_kind(req[name])}")
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise refuse(".fullUrl", f"must be a string, not {_kind(full_url)}")
    method, url = req.get("method"), req.get("url")
    if not method:
        raise refuse(".request.method", "is required")
    if method not in METHODS:
        raise refuse(
            ".request.method",
            f"{method!r} is not supported: use {', '.join(METHODS)}",
            code="not-supported",
        )
    if not url:
        raise refuse(".request.url", "is required")
    resource_type, resource_id, query = _split_url(index, url)
    _check_url(index, method, resource_id, query)
    if method != "GET" and resource_type not in WRITABLE_TYPES:
        raise refuse(".request.method", read_only_reason(resource_type), 405, "not-supported")
    for name, methods in (
        ("ifMatch", ("PUT", "DELETE")),
        ("ifNoneExist", ("POST",)),
        ("ifNoneMatch", ("GET",)),
        ("ifModifiedSince", ("GET",)),
    ):
        if req.get(name) is not None and method not in methods:
            raise refuse(f".request.{name}", f"does not apply to {method}")
    if_match = None
    if req.get("ifMatch") is not None:
        if_match = parse_etag(req["ifMatch"])
        if if_match is None:
            raise refuse(".request.ifMatch", f'{req["ifMatch"]!r} is not a version ETag (W/"3")')
    if_none_exist = None
    if req.get("ifNoneExist") is not None:
        if_none_exist = _criteria(index, "ifNoneExist", req["ifNoneExist"])
    if_modified_since = None
    if req.get("ifModifiedSince") is not None:
        try:
            if_modified_since = datetime.fromisoformat(req["ifModifiedSince"])
        except ValueError:
            if_modified_since = None
        if if_modified_since is None or if_modified_since.tzinfo is None:
            raise refuse(".request.ifModifiedSince", "is not a FHIR instant with a time zone")
    if (req.get("ifNoneMatch") is not None or if_modified_since) and resource_id is None:
        raise refuse(".request", "a conditional read names the resource (type/id)")
    resource = None
    if method in ("POST", "PUT"):
        resource = _check_resource(index, raw.get("resource"), resource_type)
        if resource_id is not None and resource.get("id") != resource_id:
            raise refuse(
                ".resource.id", f"{resource.get('id')!r} is not the request URL's {resource_id!r}"
            )
    return Entry(
        index=index,
        method=method,
        resource_type=resource_type,
        resource_id=resource_id,
        query=query,
        full_url=full_url,
        resource=resource,
        if_match=if_match,
        if_none_exist=if_none_exist,
        if_none_match=req.get("ifNoneMatch"),
        if_modified_since=if_modified_since,
    )


def _check_url(
    index: int, method: str, resource_id: str | None, query: MultiDict[str, str]
) -> None:
    path = f"Bundle.entry[{index}].request.url"
    if method == "POST" and (resource_id is not None or query):
        raise EntryError.at(index, 400, "invalid", path, "a POST names the type only")
    if method == "PUT" and (resource_id is None) == (not query):
        raise EntryError.at(
            index, 400, "invalid", path, "a PUT names the resource (type/id) or a search (type?…)"
        )
    if method == "DELETE" and resource_id is None:
        raise EntryError.at(
            index,
            400,
            "not-supported",
            path,
            "conditional delete is not supported: name the resource",
        )
    if method == "DELETE" and query:
        raise EntryError.at(index, 400, "invalid", path, "a DELETE takes no parameters")


def _check_resource(index: int, resource: Any, resource_type: str) -> dict[str, Any]:
    """The entry's resource, a valid FHIR R4 resource of the URL's type."""
    path = f"Bundle.entry[{index}].resource"
    if resource is None:
        raise EntryError.at(index, 400, "structure", path, "is required for POST and PUT")
    if not isinstance(resource, dict):
        raise EntryError.at(
            index, 400, "structure", path, f"must be an object, not {_kind(resource)}"
        )
    try:
        validate_structure(resource, resource_type)
    except MappingError as error:
        raise mapping_failure(index, error) from None
    return resource


def mapping_failure(index: int, error: MappingError) -> EntryError:
    """A MappingError of an entry's resource, its paths under ``Bundle.entry[i].resource``."""
    problems = [(in_entry(index, path), message) for path, message in error.problems]
    text = "; ".join(f"{path}: {message}" for path, message in problems)
    return EntryError(index, 422, "processing", text, problems)


def in_entry(index: int, path: str) -> str:
    """``CarePlan.subject`` of entry 2 -> ``Bundle.entry[2].resource.subject``."""
    # The validator's name for a whole data type given the wrong JSON type is not an element.
    path = _ROOT.sub("", path)
    head, dot, rest = path.partition(".")
    if head not in PLAN_TYPES:
        return f"Bundle.entry[{index}].resource" + (f".{path}" if path else "")
    return f"Bundle.entry[{index}].resource" + (f".{rest}" if dot else "")


def conditional_reference(reference: str) -> tuple[str, str] | None:
    """(type, query) of a conditional reference (``CarePlan?identifier=s|v``), else None."""
    if reference.startswith(base_url() + "/"):
        reference = reference[len(base_url()) + 1 :]
    found = _CONDITIONAL.match(reference)
    return (found["type"], found["query"]) if found else None


def rewrite(value: Any, path: str, resolve: Callable[[str, str], str]) -> Any:
    """``value`` with every Reference.reference replaced by ``resolve(path, reference)``."""
    if isinstance(value, dict):
        return {
            key: resolve(f"{path}.{key}", item)
            if key == "reference" and isinstance(item, str)
            else rewrite(item, f"{path}.{key.removeprefix('_')}", resolve)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [rewrite(item, f"{path}[{i}]", resolve) for i, item in enumerate(value)]
    return value


def references(resource: dict[str, Any] | None) -> list[str]:
    """Every Reference.reference of a resource."""
    found: list[str] = []

    def collect(_path: str, reference: str) -> str:
        found.append(reference)
        return reference

    if resource is not None:
        rewrite(resource, "", collect)
    return found
