"""Render windows: named local-time periods, like "overnight", when deferred renders may run.

A window opens at `start` on each of its `days` and closes at `end`, the next
day when `end` is not after `start` (so `days` names the day a window opens).
Whether a window is open is worked out from the clock alone, so a daemon started
mid-window knows it is open; the cron triggers are only wake-up calls.

Daylight saving: local times are read as Python's `fold=0` reads them, which is
also how APScheduler's cron triggers read them. A time that does not exist (the
hour skipped in spring) is shifted forward by the length of the gap, so 01:30 on
the night London jumps from 01:00 to 02:00 means 02:30 BST (01:30 UTC). A time
that happens twice (the hour repeated in autumn) means its first occurrence.
A window is therefore an hour shorter or longer in UTC on those nights; one wholly
inside the skipped hour moves an hour later (01:10-01:50 runs 02:10-02:50 BST), and
one that starts in it and ends within the hour (01:45-02:15) does not open that night.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

from engine.errors import validation_problems

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = frozenset(range(7))
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# Merged occurrences can chain for at most six days (a 24-hour window on six
# days), so a week and a day of look-back always finds the start of the current one.
_LOOK_BACK = timedelta(days=8)
WHEN_FORMS = ('"now", a render window name, or an ISO date-time like "2026-03-28T22:00" (UTC) '
              'or "2026-03-28T22:00+01:00"')


def _parse_time(text: str) -> time:
    match = _TIME.fullmatch(text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f'{text!r} is not a time; write HH:MM on a 24-hour clock, like "20:00"')
    return time(int(match[1]), int(match[2]))


def _parse_days(text: str) -> frozenset[int]:
    """Weekday numbers (Monday is 0) from "mon-fri", "sat,sun", "mon,wed-fri", "*" or "daily"."""
    if text.strip().lower() in ("*", "daily"):
        return EVERY_DAY
    days: set[int] = set()
    for part in text.lower().split(","):
        first, dash, last = part.partition("-")
        first, last = first.strip(), last.strip()
        for name in (first, last) if dash else (first,):
            if name not in DAY_NAMES:
                raise ValueError(
                    f"days {text!r} has an unknown day {name!r}; use {', '.join(DAY_NAMES)}, "
                    'ranges like "mon-fri", lists like "sat,sun,mon", or "*" for every day'
                )
        start = DAY_NAMES.index(first)
        length = (DAY_NAMES.index(last) - start) % 7 if last else 0  # "fri-mon" wraps over the weekend
        days.update((start + offset) % 7 for offset in range(length + 1))
    return frozenset(days)


def _cron_days(days: frozenset[int]) -> str:
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value.isoformat()} has no time zone; pass an aware datetime")
    return value


class WindowSpec(BaseModel):
    """One render window as written in the config, checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    start: str
    end: str
    days: str = "*"
    timezone: str = "UTC"
    at_close: Literal["finish", "pause"] = "finish"  # what a render still running at the closing time does

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # "now" and ISO date-times are the other forms of a request's `when`.
        if not _NAME.fullmatch(value) or value.lower() == "now":
            raise ValueError(
                f"window name {value!r} must start with a letter, hold only letters, digits, _ and -, "
                'and not be "now"; like "overnight"'
            )
        return value

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str, info: ValidationInfo) -> str:
        try:
            _parse_time(value)
        except ValueError as exc:
            raise ValueError(f"window {info.data.get('name')!r}: {info.field_name} {exc}") from None
        return value.strip()

    @field_validator("days")
    @classmethod
    def _days(cls, value: str, info: ValidationInfo) -> str:
        try:
            _parse_days(value)
        except ValueError as exc:
            raise ValueError(f"window {info.data.get('name')!r}: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str, info: ValidationInfo) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"window {info.data.get('name')!r}: unknown timezone {value!r}; "
                'use an IANA name like "Europe/London", "America/Los_Angeles" or "UTC"'
            ) from None
        return value

    @model_validator(mode="after")
    def _closes(self) -> WindowSpec:
        if _parse_time(self.start) == _parse_time(self.end) and _parse_days(self.days) == EVERY_DAY:
            raise ValueError(
                f"window {self.name!r} starts and ends at {self.start} every day, so it never closes; "
                'use when = "now" for renders that may run at any time'
            )
        return self


class RenderWindow:
    """A render window that answers, from any clock reading, whether it is open and when it opens or closes."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.zone = ZoneInfo(spec.timezone)
        self.start = _parse_time(spec.start)
        self.end = _parse_time(spec.end)
        self.days = _parse_days(spec.days)

    def __repr__(self) -> str:
        spec = self.spec
        return f"RenderWindow({spec.name!r}, {spec.start}-{spec.end} {spec.days} {spec.timezone})"

    def is_open(self, at: datetime) -> bool:
        """Whether the window is open at the aware datetime `at` (open at its start, closed at its end)."""
        opens, _ = self._period(at)
        return opens <= at

    def next_open(self, at: datetime) -> datetime:
        """When the window open at `at` opened, or else when it next opens (UTC)."""
        return self._period(at)[0]

    def next_close(self, at: datetime) -> datetime:
        """When the window open at `at` closes, or else when the next one closes (UTC)."""
        return self._period(at)[1]

    def triggers(self) -> tuple[CronTrigger, CronTrigger]:
        """Cron triggers, in the window's timezone, that fire as it opens and as it closes.

        They are wake-up calls: on an autumn night a time in the repeated hour fires
        twice, and back-to-back windows fire a close while still open, so a job
        they start should ask `is_open(now)` rather than assume.
        """
        from apscheduler.triggers.cron import CronTrigger  # only the daemon asks; settings are read without it

        close_days = self.days if self.end > self.start else frozenset((day + 1) % 7 for day in self.days)
        return (
            CronTrigger(day_of_week=_cron_days(self.days), hour=self.start.hour, minute=self.start.minute,
                        timezone=self.zone),
            CronTrigger(day_of_week=_cron_days(close_days), hour=self.end.hour, minute=self.end.minute,
                        timezone=self.zone),
        )

    def _period(self, at: datetime) -> tuple[datetime, datetime]:
        """The first period (opening, closing, UTC) that closes after `at`."""
        at = _aware(at, "time").astimezone(UTC)
        periods = self._periods(at.astimezone(self.zone).date() - _LOOK_BACK)
        return next((opens, closes) for opens, closes in periods if closes > at)

    def _periods(self, first: date) -> Iterator[tuple[datetime, datetime]]:
        """Opening and closing times (UTC) from the local date `first` on; overlapping or touching ones merged."""
        current: tuple[datetime, datetime] | None = None
        for opens, closes in self._occurrences(first):
            if current is None:
                current = opens, closes
            elif opens <= current[1]:
                current = current[0], max(current[1], closes)
            else:
                yield current
                current = opens, closes

    def _occurrences(self, first: date) -> Iterator[tuple[datetime, datetime]]:
        day = first
        while True:
            if day.weekday() in self.days:
                closing_day = day if self.end > self.start else day + timedelta(days=1)
                opens, closes = self._utc(day, self.start), self._utc(closing_day, self.end)
                if opens < closes:  # not so when it starts in the skipped hour and ends within the hour
                    yield opens, closes
            day += timedelta(days=1)

    def _utc(self, day: date, wall: time) -> datetime:
        # fold=0: a skipped time shifts forward by the gap, a repeated time means its first occurrence.
        return datetime.combine(day, wall, tzinfo=self.zone).astimezone(UTC)


def parse_windows(raw: dict[str, Any]) -> dict[str, RenderWindow]:
    """Render windows from the config's `windows` table; a ValueError names the window at fault."""
    windows = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f'window {name!r} must be a table like {{ start = "20:00", end = "06:00" }}, '
                             f"not {table!r}")
        try:
            windows[name] = RenderWindow(WindowSpec.model_validate({**table, "name": name}))
        except ValidationError as exc:
            raise ValueError("; ".join(_problem(name, error) for error in exc.errors())) from None
    return windows


def _problem(name: str, error: Any) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])  # our own messages name the window already
    return f"window {name!r}: {validation_problems([error], 'window')}"


def resolve_when(when: str, windows: dict[str, RenderWindow], now: datetime) -> tuple[str, datetime | None]:
    """When a request may run: ("now", None), ("window", UTC time it is next open) or ("at", UTC time).

    `when` is "now", a window name (resolving to `now` itself while that window is
    open) or an ISO date-time; a date-time without an offset is taken as UTC.
    A date alone is refused, since it does not say which hour was meant.
    """
    now = _aware(now, "now").astimezone(UTC)
    text = when.strip()
    if text.lower() == "now":
        return "now", None
    if text in windows:
        window = windows[text]
        return "window", now if window.is_open(now) else window.next_open(now)
    # Date-only ISO forms are at most 10 characters ("2026-03-28"); any form with a time is longer.
    if len(text) > 10:
        try:
            at = datetime.fromisoformat(text)
            return "at", (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
        except OverflowError:
            # Year 1 or 9999 with an offset that moves it out of the calendar.
            raise ValueError(f"when {when!r} lies outside the years 1 to 9999 once its offset is taken off; "
                             f"use a date-time within them") from None
        except ValueError:
            pass
    names = ", ".join(f'"{name}"' for name in windows) or "none are configured"
    raise ValueError(f"when {when!r} is not understood; use {WHEN_FORMS}. Render windows: {names}")
