"""No phase's status ever moves backwards, whatever sessions and renegotiations come.

A property over real HTTP: hypothesis draws a contract and a sequence of steps, each
either a session attended (a later number than the last, maybe skipping some) or a
renegotiated session count. After every step, each phase's status is at least what it
was (not-started < active < completed); a renegotiation that cannot keep that is refused
with 422 and changes nothing. The course also stays in order: the phase holding the last
attended session is active and every phase before it completed.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from conftest import Client, plan_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

RANK = {"not-started": 0, "active": 1, "completed": 2}
START = date(2026, 1, 5)

Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("attend"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("renegotiate"), st.integers(min_value=4, max_value=20)),
    ),
    min_size=1,
    max_size=14,
)


def phases(client: Client, plan: dict[str, Any]) -> list[dict[str, Any]]:
    return list(client.get(plan_url(plan, "phases")).json()["items"])


def statuses(items: list[dict[str, Any]]) -> dict[str, str]:
    return {p["code"]: p["status"] for p in items}


def assert_in_order(items: list[dict[str, Any]], last_attended: int | None) -> None:
    if last_attended is None:
        return
    ordered = sorted(items, key=lambda p: p["start_session"])
    holding = next(
        i for i, p in enumerate(ordered) if p["start_session"] <= last_attended <= p["end_session"]
    )
    assert ordered[holding]["status"] == "active", ordered
    assert all(p["status"] == "completed" for p in ordered[:holding]), ordered


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    variant=st.sampled_from(["standard", "brief", "maintenance"]),
    planned=st.integers(min_value=8, max_value=16),
    plan_steps=steps,
)
def test_no_phase_status_moves_backwards(
    client: Client, variant: str, planned: int, plan_steps: list[Step]
) -> None:
    plan = client.create_plan(variant=variant, planned_sessions=planned)
    last: int | None = None
    # Only these steps change the phases: what was read after one is what the next finds.
    now = phases(client, plan)
    seen = statuses(now)
    for kind, value in plan_steps:
        if kind == "attend":
            number = (last or 0) + 1 + value
            if number > planned:
                continue
            when = (START + timedelta(weeks=number - 1)).isoformat()
            response = client.post(
                plan_url(plan, "sessions"),
                json={"number": number, "date": when, "status": "attended"},
            )
            assert response.status_code == 201, response.text
            last = number
        else:
            before = now
            response = client.patch(plan_url(plan), json={"planned_sessions": value})
            if response.status_code == 422:
                assert response.json()["errors"][0]["field"] == "planned_sessions"
                assert phases(client, plan) == before
                continue
            assert response.status_code == 200, response.text
            planned = value
        now = phases(client, plan)
        for code, status in statuses(now).items():
            assert RANK[status] >= RANK[seen[code]], (kind, value, seen, statuses(now))
        assert_in_order(now, last)
        seen = statuses(now)
