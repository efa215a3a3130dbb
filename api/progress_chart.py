"""The course of a plan's scores on one rating scale, drawn as a chart (SVG or PNG).

The chart shows each administration's total against its date, over the instrument's
severity bands (shaded and named, so that the bands read in greyscale too), the phases of
the course, the remission line and, ringed, every administration whose safety item (PHQ-9
item 9) was answered above 0. A course without scores still draws, with a clear "no scores
recorded" in the plot.

It takes its input as plain frozen dataclasses, so whatever holds the administrations only
has to fill them in. Figures are built with matplotlib's object API (never ``pyplot``, whose
global figure state is not thread-safe), so requests may draw in parallel. The output is
deterministic: fixed element ids, no creation date, text drawn as glyph outlines in the
font matplotlib ships.

The SVG carries a ``<title>`` and a ``<desc>`` that says the course in words (how many
scores, the first and latest total and band, the flagged answers), and ``role="img"`` with
``aria-labelledby`` naming both, so a screen reader says what a sighted reader sees.
"""

from __future__ import annotations

import functools
import io
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch


@functools.cache
def _matplotlib() -> None:
    """Load and set up matplotlib once, when the first chart is drawn: a process that draws
    none (a command, a worker before its first chart) does not pay for its import."""
    import matplotlib

    # Before any backend loads: renders never need a display.
    matplotlib.use("Agg")
    # Read at save time from the global settings, set once here and never changed while a
    # chart draws: fixed ids (so equal charts give equal bytes) and text as outlines (so
    # the chart looks the same wherever it is opened, whatever fonts are installed there).
    matplotlib.rcParams["svg.hashsalt"] = "ipt-careplans-progress-chart"
    matplotlib.rcParams["svg.fonttype"] = "path"
    # A caller's "$" is a dollar sign, never the start of a formula.
    matplotlib.rcParams["text.parse_math"] = False


# A character the font lacks is drawn as a box (the title and description keep it as
# text); the warning would copy a character of a caller's text, perhaps a name, into logs.
warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)

# Ids of the accessible name and description in the SVG (and of the groups tests and
# style sheets may address).
TITLE_ID = "progress-chart-title"
DESC_ID = "progress-chart-desc"
SCORE_MARKERS_GID = "score-markers"
FLAG_MARKERS_GID = "flag-markers"
BAND_GID_PREFIX = "band-"

# Light fills from calm to alarming; lightness falls with severity, so the order shows in
# greyscale too (the bands are named in the plot, the colour is only a help).
_BAND_PALETTE = ("#f5fbf3", "#eef0c8", "#f9dfb8", "#f5c6ad", "#eeaaaa")
SCORE_COLOUR = "#1f3a5f"
FLAG_COLOUR = "#b2182b"
REMISSION_COLOUR = "#1b7837"
PHASE_COLOUR = "#4d4d4d"

# What a flagged point means on the PHQ-9, the legend's words for the ring.
PHQ9_FLAG_LABEL = "Item 9 (self-harm thoughts) answered above 0"

_WIDTH_INCHES = 8.0
_HEIGHT_INCHES = 4.8
PNG_DPI = 150
# Past this many scores the session numbers under the points would only crowd the chart.
_MAX_SESSION_LABELS = 16
_FONT = "DejaVu Sans"


@dataclass(frozen=True)
class ChartBand:
    """A severity band of the instrument: totals from ``low`` to ``high``, both included."""

    low: int
    high: int
    label: str


@dataclass(frozen=True)
class ChartPoint:
    """One administration: its date, session (if given in one), total and band.

    ``flagged`` marks an answer the clinician must see at once (PHQ-9 item 9, thoughts of
    being better off dead or of self-harm, answered above 0).
    """

    when: date
    session_number: int | None
    total: int
    band: str
    flagged: bool = False


@dataclass(frozen=True)
class ChartPhase:
    """A phase of the course and its dates (None where it has not started or ended)."""

    label: str
    start: date | None
    end: date | None


@dataclass(frozen=True)
class ChartInput:
    """Everything the chart shows; nothing else (no patient identifier but what ``title``
    says) reaches it."""

    title: str
    subtitle: str
    instrument: str
    min_score: int
    max_score: int
    bands: Sequence[ChartBand]
    remission_below: int | None
    points: Sequence[ChartPoint]
    phases: Sequence[ChartPhase] = field(default_factory=tuple)
    # What a flagged point means, for the legend and the description; None for an
    # instrument without a safety item.
    flag_label: str | None = PHQ9_FLAG_LABEL


def band_colours(count: int) -> list[str]:
    """The fill of each of ``count`` bands, lowest band first."""
    if count <= 0:
        return []
    if count == 1:
        return [_BAND_PALETTE[0]]
    last = len(_BAND_PALETTE) - 1
    return [_BAND_PALETTE[round(index * last / (count - 1))] for index in range(count)]


def render_svg(chart: ChartInput) -> bytes:
    """The chart as a standalone, accessible SVG document (UTF-8)."""
    chart = _printable(chart)
    figure = _draw(chart)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return _make_accessible(buffer.getvalue().decode("utf-8"), chart).encode("utf-8")


def render_png(chart: ChartInput) -> bytes:
    """The chart as a PNG image (150 dpi, white background)."""
    figure = _draw(_printable(chart))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return buffer.getvalue()


def svg_fragment(svg: bytes) -> str:
    """The ``<svg>`` element of a rendered chart, without the XML prologue: to put inline in
    an HTML page."""
    text = svg.decode("utf-8")
    return text[text.index("<svg") :]


def describe(chart: ChartInput) -> str:
    """The course in words, as the SVG's description says it."""
    chart = _printable(chart)
    points = _ordered(chart.points)
    sentences: list[str] = []
    if not points:
        sentences.append(f"No {chart.instrument} scores recorded yet.")
    else:
        first, latest = points[0], points[-1]
        count = len(points)
        sentences.append(
            f"{count} {chart.instrument} score{'' if count == 1 else 's'} recorded"
            + (
                f" from {_day(first.when)} to {_day(latest.when)}."
                if count > 1
                else f" on {_day(first.when)}."
            )
        )
        sentences.append(f"First: {first.total} ({first.band}) on {_day(first.when)}{_at(first)}.")
        if count > 1:
            change = latest.total - first.total
            sentences.append(
                f"Latest: {latest.total} ({latest.band}) on {_day(latest.when)}{_at(latest)}, "
                f"{_change(change)} since the first."
            )
        lowest = min(point.total for point in points)
        highest = max(point.total for point in points)
        if count > 2:
            sentences.append(f"Range {lowest} to {highest}.")
        if chart.remission_below is not None:
            below = sum(1 for point in points if point.total < chart.remission_below)
            sentences.append(
                f"{below} of {count} below the remission line ({chart.remission_below})."
            )
    if chart.flag_label is not None:
        flagged = [point for point in points if point.flagged]
        if flagged:
            days = ", ".join(_day(point.when) for point in flagged)
            sentences.append(
                f"{len(flagged)} flagged answer{'' if len(flagged) == 1 else 's'} "
                f"({chart.flag_label}): {days}."
            )
        elif points:
            sentences.append(f"No flagged answers ({chart.flag_label}).")
    phases = [
        f"{phase.label} from {_day(phase.start)}"
        + (f" to {_day(phase.end)}" if phase.end is not None else "")
        for phase in chart.phases
        if phase.start is not None
    ]
    if phases:
        sentences.append("Phases: " + "; ".join(phases) + ".")
    return " ".join(sentences)


def accessible_title(chart: ChartInput) -> str:
    """The chart's accessible name: its title and subtitle."""
    return f"{chart.title}: {chart.subtitle}" if chart.subtitle else chart.title


# --- drawing ---------------------------------------------------------------------------


def _text(value: str) -> str:
    """Text that can be drawn and stored in XML: control characters, lone surrogates and
    non-characters (which XML refuses and no font draws) become U+FFFD, line breaks spaces."""
    return "".join(
        " "
        if char in "\t\n\r"
        else "\N{REPLACEMENT CHARACTER}"
        if unicodedata.category(char) in ("Cc", "Cs") or char in "\ufffe\uffff"
        else char
        for char in value
    )


def _printable(chart: ChartInput) -> ChartInput:
    """The chart with every caller-given text made printable."""
    return replace(
        chart,
        title=_text(chart.title),
        subtitle=_text(chart.subtitle),
        instrument=_text(chart.instrument),
        bands=[replace(band, label=_text(band.label)) for band in chart.bands],
        points=[replace(point, band=_text(point.band)) for point in chart.points],
        phases=[replace(phase, label=_text(phase.label)) for phase in chart.phases],
        flag_label=None if chart.flag_label is None else _text(chart.flag_label),
    )


def _ordered(points: Sequence[ChartPoint]) -> list[ChartPoint]:
    return sorted(
        points, key=lambda p: (p.when, p.session_number if p.session_number is not None else -1)
    )


def _day(when: date) -> str:
    return when.isoformat()


def _at(point: ChartPoint) -> str:
    return f" (session {point.session_number})" if point.session_number is not None else ""


def _change(change: int) -> str:
    if change == 0:
        return "unchanged"
    return f"{'down' if change < 0 else 'up'} {abs(change)}"


def _check(chart: ChartInput) -> None:
    if chart.max_score <= chart.min_score:
        raise ValueError(
            f"max_score ({chart.max_score}) must be above min_score ({chart.min_score})"
        )
    for band in chart.bands:
        if band.high < band.low:
            raise ValueError(f"band {band.label!r} ends ({band.high}) before it starts")


def _date_span(chart: ChartInput, points: Sequence[ChartPoint]) -> tuple[date, date] | None:
    days = [point.when for point in points]
    days += [d for phase in chart.phases for d in (phase.start, phase.end) if d is not None]
    if not days:
        return None
    first, last = min(days), max(days)
    # A margin either side so that the first and last point are not cut by the frame.
    margin = max(timedelta(days=3), (last - first) / 30)
    return first - margin, last + margin


def _draw(chart: ChartInput) -> Figure:
    _check(chart)
    _matplotlib()
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    points = _ordered(chart.points)
    figure = Figure(figsize=(_WIDTH_INCHES, _HEIGHT_INCHES), facecolor="white")
    axes = figure.add_subplot()
    low = min([chart.min_score, *(p.total for p in points)])
    high = max([chart.max_score, *(p.total for p in points)])
    axes.set_ylim(low - 0.5, high + 0.5)
    span = _date_span(chart, points)
    if span is not None:
        axes.set_xlim(mdates.date2num(span[0]), mdates.date2num(span[1]))
    axes.set_xlim(auto=False)

    _draw_bands(axes, chart)
    _draw_phases(axes, chart, span)
    handles: list[Line2D | Patch] = []
    if chart.remission_below is not None:
        axes.axhline(
            chart.remission_below - 0.5,
            color=REMISSION_COLOUR,
            linestyle=(0, (6, 3)),
            linewidth=1.6,
            zorder=3,
            gid="remission-line",
        )
        handles.append(
            Line2D(
                [],
                [],
                color=REMISSION_COLOUR,
                linestyle=(0, (6, 3)),
                linewidth=1.6,
                label=f"Remission: below {chart.remission_below}",
            )
        )
    if points:
        handles[:0] = _draw_points(axes, chart, points)
    else:
        axes.text(
            0.5,
            0.5,
            f"No {chart.instrument} scores recorded yet",
            transform=axes.transAxes,
            ha="center",
            va="center",
            fontsize=13,
            fontfamily=_FONT,
            color="black",
            bbox={"boxstyle": "round,pad=0.6", "facecolor": "white", "edgecolor": "#7f7f7f"},
            zorder=6,
            gid="no-scores",
        )
        if span is None:
            axes.set_xticks([])

    _label_axes(axes, figure, chart, dated=span is not None)
    if handles:
        figure.legend(
            handles=handles,
            loc="lower center",
            ncols=len(handles),
            frameon=False,
            fontsize=8.5,
            prop={"family": _FONT, "size": 8.5},
            bbox_to_anchor=(0.5, 0.0),
        )
    # Room above the plot for the title, the subtitle if there is one, and the phase names.
    top = 0.84 if chart.subtitle else 0.87
    figure.subplots_adjust(left=0.08, right=0.83, top=top, bottom=0.2)
    return figure


def _draw_bands(axes: Axes, chart: ChartInput) -> None:
    bands = sorted(chart.bands, key=lambda b: b.low)
    for index, (band, colour) in enumerate(zip(bands, band_colours(len(bands)), strict=True)):
        bottom, top = band.low - 0.5, band.high + 0.5
        axes.axhspan(
            bottom, top, facecolor=colour, edgecolor="none", zorder=0, gid=_band_gid(index)
        )
        if index:
            # A line between bands: the boundary shows without colour.
            axes.axhline(bottom, color="#9a9a9a", linewidth=0.6, zorder=1)
        # Named beside the plot, where no point can cover the name.
        axes.text(
            1.01,
            (bottom + top) / 2,
            f"{band.label}\n({band.low}\N{EN DASH}{band.high})",
            transform=axes.get_yaxis_transform(),
            ha="left",
            va="center",
            fontsize=7.5,
            fontfamily=_FONT,
            color="#333333",
            clip_on=False,
            linespacing=1.1,
            zorder=2,
        )


def _band_gid(index: int) -> str:
    return f"{BAND_GID_PREFIX}{index + 1}"


def _draw_phases(axes: Axes, chart: ChartInput, span: tuple[date, date] | None) -> None:
    from matplotlib import dates as mdates

    if span is None:
        return
    starts = {phase.start for phase in chart.phases if phase.start is not None}
    boundaries = set(starts)
    # The end of a phase is a boundary of its own only if no phase starts the day after.
    for phase in chart.phases:
        if phase.end is not None and not {phase.end, phase.end + timedelta(days=1)} & starts:
            boundaries.add(phase.end)
    for boundary in sorted(boundaries):
        axes.axvline(
            mdates.date2num(boundary),
            color=PHASE_COLOUR,
            linestyle=(0, (1, 2)),
            linewidth=1.0,
            zorder=2,
        )
    for phase in chart.phases:
        if phase.start is None:
            continue
        # The label stands just above the plot, at the start of the phase it names.
        axes.text(
            mdates.date2num(phase.start),
            1.01,
            f" {phase.label}",
            transform=axes.get_xaxis_transform(),
            ha="left",
            va="bottom",
            fontsize=7.5,
            fontfamily=_FONT,
            color=PHASE_COLOUR,
            clip_on=False,
        )


def _draw_points(axes: Axes, chart: ChartInput, points: list[ChartPoint]) -> list[Line2D]:
    from matplotlib import dates as mdates
    from matplotlib.lines import Line2D

    days = [mdates.date2num(point.when) for point in points]
    totals = [point.total for point in points]
    axes.plot(days, totals, color=SCORE_COLOUR, linewidth=1.4, zorder=4, gid="score-line")
    axes.plot(
        days,
        totals,
        linestyle="none",
        marker="o",
        markersize=5.5,
        markerfacecolor=SCORE_COLOUR,
        markeredgecolor="white",
        markeredgewidth=0.8,
        zorder=5,
        gid=SCORE_MARKERS_GID,
    )
    handles = [
        Line2D(
            [],
            [],
            color=SCORE_COLOUR,
            linewidth=1.4,
            marker="o",
            markersize=5.5,
            label=f"{chart.instrument} total",
        )
    ]
    flagged = [(day, p.total) for day, p in zip(days, points, strict=True) if p.flagged]
    if flagged and chart.flag_label is not None:
        # A ring of another shape and colour round the point: seen in greyscale by its shape.
        axes.plot(
            [day for day, _ in flagged],
            [total for _, total in flagged],
            linestyle="none",
            marker="D",
            markersize=13,
            markerfacecolor="none",
            markeredgecolor=FLAG_COLOUR,
            markeredgewidth=2.4,
            zorder=6,
            gid=FLAG_MARKERS_GID,
        )
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="D",
                markersize=9,
                markerfacecolor="none",
                markeredgecolor=FLAG_COLOUR,
                markeredgewidth=2.0,
                label=chart.flag_label,
            )
        )
    if len(points) <= _MAX_SESSION_LABELS:
        for day, point in zip(days, points, strict=True):
            if point.session_number is None:
                continue
            axes.annotate(
                f"S{point.session_number}",
                (day, point.total),
                xytext=(0, -12),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=6.5,
                fontfamily=_FONT,
                color="#333333",
                zorder=5,
                annotation_clip=True,
            )
    return handles


def _label_axes(axes: Axes, figure: Figure, chart: ChartInput, *, dated: bool) -> None:
    from matplotlib import dates as mdates
    from matplotlib.ticker import MaxNLocator

    figure.suptitle(chart.title, x=0.08, y=0.975, ha="left", fontsize=13, fontfamily=_FONT)
    if chart.subtitle:
        figure.text(
            0.08, 0.905, chart.subtitle, ha="left", fontsize=9, fontfamily=_FONT, color="#333333"
        )
    axes.set_ylabel(f"{chart.instrument} total score", fontsize=9, fontfamily=_FONT)
    axes.set_xlabel("Date of administration", fontsize=9, fontfamily=_FONT)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    if dated:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for label in [*axes.get_xticklabels(), *axes.get_yticklabels()]:
        label.set_fontfamily(_FONT)
    axes.tick_params(labelsize=8)
    for spine in axes.spines.values():
        spine.set_color("#4d4d4d")


# --- accessibility ---------------------------------------------------------------------

_SVG_OPEN = re.compile(r"<svg\b[^>]*>")


def _make_accessible(svg: str, chart: ChartInput) -> str:
    """Name and describe the SVG: role="img", aria-labelledby, <title> and <desc> first."""
    opening = _SVG_OPEN.search(svg)
    if opening is None:  # pragma: no cover - matplotlib always writes one
        raise ValueError("the rendered chart has no <svg> element")
    tag = opening.group(0)
    labelled = quoteattr(f"{TITLE_ID} {DESC_ID}")
    new_tag = tag[:-1] + f' role="img" aria-labelledby={labelled}>'
    prologue = (
        f'\n <title id="{TITLE_ID}">{escape(accessible_title(chart))}</title>'
        f'\n <desc id="{DESC_ID}">{escape(describe(chart))}</desc>'
    )
    return svg[: opening.start()] + new_tag + prologue + svg[opening.end() :]
