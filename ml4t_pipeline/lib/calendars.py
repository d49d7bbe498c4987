"""Exchange calendars: sessions, their real closes (early closes included), and the calendar
check of a config's ``data.calendar``.

The pipeline stamps and checks bars with one named exchange calendar of ``exchange_calendars``
(``data.calendar``, default ``XNYS``, the New York Stock Exchange): a daily date is stamped at
that session's close (:func:`session_closes`, used by
:func:`ml4t_pipeline.lib.timing.daily_close_utc`), a bar on a date that is no session is refused
by the ``on_session_date`` price rule (:func:`sessions_between`), and the ``SessionEndExit``
risk rule of an intraday experiment exits at each session's real close
(:class:`CalendarSessionEndExit`). ``engine`` stays calendar-free: the pipeline hands it stamps
and cut-off times.

``exchange_calendars`` (and pandas with it) is imported lazily, on the first use of a calendar;
its tables are cached per calendar name for the process.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

import engine

__all__ = [
    "CALENDAR_START",
    "DEFAULT_CALENDAR",
    "CalendarSessionEndExit",
    "calendar_names",
    "calendar_tz",
    "check_calendar_name",
    "session_end_rule",
    "early_closes",
    "exchange_calendar",
    "regular_close",
    "regular_open",
    "session_closes",
    "sessions_between",
]

DEFAULT_CALENDAR = "XNYS"
"""``data.calendar``'s default: the New York Stock Exchange (16:00 New York close, 13:00 on
half days such as the day after Thanksgiving)."""

CALENDAR_START = date(1990, 1, 1)
"""First date whose sessions are looked up (or the calendar's own first date, if later); dates
before it are stamped at the calendar's regular close and judged by weekday only."""

_UTC = pl.Datetime("us", "UTC")


@contextmanager
def _quiet() -> Iterator[None]:
    # exchange_calendars 4.13 reads Series.values, which pandas 3.1 deprecates.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


@functools.lru_cache(maxsize=1)
def calendar_names() -> frozenset[str]:
    """Every calendar name ``exchange_calendars`` knows, aliases included (``XNYS``, ``NYSE``,
    ``XLON``, ``XTKS``, ...)."""
    import exchange_calendars as xcals

    return frozenset(xcals.get_calendar_names(include_aliases=True))


def check_calendar_name(name: object, *, field: str = "data.calendar") -> str:
    """Return ``name`` if ``exchange_calendars`` knows it.

    Raises
    ------
    ValueError
        ``name`` is not a string or not a calendar name; the message starts with ``field``
        (unless empty) and names the closest known names.
    """
    if name == DEFAULT_CALENDAR:
        return DEFAULT_CALENDAR  # known without importing exchange_calendars
    if not isinstance(name, str) or name not in calendar_names():
        close = difflib.get_close_matches(str(name), sorted(calendar_names()), n=4)
        hint = f" (closest: {', '.join(close)})" if close else ""
        where = f"{field}: " if field else ""
        raise ValueError(
            f"{where}unknown exchange calendar {name!r}{hint}; use an exchange_calendars "
            "name such as XNYS (New York), XLON (London), XTKS (Tokyo); "
            "`python -c 'import exchange_calendars as x; print(x.get_calendar_names())'` "
            "lists them"
        )
    return name


@functools.lru_cache(maxsize=8)
def exchange_calendar(name: str = DEFAULT_CALENDAR) -> Any:
    """The ``exchange_calendars`` calendar ``name`` from :data:`CALENDAR_START` (or its own
    first date) to its default end (a year ahead).

    Raises
    ------
    ValueError
        Unknown ``name`` (:func:`check_calendar_name`).
    """
    check_calendar_name(name, field="calendar")
    import exchange_calendars as xcals

    with _quiet():
        try:  # one build: most calendars (XNYS) reach back past CALENDAR_START
            return xcals.get_calendar(name, start=CALENDAR_START.isoformat())
        except ValueError:  # a calendar with a later first date (bound_min): start there
            pass
        bound = xcals.get_calendar(name).bound_min()
        start = CALENDAR_START if bound is None else max(CALENDAR_START, bound.date())
        return xcals.get_calendar(name, start=start.isoformat())


@functools.lru_cache(maxsize=8)
def session_closes(name: str = DEFAULT_CALENDAR) -> pl.DataFrame:
    """Every session of calendar ``name`` with its open and its real close.

    Returns
    -------
    pl.DataFrame
        ``date`` (Date, the session), ``open`` and ``close`` (``Datetime[us, UTC]``), one row
        per session in date order (XNYS: 9,552 sessions from 1990-01-02; 2017-11-24 closes
        18:00 UTC, 13:00 New York).
    """
    calendar = exchange_calendar(name)
    with _quiet():
        schedule = calendar.schedule
        days = schedule.index.to_numpy()
        opens = schedule["open"].dt.tz_convert(None).to_numpy()
        closes = schedule["close"].dt.tz_convert(None).to_numpy()
    frame = pl.DataFrame({"date": days, "open": opens, "close": closes})
    return frame.select(
        pl.col("date").cast(pl.Date),
        *(pl.col(c).cast(pl.Datetime("us")).dt.replace_time_zone("UTC") for c in ("open", "close")),
    )


@functools.lru_cache(maxsize=8)
def calendar_tz(name: str = DEFAULT_CALENDAR) -> str:
    """The calendar's time zone (``America/New_York`` for XNYS)."""
    return str(exchange_calendar(name).tz)


@functools.lru_cache(maxsize=8)
def regular_close(name: str = DEFAULT_CALENDAR) -> time:
    """The calendar's latest regular close, local wall-clock time (16:00 for XNYS): the stamp
    of a date that is no session (refused by the session check) or before the calendar."""
    close: time = exchange_calendar(name).close_times[-1][1]
    return close


@functools.lru_cache(maxsize=8)
def regular_open(name: str = DEFAULT_CALENDAR) -> time:
    """The calendar's latest regular open, local wall-clock time (09:30 for XNYS)."""
    opening: time = exchange_calendar(name).open_times[-1][1]
    return opening


@functools.lru_cache(maxsize=8)
def early_closes(name: str = DEFAULT_CALENDAR) -> pl.DataFrame:
    """The sessions of ``name`` that close before the regular close of their date.

    Returns
    -------
    pl.DataFrame
        ``date`` (Date) and ``close_minutes`` (Int64, minutes after local midnight: 780 for a
        13:00 close), one row per early close (XNYS 1990 to 2027: 80 rows, 76 at 13:00 and 4
        at 14:00).
    """
    calendar = exchange_calendar(name)
    with _quiet():
        closes = calendar.schedule.loc[calendar.early_closes, "close"].dt.tz_convert(calendar.tz)
        minutes = (closes.dt.hour * 60 + closes.dt.minute).to_numpy()
        days = [d.date() for d in calendar.early_closes]
    return pl.DataFrame(
        {"date": days, "close_minutes": minutes},
        schema={"date": pl.Date, "close_minutes": pl.Int64},
    )


def sessions_between(name: str, first: date, last: date) -> set[date]:
    """The session dates of ``name`` from ``first`` to ``last`` (inclusive; the part inside the
    calendar's range)."""
    days = session_closes(name)["date"]
    return set(days.filter((days >= first) & (days <= last)).to_list())


class CalendarSessionEndExit(engine.SessionEndExit):
    """``SessionEndExit`` at each session's real close, from an exchange calendar.

    The pipeline's form of the engine rule when an experiment's ``SessionEndExit`` gives no
    ``session_close``: the close is the calendar's regular close in its zone (XNYS: 16:00 New
    York) and, on an early-close session, that session's close (13:00 on 2017-11-24). A bar
    triggers the exit when its close, in the calendar's zone, is at or after its date's close
    minus ``minutes_before``. Exits are reported under the engine rule's name
    (``SessionEndExit``).

    Parameters
    ----------
    calendar : str, default "XNYS"
        An ``exchange_calendars`` name (``data.calendar``).
    minutes_before : int, default 0
        As for :class:`engine.SessionEndExit`.
    priority : int, default 150

    Raises
    ------
    ValueError
        Unknown calendar, or a bad ``minutes_before``.
    """

    def __init__(
        self, calendar: str = DEFAULT_CALENDAR, minutes_before: int = 0, priority: int = 150
    ) -> None:
        close = regular_close(calendar)
        super().__init__(
            session_close=f"{close.hour:02d}:{close.minute:02d}",
            timezone=calendar_tz(calendar),
            minutes_before=minutes_before,
            priority=priority,
        )
        self.calendar = calendar
        early = early_closes(calendar)
        self._early_closes: dict[date, int] = dict(early.iter_rows())
        self._regular_minutes = close.hour * 60 + close.minute
        self._zone = ZoneInfo(self.timezone)

    @property
    def name(self) -> str:
        return "SessionEndExit"

    def close_minutes(self, day: date) -> int:
        """The close of ``day``'s session, in minutes after local midnight (the regular close
        on a date that is no early close)."""
        return self._early_closes.get(day, self._regular_minutes)

    def evaluate(self, context: Any) -> engine.RiskDecision:
        local: datetime = context.timestamp.astimezone(self._zone)
        close = self.close_minutes(local.date())
        if local.hour * 60 + local.minute >= max(close - self.minutes_before, 0):
            return engine.RiskDecision.exit(
                f"session end {close // 60:02d}:{close % 60:02d} {self.timezone} ({self.calendar})",
                priority=self.priority,
                rule=self.name,
            )
        return engine.RiskDecision.hold()


_CALENDAR_EXIT_KEYS = frozenset({"type", "minutes_before", "priority"})


def session_end_rule(spec: Mapping[str, Any], calendar: str) -> CalendarSessionEndExit | None:
    """The calendar form of a config's ``SessionEndExit`` rule, or None for any other rule.

    A ``{type: SessionEndExit}`` spec that gives neither ``session_close`` nor ``timezone``
    exits at each session's real close on ``calendar`` (``data.calendar``), early closes
    included (:class:`CalendarSessionEndExit`); one that names a fixed ``session_close`` (and
    ``timezone``) is left to the engine's rule, which uses that wall-clock time every day.

    Raises
    ------
    ValueError
        Bad ``minutes_before`` / ``priority`` (as the engine rule).
    """
    if spec.get("type") != "SessionEndExit" or not set(spec) <= _CALENDAR_EXIT_KEYS:
        return None
    return CalendarSessionEndExit(
        calendar,
        minutes_before=spec.get("minutes_before", 0),
        priority=spec.get("priority", 150),
    )
