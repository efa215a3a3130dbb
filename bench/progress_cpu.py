"""CPU time of a plan's progress read, kept and computed, against a FHIR read of its CarePlan.

``python -m bench.progress_cpu [--database-url URL] [--rounds 60] [--scores 40]``

In one process, through Flask's test client, with authentication and audit on as
deployed: one plan with ``--scores`` PHQ-9 totals recorded through the API, then
``--rounds`` rounds of three requests in turn: the progress read served from the cache of
rendered documents (a hit), the progress read with the cache emptied before it (a miss,
what every read cost before the cache), and ``GET /fhir/CarePlan/{id}``. Prints the median
CPU time (``time.process_time``) of each, their ratios, the size of each response, and
the statements SQLAlchemy's events see (the progress transaction's; SQLite counts its
``BEGIN``; the token check, the FHIR read and the audit record run prepared statements on
the driver's cursor, which these events do not see).

CPU time, not wall-clock time, because on a shared machine the wall clock mostly measures
the neighbours. On PostgreSQL the server's own CPU is not counted (it is in another
process); on SQLite the database runs in this process and is.

SQLite by default, in a temporary file. A PostgreSQL URL is used through a private schema
that is dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from api.app import create_app
from api.auth import keys, tokens
from api.config import Settings
from api.progress import progress_cache
from service.db import Database, normalise_url
from service.models import ApiClient, new_id, utcnow

SCOPES = ["system/*.cruds"]


@contextmanager
def _database(url: str | None) -> Iterator[str]:
    """A database URL to seed: a temporary SQLite file, or a private PostgreSQL schema."""
    if url is None:
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{Path(directory) / 'progress.db'}"
        return
    schema = f"bench_progress_{uuid.uuid4().hex[:8]}"
    admin = Database(url)
    with admin.engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield (
            normalise_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(url: str, rounds: int, scores: int) -> dict[str, Any]:
    database = Database(url)
    database.upgrade()
    settings = Settings(database_url=url, auto_migrate=False, log_level="WARNING")
    app = create_app(settings, database)
    client = ApiClient(
        id=new_id(), name="bench-progress", scopes=" ".join(SCOPES), created_at=utcnow()
    )
    with database.writing() as session:
        session.add(client)
    with app.app_context():
        token, _ = tokens.issue(client, SCOPES, settings, key=keys.key_for(app))
    http = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}

    made = http.post(
        "/api/v1/care-plans",
        json={
            "patient": "Patient/bench",
            "problem_areas": ["grief"],
            "planned_sessions": 16,
            "start_date": "2026-01-05",
            "status": "active",
        },
        headers=headers,
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    plan_id = made.get_json()["id"]
    for n in range(scores):
        recorded = http.post(
            f"/api/v1/care-plans/{plan_id}/administrations",
            json={
                "instrument": "phq-9",
                "administered_on": (date(2026, 1, 5) + timedelta(days=n)).isoformat(),
                "total": 27 - n % 28,
            },
            headers=headers,
        )
        assert recorded.status_code == 201, recorded.get_data(as_text=True)

    progress, fhir = f"/api/v1/care-plans/{plan_id}/progress", f"/fhir/CarePlan/{plan_id}"
    with app.app_context():
        cache = progress_cache()

    statements: list[str] = []

    def count(*_args: Any) -> None:
        statements.append("")

    def timed(path: str, before: Callable[[], None] = lambda: None) -> tuple[float, int, int]:
        before()
        statements.clear()
        start = time.process_time()
        response = http.get(path, headers=headers)
        spent = time.process_time() - start
        assert response.status_code == 200, response.get_data(as_text=True)
        return spent, len(statements), len(response.get_data())

    event.listen(Engine, "before_cursor_execute", count)
    runs: dict[str, list[tuple[float, int, int]]] = {"hit": [], "miss": [], "fhir": []}
    try:
        for _ in range(5):  # warm up every path
            timed(progress, cache.clear), timed(progress), timed(fhir)
        for n in range(rounds):
            order = ["hit", "miss", "fhir"]
            order = order[n % 3 :] + order[: n % 3]
            for kind in order:
                if kind == "hit":
                    runs[kind].append(timed(progress))
                elif kind == "miss":
                    runs[kind].append(timed(progress, cache.clear))
                else:
                    runs[kind].append(timed(fhir))
    finally:
        event.remove(Engine, "before_cursor_execute", count)
        database.dispose()
    cpu = {kind: _median_ms([r[0] for r in found]) for kind, found in runs.items()}
    return {
        "database": "SQLite" if url.startswith("sqlite") else "PostgreSQL",
        "rounds": rounds,
        "scores": scores,
        "cpu_ms": cpu,
        "statements": {kind: found[-1][1] for kind, found in runs.items()},
        "bytes": {kind: found[-1][2] for kind, found in runs.items()},
        "hit_per_fhir": cpu["hit"] / cpu["fhir"],
        "miss_per_fhir": cpu["miss"] / cpu["fhir"],
    }


def report(result: dict[str, Any]) -> str:
    cpu, statements, size = result["cpu_ms"], result["statements"], result["bytes"]
    lines = [
        f"{result['database']}: {result['rounds']} rounds, a plan of {result['scores']} "
        "PHQ-9 scores; median CPU ms per request (statements seen, response bytes)",
        f"  progress, kept (hit):     {cpu['hit']:6.2f}  ({statements['hit']}, {size['hit']})",
        f"  progress, computed (miss): {cpu['miss']:5.2f}  ({statements['miss']}, {size['miss']})",
        f"  FHIR read of the CarePlan: {cpu['fhir']:5.2f}  ({statements['fhir']}, {size['fhir']})",
        f"  hit / FHIR read {result['hit_per_fhir']:.2f}, miss / FHIR read "
        f"{result['miss_per_fhir']:.2f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.progress_cpu", description=__doc__)
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite, temporary)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--scores", type=int, default=40)
    args = parser.parse_args(argv)
    with _database(args.database_url) as url:
        print(report(measure(url, args.rounds, args.scores)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
