"""The printable plan summary, rendered from a plan built through the native API: every
section there, client text escaped, nothing fetched from elsewhere, laid out for print."""

from __future__ import annotations

import base64
import re
import shutil
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from api.progress_chart import ChartBand, ChartInput, ChartPhase, ChartPoint
from api.summary_page import ScoreRow, summary_html
from service.db import Database
from service.errors import NotFound
from tests.conftest import Client, plan_url

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

SCRIPT = '<script>alert("x")</script> & <b>bold</b>'
PRINTED = date(2026, 3, 30)
BANDS = [
    ChartBand(0, 4, "none/minimal"),
    ChartBand(5, 9, "mild"),
    ChartBand(10, 14, "moderate"),
    ChartBand(15, 19, "moderately severe"),
    ChartBand(20, 27, "severe"),
]
SCORES = [
    ScoreRow(date(2026, 1, 5), 1, "PHQ-9", 18, "moderately severe", False),
    ScoreRow(date(2026, 1, 12), 2, "PHQ-9", 15, "moderately severe", True),
]


class Page(HTMLParser):
    """The parts of an HTML page the tests look at: elements, their attributes and text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text_by_section: dict[str, list[str]] = {}
        self.headings: list[tuple[str, str]] = []
        self.section: str | None = None
        self.heading: str | None = None
        self.style = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "section":
            self.section = (attributes.get("class") or "").split()[0]
        if tag in ("h1", "h2", "h3"):
            self.heading = tag
            self.headings.append((tag, ""))
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.section = None
        if tag == self.heading:
            self.heading = None
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style":
            self.style += data
        if self.heading is not None:
            tag, text = self.headings[-1]
            self.headings[-1] = (tag, text + data)
        if self.section is not None:
            self.text_by_section.setdefault(self.section, []).append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.text_by_section.get(section, [])).split())

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attributes for tag, attributes in self.elements if tag == name]


@pytest.fixture
def full_plan(client: Client) -> dict[str, Any]:
    """A role-dispute plan with everything a summary shows, built through the native API."""
    plan = client.create_plan(
        problem_areas=["role-dispute", "role-transition"],
        dispute_stage="impasse",
        formulation=SCRIPT,
        therapist="Practitioner/7",
        relapse_prevention={
            "warning_signs": ["Sleeping badly for a week", "<i>withdrawn</i>"],
            "actions": ["Call a friend the same day"],
            "contacts": [
                {"name": "Sister (Maria)", "relationship": "sister", "telecom": "555"},
                {"name": "Family doctor"},
            ],
        },
    )
    for number, day in ((1, "2026-01-05"), (2, "2026-01-12")):
        response = client.post(
            plan_url(plan, "sessions"), json={"number": number, "date": day, "status": "attended"}
        )
        assert response.status_code == 201, response.text
    renegotiated = client.patch(
        plan_url(plan),
        json={"planned_sessions": 16, "contract_change_reason": "slow <em>response</em>"},
    )
    assert renegotiated.status_code == 200, renegotiated.text
    goal = client.post(
        plan_url(plan, "goals"),
        json={
            "kind": "problem-area",
            "problem_area": "role-dispute",
            "description": "Talk with my partner about <money>",
        },
    )
    assert goal.status_code == 201, goal.text
    homework = client.post(
        plan_url(plan, "homework"),
        json={
            "kind": "observe-interaction",
            "description": "Notice who you talk to & when",
            "assigned_on": "2026-01-12",
            "due_on": "2026-01-19",
        },
    )
    assert homework.status_code == 201, homework.text
    return dict(renegotiated.json())


def chart_for(plan: dict[str, Any]) -> ChartInput:
    return ChartInput(
        title="PHQ-9 over the course",
        subtitle="",
        instrument="PHQ-9",
        min_score=0,
        max_score=27,
        bands=BANDS,
        remission_below=5,
        points=[
            ChartPoint(row.when, row.session_number, row.total, row.band, row.flagged)
            for row in SCORES
        ],
        phases=[ChartPhase("Initial phase", date(2026, 1, 5), None)],
    )


def test_summary_has_every_section_under_one_heading_structure(
    full_plan: dict[str, Any], database: Database
) -> None:
    html = summary_html(database, full_plan["id"], chart_for(full_plan), SCORES, PRINTED)
    page = Page(html)
    assert html.startswith("<!DOCTYPE html>")
    assert page.tags("html") == [{"lang": "en"}]
    assert [tag for tag, _ in page.headings].count("h1") == 1
    assert [text for tag, text in page.headings if tag == "h2"] == [
        "Focus of treatment",
        "Treatment contract",
        "Phases",
        "Goals",
        "Progress",
        "Homework",
        "Relapse-prevention plan",
    ]
    focus = page.text("focus")
    assert "Interpersonal role dispute (primary), stage: impasse" in focus
    assert "Role transition (secondary)" in focus
    contract = page.text("contract")
    assert "16, weekly" in contract and "2 attended" in contract
    assert "slow <em>response</em>" in contract  # the renegotiation and its reason
    assert "first agreement" in contract
    phases = page.text("phases")
    assert "Initial phase 1\N{EN DASH}3" in phases and "Termination phase" in phases
    goals = page.text("goals")
    assert "Talk with my partner about <money>" in goals
    assert "PHQ-9 total score" in goals  # the template's symptom goal and its target
    progress = page.text("progress")
    assert "2026-01-12 2 PHQ-9 15 moderately severe answered above 0" in progress
    assert "Notice who you talk to & when" in page.text("homework")
    relapse = page.text("relapse")
    assert "<i>withdrawn</i>" in relapse
    assert "Sister (Maria) (sister): 555 Family doctor" in relapse
    assert "Printed on 2026-03-30." in html
    assert "Patient/123" in html


def test_client_text_is_shown_as_text_never_as_markup(
    full_plan: dict[str, Any], database: Database
) -> None:
    html = summary_html(database, full_plan["id"], None, None, PRINTED)
    page = Page(html)
    assert page.tags("script") == []
    assert page.tags("b") == [] and page.tags("i") == [] and page.tags("em") == []
    assert SCRIPT in page.text("focus")
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html


def test_chart_is_inline_accessible_svg_and_nothing_is_fetched(
    full_plan: dict[str, Any], database: Database
) -> None:
    html = summary_html(database, full_plan["id"], chart_for(full_plan), SCORES, PRINTED)
    page = Page(html)
    svgs = page.tags("svg")
    assert len(svgs) == 1
    assert svgs[0]["role"] == "img"
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    caption = page.text("progress")
    assert "2 PHQ-9 scores recorded from 2026-01-05 to 2026-01-12." in caption
    # Self-contained: no script, stylesheet, font, image or frame from anywhere.
    for tag in ("script", "link", "img", "iframe", "object", "embed"):
        assert page.tags(tag) == [], tag
    assert not re.search(r"(?i)\b(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "@import" not in page.style and "url(" not in page.style


def test_print_layout_is_a4_with_sensible_page_breaks(
    full_plan: dict[str, Any], database: Database
) -> None:
    style = Page(summary_html(database, full_plan["id"], None, None, PRINTED)).style
    assert re.search(r"@page\s*{[^}]*size:\s*A4", style)
    printed = style[style.index("@media print") :]
    assert re.search(r"h2, h3 {[^}]*break-after: avoid", printed)
    assert re.search(r"tr, li, figure[^{]*{[^}]*break-inside: avoid", printed)
    assert "thead { display: table-header-group; }" in printed


def test_plan_without_scores_chart_goals_or_relapse_plan_says_so(
    client: Client, database: Database
) -> None:
    plan = client.create_plan(default_goals=False)
    page = Page(summary_html(database, plan["id"], None, None, PRINTED))
    assert "No formulation recorded." in page.text("focus")
    assert "Not renegotiated since it was agreed on" in page.text("contract")
    assert "No goals set." in page.text("goals")
    assert "No scores recorded yet." in page.text("progress")
    assert "No homework assigned." in page.text("homework")
    assert "Not written yet." in page.text("relapse")
    assert page.tags("svg") == []


def test_scores_may_be_plain_tuples(plan: dict[str, Any], database: Database) -> None:
    rows = [(date(2026, 1, 5), None, "GAD-7", 12, "moderate")]
    progress = Page(summary_html(database, plan["id"], None, rows, PRINTED)).text("progress")
    assert "2026-01-05 GAD-7 12 moderate" in progress


def test_an_unknown_plan_is_not_found(database: Database) -> None:
    with pytest.raises(NotFound):
        summary_html(database, "no-such-plan", None, None, PRINTED)


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
)
def test_page_prints_on_a4_in_a_browser_with_the_chart_inside_the_page(
    full_plan: dict[str, Any], database: Database, tmp_path: Path
) -> None:
    from selenium import webdriver

    page = tmp_path / "summary.html"
    page.write_text(
        summary_html(database, full_plan["id"], chart_for(full_plan), SCORES, PRINTED),
        encoding="utf-8",
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        driver.set_window_size(800, 1000)
        driver.get(page.as_uri())
        # The chart scales to the text column and keeps its proportions.
        width, height, column = driver.execute_script(
            "const box = document.querySelector('figure svg').getBoundingClientRect();"
            "return [box.width, box.height, document.querySelector('main').clientWidth];"
        )
        assert 0 < width <= column
        assert height == pytest.approx(width * 4.8 / 8, rel=0.02)
        assert driver.execute_script("return document.title").startswith("IPT care plan summary")
        # As a browser's print dialog does: the paper is the one the page's CSS asks for.
        printed = base64.b64decode(
            driver.execute_cdp_cmd("Page.printToPDF", {"preferCSSPageSize": True})["data"]
        )
    finally:
        driver.quit()
    assert printed.startswith(b"%PDF")
    boxes = re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", printed)
    assert boxes, "no page in the printed PDF"
    # A4 is 595 by 842 points: the page's @page rule sets the paper.
    for box_width, box_height in boxes:
        assert float(box_width) == pytest.approx(595.3, abs=1)
        assert float(box_height) == pytest.approx(841.9, abs=1)
