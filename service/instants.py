"""Instants as the service stores and compares them, read from the text of a request.

Every date or instant a query gives (FHIR search and history parameters, cursors, the
native list's ``updated_since``) is read here, once. Any value of valid syntax is
answered: a value whose UTC instant falls outside what the database columns hold (year 1
to 9999) is taken as the nearest end of that range, so ``0001-01-01T00:00:00+14:00`` (the
last day of year 0 in UTC) and ``9999-12-31T23:59:59-14:00`` (year 10000 in UTC) compare
as the earliest and latest instants. A value of invalid syntax raises :class:`InvalidInstant`.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)

_MILLISECOND = timedelta(milliseconds=1)
# FHIR date, dateTime and instant (http://hl7.org/fhir/R4/datatypes.html), also without
# seconds (``2026-01-05T10:00Z``, which search allows) or zone (taken as UTC).
_DATE_TIME = re.compile(
    r"(?P<year>[0-9]{4})"
    r"(?:-(?P<month>0[1-9]|1[0-2])"
    r"(?:-(?P<day>0[1-9]|[12][0-9]|3[01])"
    r"(?:T(?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9])"
    r"(?::(?P<second>[0-5][0-9]|60)(?:\.(?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<zone>Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?"
    r")?)?)?"
)


class InvalidInstant(ValueError):
    """Text that is not a date, dateTime or instant."""


def clamp(moment: datetime) -> datetime:
    """An aware instant in UTC, taken into [EARLIEST, LATEST] (no overflow at the ends)."""
    if moment.tzinfo is None:
        raise InvalidInstant("a time zone is needed")
    offset = moment.utcoffset() or timedelta()
    naive = moment.replace(tzinfo=None)
    try:
        utc = (naive - offset).replace(tzinfo=UTC)
    except OverflowError:
        return EARLIEST if offset > timedelta() else LATEST
    return min(max(utc, EARLIEST), LATEST)


def shifted(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, kept within [EARLIEST, LATEST]."""
    try:
        return min(max(moment + delta, EARLIEST), LATEST)
    except OverflowError:
        return EARLIEST if delta < timedelta() else LATEST


def parse_range(text: str) -> tuple[datetime, datetime]:
    """The instants a FHIR date, dateTime or instant covers, clamped: ``2026-01`` covers
    all of January; a time with seconds is that instant; a time without a zone is UTC."""
    match = _DATE_TIME.fullmatch(text)
    if match is None or match["year"] == "0000":
        raise InvalidInstant(f"{text!r} is not a FHIR date, dateTime or instant")
    year = int(match["year"])
    if match["month"] is None:
        return _utc(datetime(year, 1, 1)), _utc(datetime(year, 12, 31, 23, 59, 59, 999000))
    month = int(match["month"])
    if match["day"] is None:
        last = calendar.monthrange(year, month)[1]
        return _utc(datetime(year, month, 1)), _utc(datetime(year, month, last, 23, 59, 59, 999000))
    day = int(match["day"])
    if day > calendar.monthrange(year, month)[1]:
        raise InvalidInstant(f"{text!r} is not a day of the calendar")
    if match["hour"] is None:
        start = datetime(year, month, day)
        return _utc(start), _utc(start.replace(hour=23, minute=59, second=59, microsecond=999000))
    second = int(match["second"] or 0)
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    # A leap second (:60) is the last instant of its minute.
    local = datetime(
        year,
        month,
        day,
        int(match["hour"]),
        int(match["minute"]),
        min(second, 59),
        999999 if second == 60 else int(fraction),
    )
    zone = match["zone"]
    low = clamp(local.replace(tzinfo=UTC if zone in (None, "Z") else timezone(_offset(zone))))
    if match["second"] is not None:
        return low, low
    # Without seconds: the whole minute.
    return low, shifted(low, timedelta(minutes=1) - _MILLISECOND)


def parse_instant(text: str) -> datetime:
    """A FHIR instant (a date-time with seconds and a time zone), clamped."""
    match = _DATE_TIME.fullmatch(text)
    if match is None or match["second"] is None or match["zone"] is None:
        raise InvalidInstant(
            f"{text!r} is not an instant with seconds and a time zone, "
            "such as 2026-01-05T10:00:00Z or 2026-01-05T10:00:00+01:00"
        )
    return parse_range(text)[0]


def _offset(zone: str) -> timedelta:
    sign = -1 if zone[0] == "-" else 1
    return sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))


def _utc(naive: datetime) -> datetime:
    return naive.replace(tzinfo=UTC)
