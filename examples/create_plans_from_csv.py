"""Create IPT care plans for a list of patients read from a CSV file.

Usage::

    python examples/create_plans_from_csv.py plans.csv --base-url http://127.0.0.1:8000 \\
        [--actor NAME] [--identifier-system URI] [--timeout SECONDS]

The CSV file has a header row naming its columns (in any order):

    patient           the EHR's Patient reference, e.g. ``Patient/123`` (required)
    problem_areas     one or two problem areas separated by ``;`` (primary first), e.g.
                      ``role-dispute;interpersonal-deficits`` (required)
    start_date        YYYY-MM-DD (required)
    planned_sessions  number of sessions in the treatment contract (optional: variant default)
    variant           standard, brief, adolescent, group or maintenance (optional)
    therapist         e.g. ``Practitioner/42`` (optional)
    identifier        the clinic's own id for the plan (optional)

For example::

    patient,problem_areas,planned_sessions,start_date,variant,therapist,identifier
    Patient/123,grief,12,2026-01-05,,Practitioner/42,IPT-2026-0001
    Patient/124,role-dispute;role-transition,,2026-01-12,brief,,IPT-2026-0002

Every row becomes one ``POST /api/v1/care-plans``. Running the script again is safe for rows
with an identifier: the plan is first looked up with
``GET /api/v1/care-plans?identifier=<system>|<value>`` and the row is skipped when it exists.
The identifier is stored with the plan in the system given by ``--identifier-system`` (default
``urn:ipt-careplans:example-clinic``; use your clinic's own URI). Rows without an identifier
are created on every run.

One line is printed per row: ``created <id>``, ``exists <id>`` or
``error line N: <what the service answered>`` (N is the line of the CSV file). The script goes
on after an error. The exit status is 0 when no row failed, 1 when at least one did and 2 when
the file itself cannot be used. ``--actor`` is sent as the ``X-Actor`` header and recorded
with every plan created.

Only ``requests`` is needed besides the standard library.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from typing import Any

import requests

PLANS_PATH = "/api/v1/care-plans"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_IDENTIFIER_SYSTEM = "urn:ipt-careplans:example-clinic"
REQUIRED_COLUMNS = ("patient", "problem_areas", "start_date")
OPTIONAL_TEXT_COLUMNS = ("variant", "therapist")


class RowError(Exception):
    """A row that could not be created; the message says why."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Create IPT care plans from a CSV file (one plan per row).",
    )
    parser.add_argument("csv_file", help="CSV file with a header row")
    parser.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"where the service runs (default {DEFAULT_BASE_URL})",
    )
    parser.add_argument("--actor", help="your name, sent as X-Actor and recorded with the plans")
    parser.add_argument(
        "--identifier-system",
        default=DEFAULT_IDENTIFIER_SYSTEM,
        help=f"URI of the clinic's identifiers (default {DEFAULT_IDENTIFIER_SYSTEM})",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each request (30)"
    )
    return parser.parse_args(argv)


def cell(row: dict[str, Any], column: str) -> str:
    """The trimmed text of a cell; empty when the column or the cell is missing."""
    value = row.get(column)
    return value.strip() if isinstance(value, str) else ""


def plan_body(row: dict[str, Any], identifier_system: str) -> dict[str, Any]:
    """The JSON body that creates the plan of one CSV row.

    Values are passed on as they are so that the service, which knows the rules, names any
    invalid field; only a whole-number ``planned_sessions`` is turned into a number.
    """
    body: dict[str, Any] = {
        "patient": cell(row, "patient"),
        "problem_areas": [area.strip() for area in cell(row, "problem_areas").split(";")],
        "start_date": cell(row, "start_date"),
    }
    body["problem_areas"] = [area for area in body["problem_areas"] if area]
    sessions = cell(row, "planned_sessions")
    if sessions:
        body["planned_sessions"] = int(sessions) if sessions.isdigit() else sessions
    for column in OPTIONAL_TEXT_COLUMNS:
        if cell(row, column):
            body[column] = cell(row, column)
    if cell(row, "identifier"):
        body["identifiers"] = [{"system": identifier_system, "value": cell(row, "identifier")}]
    return body


def describe_failure(response: requests.Response) -> str:
    """The status, detail and field errors of an error response (problem+json or not)."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        text = response.text.strip().replace("\n", " ")[:200]
        return f"HTTP {response.status_code} {response.reason}" + (f": {text}" if text else "")
    parts = [f"HTTP {response.status_code} {problem.get('detail') or problem.get('title', '')}"]
    for error in problem.get("errors") or []:
        parts.append(f"{error.get('field', '?')}: {error.get('message', '')}")
    return "; ".join(parts)


def access_token() -> str:
    """The access token in IPT_TOKEN, e.g. from `ipt-careplans token --client NAME`."""
    token = os.environ.get("IPT_TOKEN", "").strip()
    if not token:
        raise SystemExit("set IPT_TOKEN to an access token: ipt-careplans token --client NAME")
    return token


class PlanCreator:
    """Creates the plans of CSV rows through one HTTP session."""

    def __init__(self, base_url: str, actor: str | None, system: str, timeout: float) -> None:
        self.plans_url = base_url.rstrip("/") + PLANS_PATH
        self.system = system
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers["Accept"] = "application/json"
        self.http.headers["Authorization"] = f"Bearer {access_token()}"
        if actor:
            self.http.headers["X-Actor"] = actor

    def find(self, identifier: str) -> str | None:
        """The id of the plan with this identifier in the clinic's system, if there is one."""
        query = {"identifier": f"{self.system}|{identifier}", "page_size": "1"}
        response = self.http.get(self.plans_url, params=query, timeout=self.timeout)
        if response.status_code != 200:
            raise RowError(f"looking up identifier {identifier!r}: {describe_failure(response)}")
        items = response.json()["items"]
        return str(items[0]["id"]) if items else None

    def create(self, row: dict[str, Any]) -> str:
        """``created <id>`` or ``exists <id>`` for one row; RowError when it fails."""
        identifier = cell(row, "identifier")
        if identifier:
            existing = self.find(identifier)
            if existing:
                return f"exists {existing}"
        body = plan_body(row, self.system)
        response = self.http.post(self.plans_url, json=body, timeout=self.timeout)
        if response.status_code == 201:
            return f"created {response.json()['id']}"
        if response.status_code == 409 and identifier:
            # Someone else may have created it since the look-up: then it exists.
            existing = self.find(identifier)
            if existing:
                return f"exists {existing}"
        raise RowError(describe_failure(response))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    creator = PlanCreator(args.base_url, args.actor, args.identifier_system, args.timeout)
    failed = 0
    try:
        with open(args.csv_file, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                print(
                    f"error: {args.csv_file} lacks the column(s) {', '.join(missing)} "
                    f"(the first line must name the columns)",
                    file=sys.stderr,
                )
                return 2
            for row in reader:
                line = reader.line_num
                if not any(cell(row, column) for column in row if column is not None):
                    continue  # a blank line
                try:
                    print(creator.create(row), flush=True)
                except RowError as error:
                    failed += 1
                    print(f"error line {line}: {error}", flush=True)
                except requests.RequestException as error:
                    failed += 1
                    print(f"error line {line}: request failed: {error}", flush=True)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        print(f"error: cannot read {args.csv_file}: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
