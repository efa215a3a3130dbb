"""Create IPT care plans for a list of patients read from a CSV file.

Usage::

    export IPT_CLIENT_ID=... IPT_CLIENT_SECRET=...   # an API client's credentials
    .venv/bin/python examples/create_plans_from_csv.py examples/plans.csv \\
        [--base-url http://127.0.0.1:8000] [--actor NAME] [--identifier-system URI]

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

The script takes its own access token with the client's credentials and renews it while it
runs (see careplans_api.py); the client needs the scopes ``system/CarePlan.cs`` (create and
search plans). Only Python's standard library is needed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from typing import Any

from careplans_api import ApiError, CarePlansApi, add_connection_options

PLANS_PATH = "/api/v1/care-plans"
DEFAULT_IDENTIFIER_SYSTEM = "urn:ipt-careplans:example-clinic"
SCOPE = "system/CarePlan.cs"
REQUIRED_COLUMNS = ("patient", "problem_areas", "start_date")
OPTIONAL_TEXT_COLUMNS = ("variant", "therapist")


class RowError(Exception):
    """A row that could not be created; the message says why."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Create IPT care plans from a CSV file (one plan per row).",
    )
    parser.add_argument("csv_file", help="CSV file with a header row")
    parser.add_argument("--actor", help="your name, sent as X-Actor and recorded with the plans")
    parser.add_argument(
        "--identifier-system",
        default=DEFAULT_IDENTIFIER_SYSTEM,
        help=f"URI of the clinic's identifiers (default {DEFAULT_IDENTIFIER_SYSTEM})",
    )
    add_connection_options(parser, SCOPE)
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


class PlanCreator:
    """Creates the plans of CSV rows."""

    def __init__(self, api: CarePlansApi, system: str) -> None:
        self.api = api
        self.system = system

    def find(self, identifier: str) -> str | None:
        """The id of the plan with this identifier in the clinic's system, if there is one."""
        query = {"identifier": f"{self.system}|{identifier}", "page_size": "1"}
        response = self.api.request("GET", PLANS_PATH, params=query)
        if response.status != 200:
            raise RowError(f"looking up identifier {identifier!r}: {response.failure()}")
        items = response.json()["items"]
        return str(items[0]["id"]) if items else None

    def create(self, row: dict[str, Any]) -> str:
        """``created <id>`` or ``exists <id>`` for one row; RowError when it fails."""
        identifier = cell(row, "identifier")
        if identifier:
            existing = self.find(identifier)
            if existing:
                return f"exists {existing}"
        response = self.api.request("POST", PLANS_PATH, json_body=plan_body(row, self.system))
        if response.status == 201:
            return f"created {response.json()['id']}"
        if response.status == 409 and identifier:
            # Someone else may have created it since the look-up: then it exists.
            existing = self.find(identifier)
            if existing:
                return f"exists {existing}"
        raise RowError(response.failure())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    headers = {"X-Actor": args.actor} if args.actor else {}
    api = CarePlansApi.from_args(args, headers=headers)
    try:
        api.current_token()  # wrong credentials stop the script before the first row
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    creator = PlanCreator(api, args.identifier_system)
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
                except (RowError, ApiError) as error:
                    failed += 1
                    print(f"error line {line}: {error}", flush=True)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        print(f"error: cannot read {args.csv_file}: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
