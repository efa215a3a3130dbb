"""The progress chart: what its SVG says (to a parser and a screen reader) and what its
pixels show, for fixed courses and for any course hypothesis makes up."""

from __future__ import annotations

import io
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from api.progress_chart import (
    BAND_GID_PREFIX,
    DESC_ID,
    FLAG_COLOUR,
    FLAG_MARKERS_GID,
    SCORE_MARKERS_GID,
    TITLE_ID,
    ChartBand,
    ChartInput,
    ChartPhase,
    ChartPoint,
    band_colours,
    render_png,
    render_svg,
)

try:
    import cairosvg
except OSError as missing:  # cairocffi finds no libcairo2 on this machine
    cairosvg = None
    CAIRO_MISSING = f"libcairo2 is not installed (apt-get install libcairo2): {missing}"
else:
    CAIRO_MISSING = ""

SVG = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"

PHQ9_BANDS = [
    ChartBand(0, 4, "none/minimal"),
    ChartBand(5, 9, "mild"),
    ChartBand(10, 14, "moderate"),
    ChartBand(15, 19, "moderately severe"),
    ChartBand(20, 27, "severe"),
]
START = date(2026, 1, 5)
TOTALS = [21, 19, 18, 16, 14, 13, 12, 9, 8, 6, 5, 4]
PHASES = [
    ChartPhase("Initial phase", START, START + timedelta(days=20)),
    ChartPhase("Middle phase", START + timedelta(days=21), START + timedelta(days=55)),
    ChartPhase("Termination phase", START + timedelta(days=56), None),
]


def band_of(total: int, bands: list[ChartBand] = PHQ9_BANDS) -> str:
    return next(band.label for band in bands if band.low <= total <= band.high)


def course(
    totals: list[int] = TOTALS, flagged: frozenset[int] = frozenset(), **fields: object
) -> ChartInput:
    """A weekly PHQ-9 course with these totals; ``flagged`` holds the session numbers
    whose item 9 was answered above 0."""
    points = [
        ChartPoint(START + timedelta(weeks=i), i + 1, total, band_of(total), i + 1 in flagged)
        for i, total in enumerate(totals)
    ]
    values: dict[str, object] = {
        "title": "PHQ-9 over the course",
        "subtitle": "Grief, 12 weekly sessions",
        "instrument": "PHQ-9",
        "min_score": 0,
        "max_score": 27,
        "bands": PHQ9_BANDS,
        "remission_below": 5,
        "points": points,
        "phases": PHASES,
    }
    values.update(fields)
    return ChartInput(**values)  # type: ignore[arg-type]


def parse(svg: bytes) -> ET.Element:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    parser.feed(svg)
    return parser.close()


def group(root: ET.Element, gid: str) -> ET.Element | None:
    return root.find(f".//{SVG}g[@id='{gid}']")


def markers(root: ET.Element, gid: str) -> list[ET.Element]:
    """The marker instances (``<use>``) drawn in the group with this id."""
    found = group(root, gid)
    return [] if found is None else list(found.iter(f"{SVG}use"))


def texts(root: ET.Element) -> list[str]:
    """The chart's words: matplotlib draws text as outlines and names each in a comment."""
    return [str(node.text).strip() for node in root.iter(ET.Comment)]


def rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def pixels(image_bytes: bytes) -> Counter[tuple[int, int, int]]:
    with Image.open(io.BytesIO(image_bytes)) as image:
        rgba = image.convert("RGBA")
        # Transparent pixels (of an SVG drawn without a background) count as white.
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        packed = np.asarray(flat.convert("RGB"), dtype=np.uint32) @ np.array(
            [1 << 16, 1 << 8, 1], dtype=np.uint32
        )
    values, counts = np.unique(packed, return_counts=True)
    return Counter(
        {
            (int(v) >> 16, (int(v) >> 8) & 0xFF, int(v) & 0xFF): int(n)
            for v, n in zip(values, counts, strict=True)
        }
    )


def count_near(counts: Counter[tuple[int, int, int]], colour: str, tolerance: int = 6) -> int:
    target = rgb(colour)
    return sum(
        n
        for pixel, n in counts.items()
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, target, strict=True))
    )


# --- the SVG's structure ------------------------------------------------------------------


def test_svg_is_an_image_named_and_described_for_screen_readers() -> None:
    root = parse(render_svg(course(flagged=frozenset({2, 5}))))
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == f"{TITLE_ID} {DESC_ID}"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.get("id") == TITLE_ID
    assert desc is not None and desc.get("id") == DESC_ID
    # Both come first, where assistive technology looks for them.
    assert [child.tag for child in root][:2] == [f"{SVG}title", f"{SVG}desc"]
    assert title.text == "PHQ-9 over the course: Grief, 12 weekly sessions"
    words = str(desc.text)
    assert "12 PHQ-9 scores recorded from 2026-01-05 to 2026-03-23." in words
    assert "First: 21 (severe) on 2026-01-05 (session 1)." in words
    assert "Latest: 4 (none/minimal) on 2026-03-23 (session 12), down 17 since the first." in (
        words
    )
    assert "1 of 12 below the remission line (5)." in words
    assert "2 flagged answers" in words and "2026-01-12, 2026-02-02" in words
    assert "Middle phase from 2026-01-26 to 2026-03-01" in words


def test_desc_says_when_no_answer_was_flagged() -> None:
    desc = parse(render_svg(course())).find(f"{SVG}desc")
    assert desc is not None
    assert "No flagged answers (Item 9" in str(desc.text)


def test_svg_has_one_marker_per_score_and_one_flag_per_flagged_answer() -> None:
    root = parse(render_svg(course(flagged=frozenset({2, 5, 12}))))
    assert len(markers(root, SCORE_MARKERS_GID)) == len(TOTALS)
    assert len(markers(root, FLAG_MARKERS_GID)) == 3


def test_unflagged_course_draws_no_flag_marker_nor_legend_entry() -> None:
    root = parse(render_svg(course()))
    assert group(root, FLAG_MARKERS_GID) is None
    assert not any("Item 9" in text for text in texts(root))


def test_svg_shades_and_names_every_band() -> None:
    root = parse(render_svg(course()))
    for index, (band, colour) in enumerate(
        zip(PHQ9_BANDS, band_colours(len(PHQ9_BANDS)), strict=True)
    ):
        shaded = group(root, f"{BAND_GID_PREFIX}{index + 1}")
        assert shaded is not None, band
        fill = shaded.find(f"{SVG}path")
        assert fill is not None and colour in str(fill.get("style")), band
    words = texts(root)
    for band in PHQ9_BANDS:
        assert band.label in words
        assert f"({band.low}\N{EN DASH}{band.high})" in words


def test_svg_labels_axes_phases_title_and_legend() -> None:
    words = texts(parse(render_svg(course(flagged=frozenset({3})))))
    for expected in (
        "PHQ-9 over the course",
        "Grief, 12 weekly sessions",
        "PHQ-9 total score",
        "Date of administration",
        "Initial phase",
        "Middle phase",
        "Termination phase",
        "PHQ-9 total",
        "Remission: below 5",
        "Item 9 (self-harm thoughts) answered above 0",
    ):
        assert expected in words, expected


def test_empty_course_renders_a_no_scores_chart() -> None:
    chart = course(totals=[], phases=[])
    root = parse(render_svg(chart))
    assert group(root, "no-scores") is not None
    assert "No PHQ-9 scores recorded yet" in texts(root)
    assert markers(root, SCORE_MARKERS_GID) == []
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text == "No PHQ-9 scores recorded yet."
    # The bands still show what the scale means.
    counts = pixels(render_png(chart))
    for colour in band_colours(len(PHQ9_BANDS)):
        assert count_near(counts, colour, tolerance=0) > 1000


def test_caller_text_is_escaped_in_title_and_desc() -> None:
    chart = course(title='Plan <b>"A"</b> & co', instrument="PHQ-9 <x>")
    root = parse(render_svg(chart))
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.text == 'Plan <b>"A"</b> & co: Grief, 12 weekly sessions'
    assert desc is not None and "12 PHQ-9 <x> scores" in str(desc.text)
    assert root.find(f".//{SVG}b") is None


def test_output_is_deterministic_and_undated() -> None:
    chart = course(flagged=frozenset({4}))
    svg = render_svg(chart)
    assert svg == render_svg(chart)
    assert render_png(chart) == render_png(chart)
    assert b"dc:date" not in svg
    assert b"2026-12" not in svg  # nothing of the day it was drawn


def test_concurrent_renders_in_threads_match_a_render_alone() -> None:
    charts = [course(totals=TOTALS[:n], flagged=frozenset({1})) for n in (3, 7, 12, 1)]
    expected = [render_svg(chart) for chart in charts]
    results: dict[int, bytes] = {}
    failures: list[BaseException] = []

    def draw(index: int) -> None:
        try:
            for _ in range(2):
                results[index] = render_svg(charts[index])
        except BaseException as error:  # handed to the test thread below
            failures.append(error)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(len(charts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert [results[i] for i in range(len(charts))] == expected


def test_a_scale_without_safety_item_draws_and_says_nothing_of_flags() -> None:
    gad7 = [ChartBand(0, 4, "minimal"), ChartBand(5, 9, "mild"), ChartBand(10, 21, "severe")]
    points = [ChartPoint(START, 1, 12, "severe", True), ChartPoint(START, 2, 6, "mild", False)]
    chart = ChartInput("GAD-7", "", "GAD-7", 0, 21, gad7, 5, points, [], flag_label=None)
    root = parse(render_svg(chart))
    assert len(markers(root, SCORE_MARKERS_GID)) == 2
    assert group(root, FLAG_MARKERS_GID) is None
    desc = root.find(f"{SVG}desc")
    assert desc is not None and "flag" not in str(desc.text)
    assert count_near(pixels(render_png(chart)), FLAG_COLOUR, tolerance=40) == 0


def test_a_score_outside_the_scale_widens_the_plot_rather_than_vanish() -> None:
    points = [ChartPoint(START, 1, 30, "beyond", False), ChartPoint(START, 2, -2, "below", False)]
    root = parse(render_svg(course(totals=[], points=points)))
    clips = root.findall(f".//{SVG}clipPath/{SVG}rect")
    assert len(clips) == 1  # the plot area
    top = float(str(clips[0].get("y")))
    bottom = top + float(str(clips[0].get("height")))
    drawn = markers(root, SCORE_MARKERS_GID)
    assert len(drawn) == 2
    for marker in drawn:
        assert top <= float(str(marker.get("y"))) <= bottom


def test_an_impossible_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="max_score"):
        render_svg(course(min_score=10, max_score=10))
    with pytest.raises(ValueError, match="band 'upside'"):
        render_png(course(bands=[ChartBand(9, 3, "upside")]))


# --- pixels -------------------------------------------------------------------------------


def test_png_is_a_drawn_image_with_every_band_colour() -> None:
    png = render_png(course())
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == (1200, 720)
    counts = pixels(png)
    assert len(counts) > 50  # not blank, not one flat colour
    assert count_near(counts, "#ffffff", tolerance=0) < sum(counts.values()) * 0.6
    for colour in band_colours(len(PHQ9_BANDS)):
        assert count_near(counts, colour, tolerance=0) > 1000, colour


def test_png_shows_the_flag_colour_only_when_an_answer_is_flagged() -> None:
    assert count_near(pixels(render_png(course(flagged=frozenset({2})))), FLAG_COLOUR) > 30
    assert count_near(pixels(render_png(course())), FLAG_COLOUR, tolerance=40) == 0


def test_bands_differ_in_greyscale() -> None:
    """Printed without colour, the bands still differ in shade (and are named besides)."""
    with Image.open(io.BytesIO(render_png(course()))) as image:
        grey = Counter(np.asarray(image.convert("L")).ravel().tolist())
    shades = [
        round(0.299 * r + 0.587 * g + 0.114 * b)
        for r, g, b in map(rgb, band_colours(len(PHQ9_BANDS)))
    ]
    assert shades == sorted(shades, reverse=True)
    assert len(set(shades)) == len(shades)
    for shade in shades:
        assert grey[shade] > 1000


@pytest.mark.skipif(cairosvg is None, reason=CAIRO_MISSING)
def test_svg_rasterised_shows_bands_scores_and_flags() -> None:
    assert cairosvg is not None
    flagged = render_svg(course(flagged=frozenset({6})))
    counts = pixels(cairosvg.svg2png(bytestring=flagged))
    assert len(counts) > 50
    for colour in band_colours(len(PHQ9_BANDS)):
        assert count_near(counts, colour, tolerance=0) > 500, colour
    assert count_near(counts, FLAG_COLOUR) > 10
    plain = pixels(cairosvg.svg2png(bytestring=render_svg(course())))
    assert count_near(plain, FLAG_COLOUR, tolerance=40) == 0


# --- any course ---------------------------------------------------------------------------


@st.composite
def bands(draw: st.DrawFn) -> tuple[int, int, list[ChartBand]]:
    """A scale from 0 to its maximum, cut into 1 to 6 contiguous bands."""
    maximum = draw(st.integers(3, 63))
    cuts = sorted(draw(st.sets(st.integers(1, maximum), max_size=5)))
    edges = [0, *cuts, maximum + 1]
    labels = draw(
        st.lists(
            caller_text(20),
            min_size=len(edges) - 1,
            max_size=len(edges) - 1,
        )
    )
    return (
        0,
        maximum,
        [
            ChartBand(low, high - 1, label)
            for low, high, label in zip(edges, edges[1:], labels, strict=False)
        ],
    )


# Caller text no chart may stumble on: formula signs, what XML refuses, comment ends, markup.
AWKWARD_TEXTS = ["$x^2$ costs $", "nul\x00 \ud800 \x1f", "a -- b --> c", "<title>&amp;", "  "]


def caller_text(max_size: int = 60) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size) | st.sampled_from(AWKWARD_TEXTS)


@st.composite
def courses(draw: st.DrawFn) -> ChartInput:
    low, high, scale = draw(bands())
    days = draw(st.lists(st.dates(date(2020, 1, 1), date(2030, 12, 31)), min_size=0, max_size=40))
    points = []
    for when in days:
        total = draw(st.integers(low, high))
        band = next(b.label for b in scale if b.low <= total <= b.high)
        session = draw(st.none() | st.integers(1, 60))
        points.append(ChartPoint(when, session, total, band, draw(st.booleans())))
    phase_days = sorted(draw(st.lists(st.dates(date(2020, 1, 1), date(2030, 12, 31)), max_size=4)))
    phases = [
        ChartPhase(
            draw(caller_text(30)), start, draw(st.none() | st.just(start + timedelta(days=9)))
        )
        for i, start in enumerate(phase_days)
    ]
    return ChartInput(
        title=draw(caller_text()),
        subtitle=draw(caller_text()),
        instrument=draw(st.sampled_from(["PHQ-9", "GAD-7", "BDI-II"])),
        min_score=low,
        max_score=high,
        bands=scale,
        remission_below=draw(st.none() | st.integers(low + 1, high)),
        points=points,
        phases=phases,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chart=courses())
def test_any_course_renders_with_one_marker_per_score(chart: ChartInput) -> None:
    root = parse(render_svg(chart))
    assert len(markers(root, SCORE_MARKERS_GID)) == len(chart.points)
    assert len(markers(root, FLAG_MARKERS_GID)) == sum(p.flagged for p in chart.points)
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text
    if chart.points:
        assert f"{len(chart.points)} {chart.instrument} score" in desc.text
    else:
        assert desc.text.startswith(f"No {chart.instrument} scores recorded yet.")
    for index in range(len(chart.bands)):
        assert group(root, f"{BAND_GID_PREFIX}{index + 1}") is not None
