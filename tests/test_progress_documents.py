"""A plan's course drawn (GET …/progress.svg, SVG or PNG) and printed (GET …/summary):
what they show of the recorded scores, their media types, ETags, scopes and compartment."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from conftest import Client, Server, plan_url, token_for
from PIL import Image

from api.progress_chart import FLAG_MARKERS_GID, SCORE_MARKERS_GID
from service.db import Database

SVG_NS = "{http://www.w3.org/2000/svg}"
START = date(2026, 1, 5)


def phq9(total: int, item9: int = 0) -> dict[str, int]:
    """PHQ-9 answers adding up to ``total`` with item 9 answered ``item9``."""
    answers = {f"phq-9-{n}": 0 for n in range(1, 10)}
    answers["phq-9-9"] = item9
    left = total - item9
    for n in range(1, 9):
        answers[f"phq-9-{n}"] = min(3, left)
        left -= answers[f"phq-9-{n}"]
    return answers


def record(client: Client, plan: dict[str, Any], total: int, day: int, item9: int = 0) -> None:
    body = {
        "instrument": "phq-9",
        "administered_on": (START + timedelta(days=day)).isoformat(),
        "answers": phq9(total, item9),
    }
    response = client.post(plan_url(plan, "administrations"), json=body)
    assert response.status_code == 201, response.text


@pytest.fixture
def scored(client: Client) -> dict[str, Any]:
    """A plan with five PHQ-9 scores, the second with item 9 answered above 0."""
    plan = client.create_plan(patient="Patient/charted")
    for day, (total, item9) in enumerate([(19, 0), (17, 1), (14, 0), (9, 0), (4, 0)]):
        record(client, plan, total, day * 7, item9)
    return plan


def markers(svg: bytes, gid: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    group = root.find(f".//{SVG_NS}g[@id='{gid}']")
    return [] if group is None else list(group.iter(f"{SVG_NS}use"))


def test_the_chart_draws_every_recorded_score_and_rings_the_flagged_one(
    client: Client, scored: dict[str, Any]
) -> None:
    response = client.get(plan_url(scored, "progress.svg"))

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    root = ET.fromstring(response.content)
    assert root.get("role") == "img"
    title = root.find(f"{SVG_NS}title")
    desc = root.find(f"{SVG_NS}desc")
    assert title is not None and "PHQ-9" in (title.text or "")
    assert desc is not None
    described = desc.text or ""
    assert described.startswith("5 PHQ-9 scores recorded from 2026-01-05 to 2026-02-02")
    assert "Latest: 4" in described and "1 flagged answer" in described
    assert len(markers(response.content, SCORE_MARKERS_GID)) == 5
    assert len(markers(response.content, FLAG_MARKERS_GID)) == 1


def test_the_chart_is_a_png_when_the_client_prefers_one(
    client: Client, scored: dict[str, Any]
) -> None:
    response = client.get(plan_url(scored, "progress.svg"), headers={"Accept": "image/png"})

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20, "the image is blank"


def test_a_scale_without_scores_draws_an_empty_course(
    client: Client, scored: dict[str, Any]
) -> None:
    response = client.get(plan_url(scored, "progress.svg"), params={"instrument": "gad-7"})

    assert response.status_code == 200, response.text
    assert "GAD-7" in (ET.fromstring(response.content).findtext(f"{SVG_NS}title") or "")
    assert markers(response.content, SCORE_MARKERS_GID) == []


def test_an_unknown_scale_and_an_unservable_accept_are_refused(
    client: Client, scored: dict[str, Any]
) -> None:
    unknown = client.get(plan_url(scored, "progress.svg"), params={"instrument": "bdi-ii"})
    assert unknown.status_code == 422
    assert "instrument" in unknown.text

    for path, accept in (("progress.svg", "application/json"), ("summary", "image/png")):
        refused = client.get(plan_url(scored, path), headers={"Accept": accept})
        assert refused.status_code == 406, (path, refused.text)
        assert refused.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("path", ["progress.svg", "summary"])
def test_the_etag_is_that_of_the_progress(
    client: Client, scored: dict[str, Any], path: str
) -> None:
    """The plan's version and the day (the chart and the page name the day)."""
    first = client.get(plan_url(scored, path))
    progress = client.get(plan_url(scored, "progress"))
    tag = progress.headers["ETag"]
    assert first.headers["ETag"] == tag
    assert tag.startswith(f'"{progress.json()["version"]}-')

    again = client.get(plan_url(scored, path), headers={"If-None-Match": tag})
    assert again.status_code == 304 and not again.content
    version_alone = {"If-None-Match": client.get(plan_url(scored)).headers["ETag"]}
    assert client.get(plan_url(scored, path), headers=version_alone).status_code == 200

    record(client, scored, 3, 40)
    changed = client.get(plan_url(scored, path), headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != tag


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_summary_shows_the_chart_and_every_score(
    client: Client, scored: dict[str, Any]
) -> None:
    response = client.get(plan_url(scored, "summary"))

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/html")
    page = _Text()
    page.feed(response.text)
    text = " ".join(page.text)
    assert page.svgs == 1
    for total in (19, 17, 14, 9, 4):
        assert f"{total}" in text
    assert "Patient/charted" in text


@pytest.mark.parametrize(
    ("path", "scopes", "allowed"),
    [
        ("progress.svg", ["system/CarePlan.rs", "system/Observation.rs"], True),
        ("progress.svg", ["system/CarePlan.rs"], False),
        ("summary", ["system/CarePlan.rs", "system/Goal.rs", "system/Observation.rs"], True),
        ("summary", ["system/CarePlan.rs", "system/Observation.rs"], False),
    ],
)
def test_the_documents_need_read_of_every_type_they_show(
    live: Server,
    database: Database,
    scored: dict[str, Any],
    path: str,
    scopes: list[str],
    allowed: bool,
) -> None:
    caller = Client(live.url, token_for(live, database, scopes))
    answer = caller.get(plan_url(scored, path))
    assert answer.status_code == (200 if allowed else 403), answer.text
    if not allowed:
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        assert "<svg" not in answer.text


@pytest.mark.parametrize("path", ["progress.svg", "summary"])
def test_another_patients_plan_is_not_found(
    live: Server, database: Database, scored: dict[str, Any], path: str
) -> None:
    scopes = ["patient/CarePlan.rs", "patient/Goal.rs", "patient/Observation.rs"]
    caller = Client(live.url, token_for(live, database, scopes, patient="Patient/someone-else"))
    hidden = caller.get(plan_url(scored, path))
    assert hidden.status_code == 404
    assert hidden.json()["detail"] == f"care plan {scored['id']!r} does not exist"
