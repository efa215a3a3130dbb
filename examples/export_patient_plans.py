"""Export IPT care plans, as JSON with their goals, homework and sessions, or as a CSV table a
clinic administrator opens in a spreadsheet.

Usage::

    export IPT_CLIENT_ID=... IPT_CLIENT_SECRET=...   # an API client's credentials
    .venv/bin/python examples/export_patient_plans.py Patient/123 [--output FILE]
    .venv/bin/python examples/export_patient_plans.py --format csv --output plans.csv
        [--base-url http://127.0.0.1:8000] [--page-size N] [--timeout SECONDS]

With a patient reference only that patient's plans are exported, without one every plan.
They are listed with ``GET /api/v1/care-plans?patient=Patient/123`` (following
``links.next`` through every page); for each plan its goals, homework and sessions are read
the same way.

``--format json`` (the default) writes one document::

    {
      "patient": "Patient/123",
      "exported_at": "2026-01-05T10:30:00+00:00",
      "care_plans": [
        {...the plan as the API returns it..., "goals": [...], "homework": [...],
         "sessions": [...]}
      ]
    }

``--format csv`` writes one row per plan, with the columns ``id``, ``patient``, ``status``,
``problem_areas`` (separated by ``;``), ``planned_sessions``, ``sessions_attended``,
``first_phq9``, ``first_phq9_date``, ``last_phq9`` and ``last_phq9_date`` (the PHQ-9 totals of
the first and the latest attended sessions that have one). A file is written with a byte
order mark, so that spreadsheet programs read it as UTF-8; a cell that a spreadsheet would
take for a formula (``=``, ``+``, ``-``, ``@``) is prefixed with ``'``.

Deleted plans are not exported. The output is only written once everything has been read: on
an HTTP error nothing is written, the error is printed and the exit status is 1.

The script takes its own access token with the client's credentials and renews it while it
runs (see careplans_api.py); the client needs the scopes ``system/CarePlan.rs
system/Goal.rs``. Only Python's standard library is needed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from careplans_api import ApiError, CarePlansApi, add_connection_options

PLANS_PATH = "/api/v1/care-plans"
PAGE_SIZE = 100  # the largest page the service serves: the fewest requests
PARTS = ("goals", "homework", "sessions")
SCOPE = "system/CarePlan.rs system/Goal.rs"
CSV_COLUMNS = (
    "id",
    "patient",
    "status",
    "problem_areas",
    "planned_sessions",
    "sessions_attended",
    "first_phq9",
    "first_phq9_date",
    "last_phq9",
    "last_phq9_date",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export IPT care plans (one patient's, or every plan) as JSON with their "
        "goals, homework and sessions, or as a CSV table.",
    )
    parser.add_argument(
        "patient", nargs="?", help="the patient reference, e.g. Patient/123 (default: all)"
    )
    parser.add_argument(
        "--format", choices=("json", "csv"), default="json", help="json (default) or csv"
    )
    parser.add_argument("--output", "-o", help="file to write (default: standard output)")
    parser.add_argument(
        "--page-size",
        type=int,
        default=PAGE_SIZE,
        help=f"items asked for per request, 1-{PAGE_SIZE} (default {PAGE_SIZE})",
    )
    add_connection_options(parser, SCOPE)
    return parser.parse_args(argv)


class Exporter:
    """Reads the plans and their records through the API."""

    def __init__(self, api: CarePlansApi, page_size: int = PAGE_SIZE) -> None:
        self.api = api
        self.page_size = page_size

    def plans(self, patient: str | None) -> list[dict[str, Any]]:
        """The plans (of the patient, if one is given), each with its goals, homework and
        sessions."""
        exported: list[dict[str, Any]] = []
        seen: set[str] = set()
        query: dict[str, Any] = {"page_size": self.page_size}
        if patient:
            query["patient"] = patient
        for plan in self.api.items(PLANS_PATH, query):
            if plan["id"] in seen:  # a plan deleted meanwhile can shift one onto the next page
                continue
            seen.add(plan["id"])
            links = plan.get("links") or {}
            for part in PARTS:
                path = links.get(part) or f"{PLANS_PATH}/{plan['id']}/{part}"
                plan[part] = list(self.api.items(path, {"page_size": self.page_size}))
            exported.append(plan)
        return exported


def export(patient: str | None, api: CarePlansApi, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """The export document."""
    exported_at = datetime.now(UTC).isoformat(timespec="seconds")
    plans = Exporter(api, page_size).plans(patient)
    return {"patient": patient, "exported_at": exported_at, "care_plans": plans}


def plan_row(plan: dict[str, Any]) -> dict[str, Any]:
    """One plan as a row of the CSV table."""
    attended = [s for s in plan["sessions"] if s.get("status") == "attended"]
    scored = sorted(
        (s for s in attended if s.get("phq9_total") is not None), key=lambda s: s["number"]
    )
    first, last = (scored[0], scored[-1]) if scored else ({}, {})
    return {
        "id": plan["id"],
        "patient": plan["patient"],
        "status": plan["status"],
        "problem_areas": ";".join(plan.get("problem_areas") or []),
        "planned_sessions": plan.get("planned_sessions"),
        "sessions_attended": len(attended),
        "first_phq9": first.get("phq9_total"),
        "first_phq9_date": first.get("date"),
        "last_phq9": last.get("phq9_total"),
        "last_phq9_date": last.get("date"),
    }


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula, made plain text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def as_csv(document: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for plan in document["care_plans"]:
        row = plan_row(plan)
        writer.writerow({name: spreadsheet_safe(value) for name, value in row.items()})
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    api = CarePlansApi.from_args(args)
    try:
        document = export(args.patient, api, args.page_size)
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.format == "csv":
        text, encoding = as_csv(document), "utf-8-sig"
    else:
        text, encoding = json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8"
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding=encoding, newline="") as file:
            file.write(text)
    except OSError as error:
        print(f"error: cannot write {args.output}: {error}", file=sys.stderr)
        return 1
    count = len(document["care_plans"])
    whose = f" of {args.patient}" if args.patient else ""
    print(f"{count} care plan(s){whose} written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
