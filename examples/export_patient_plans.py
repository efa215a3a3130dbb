"""Export every IPT care plan of one patient, with its goals, homework and sessions, as JSON.

Usage::

    python examples/export_patient_plans.py Patient/123 --base-url http://127.0.0.1:8000 \\
        [--output FILE] [--page-size N] [--timeout SECONDS]

The patient's plans are listed with ``GET /api/v1/care-plans?patient=Patient/123`` (following
``links.next`` through every page); for each plan its goals, homework and sessions are read the
same way. One JSON document is written to FILE, or to standard output without ``--output``::

    {
      "patient": "Patient/123",
      "exported_at": "2026-01-05T10:30:00+00:00",
      "care_plans": [
        {...the plan as the API returns it..., "goals": [...], "homework": [...],
         "sessions": [...]}
      ]
    }

Deleted plans are not exported. The file is only written once everything has been read: on
an HTTP error nothing is written, the error is printed and the exit status is 1.

Only ``requests`` is needed besides the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

PLANS_PATH = "/api/v1/care-plans"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
PAGE_SIZE = 100  # the largest page the service serves: the fewest requests
PARTS = ("goals", "homework", "sessions")


class ExportError(Exception):
    """The service answered with an error or could not be reached."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export one patient's IPT care plans with their goals, homework and "
        "sessions as JSON.",
    )
    parser.add_argument("patient", help="the patient reference, e.g. Patient/123")
    parser.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"where the service runs (default {DEFAULT_BASE_URL})",
    )
    parser.add_argument("--output", "-o", help="file to write (default: standard output)")
    parser.add_argument(
        "--page-size",
        type=int,
        default=PAGE_SIZE,
        help=f"items asked for per request, 1-{PAGE_SIZE} (default {PAGE_SIZE})",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each request (30)"
    )
    return parser.parse_args(argv)


def describe_failure(response: requests.Response) -> str:
    """The status and the problem details of an error response."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict) or not problem.get("detail"):
        return f"HTTP {response.status_code} {response.reason}"
    errors = [f"{e.get('field', '?')}: {e.get('message', '')}" for e in problem.get("errors") or []]
    return "; ".join([f"HTTP {response.status_code}: {problem['detail']}", *errors])


def access_token() -> str:
    """The access token in IPT_TOKEN, e.g. from `ipt-careplans token --client NAME`."""
    token = os.environ.get("IPT_TOKEN", "").strip()
    if not token:
        raise SystemExit("set IPT_TOKEN to an access token: ipt-careplans token --client NAME")
    return token


class Exporter:
    """Reads pages of the API through one HTTP session."""

    def __init__(self, base_url: str, timeout: float, page_size: int = PAGE_SIZE) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.page_size = page_size
        self.http = requests.Session()
        self.http.headers["Accept"] = "application/json"
        self.http.headers["Authorization"] = f"Bearer {access_token()}"

    def url(self, link: str) -> str:
        """An absolute URL for a link of the API (they are paths such as /api/v1/...)."""
        return link if urlsplit(link).scheme else self.base_url + link

    def get(self, url: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self.http.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as error:
            raise ExportError(f"GET {url} failed: {error}") from error
        if response.status_code != 200:
            raise ExportError(f"GET {response.url} answered {describe_failure(response)}")
        try:
            return response.json()
        except ValueError as error:
            raise ExportError(f"GET {response.url} did not answer JSON") from error

    def items(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a paginated list, following ``links.next`` to the last page."""
        url: str | None = self.url(path)
        params = {**(params or {}), "page_size": self.page_size}
        while url:
            page = self.get(url, params)
            yield from page["items"]
            following = (page.get("links") or {}).get("next")
            url = self.url(following) if following else None
            params = None  # the next link carries every query parameter

    def plans(self, patient: str) -> list[dict[str, Any]]:
        """The patient's plans, each with its goals, homework and sessions."""
        exported: list[dict[str, Any]] = []
        seen: set[str] = set()
        for plan in self.items(PLANS_PATH, {"patient": patient}):
            if plan["id"] in seen:  # a plan deleted meanwhile can shift one onto the next page
                continue
            seen.add(plan["id"])
            links = plan.get("links") or {}
            for part in PARTS:
                path = links.get(part) or f"{PLANS_PATH}/{plan['id']}/{part}"
                plan[part] = list(self.items(path))
            exported.append(plan)
        return exported


def export(
    patient: str, base_url: str, timeout: float = 30.0, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    """The export document of one patient."""
    exported_at = datetime.now(UTC).isoformat(timespec="seconds")
    plans = Exporter(base_url, timeout, page_size).plans(patient)
    return {"patient": patient, "exported_at": exported_at, "care_plans": plans}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        document = export(args.patient, args.base_url, args.timeout, args.page_size)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as error:
            print(f"error: cannot write {args.output}: {error}", file=sys.stderr)
            return 1
        count = len(document["care_plans"])
        print(f"{count} care plan(s) of {args.patient} written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
