"""Plans with a long course of scores, for the progress scenario; and the administration
write, measured in process when the service has no native route for it."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from service.administrations import add_administration, record_administration
from service.db import Database
from service.editing import edit_plan
from service.models import Administration, CarePlan

ACTOR = "bench"
COURSE = 40  # scores in each plan the progress scenario reads


def scored_plans(database: Database, at_least: int = COURSE) -> list[str]:
    """The plans holding at least ``at_least`` live scores."""
    with database.reading() as session:
        return list(
            session.scalars(
                select(Administration.plan_id)
                .where(Administration.deleted_at.is_(None))
                .group_by(Administration.plan_id)
                .having(func.count() >= at_least)
            )
        )


def seed_scores(database: Database, plans: int) -> list[str]:
    """Give ``plans`` active plans a course of :data:`COURSE` PHQ-9 scores each (written as
    the service writes them, one transaction per plan), unless enough have one already."""
    found = scored_plans(database)
    if len(found) >= plans:
        return found
    today = datetime.now(UTC).date()
    with database.reading() as session:
        candidates = session.execute(
            select(CarePlan.id, CarePlan.start_date)
            .where(
                CarePlan.status == "active",
                CarePlan.deleted_at.is_(None),
                CarePlan.id.not_in(found) if found else CarePlan.id.is_not(None),
            )
            .order_by(CarePlan.id)
            .limit(plans - len(found))
        ).all()
    for plan_id, start in candidates:
        span = max(0, (today - start).days)
        with edit_plan(database, plan_id, ACTOR) as edit:
            for n in range(COURSE):
                add_administration(
                    edit,
                    {
                        "instrument": "phq-9",
                        "administered_on": start + timedelta(days=n * span // COURSE),
                        "total": 24 - (n * 20) // COURSE,
                    },
                )
        found.append(plan_id)
    return found


def time_records(database: Database, plan_ids: list[str], seconds: float) -> list[float]:
    """Record total-only PHQ-9 scores on these plans through the service layer, one after
    another for ``seconds``; the latency of each, in seconds."""
    today = datetime.now(UTC).date()
    latencies: list[float] = []
    ends = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < ends:
        plan_id = plan_ids[n % len(plan_ids)]
        begun = time.perf_counter()
        record_administration(
            database,
            plan_id,
            {"instrument": "phq-9", "administered_on": today, "total": n % 28},
            ACTOR,
        )
        latencies.append(time.perf_counter() - begun)
        n += 1
    return latencies


def percentile(latencies: list[float], share: float) -> float:
    ordered = sorted(latencies) or [0.0]
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)


def median_ms(latencies: list[float]) -> float:
    return round(statistics.median(latencies or [0.0]) * 1000, 1)
