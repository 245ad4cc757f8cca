"""Render windows with injected aware datetimes: weekdays, midnight, daylight saving, triggers, `when`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from daemon.windows import RenderWindow, WindowSpec, parse_windows, resolve_when

LONDON = ZoneInfo("Europe/London")


def london(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=LONDON, fold=fold)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def window(start: str, end: str, days: str = "*", timezone: str = "Europe/London") -> RenderWindow:
    return RenderWindow(WindowSpec(name="w", start=start, end=end, days=days, timezone=timezone))


@pytest.fixture
def overnight() -> RenderWindow:
    return parse_windows(
        {"overnight": {"start": "20:00", "end": "06:00", "days": "mon-fri", "timezone": "Europe/London"}}
    )["overnight"]


def test_a_friday_night_window_stays_open_into_saturday_morning(overnight):
    """A mon-fri window opened Friday 20:00 is open until Saturday 06:00 and does not open Saturday evening."""
    # 2026-01-16 is a Friday, in winter, so London time is UTC.
    assert not overnight.is_open(london(2026, 1, 16, 19, 59))
    assert overnight.is_open(london(2026, 1, 16, 20, 0))
    assert overnight.is_open(london(2026, 1, 17, 5, 59))
    assert not overnight.is_open(london(2026, 1, 17, 6, 0))
    assert not overnight.is_open(london(2026, 1, 17, 20, 0))
    assert not overnight.is_open(london(2026, 1, 18, 23, 0))


def test_days_name_the_day_a_window_opens(overnight):
    """Monday 05:00 is closed (no Sunday opening) and Thursday 23:00 is open (Thursday's opening)."""
    assert not overnight.is_open(london(2026, 1, 19, 5, 0))
    assert overnight.is_open(london(2026, 1, 19, 20, 0))
    assert overnight.is_open(london(2026, 1, 22, 23, 0))


def test_open_is_worked_out_from_the_clock_in_any_timezone(overnight):
    """Any aware datetime can be asked, so a daemon started mid-window knows the window is open."""
    assert overnight.is_open(datetime(2026, 7, 14, 23, 30, tzinfo=ZoneInfo("America/New_York")))  # 04:30 BST
    assert not overnight.is_open(datetime(2026, 7, 15, 1, 30, tzinfo=ZoneInfo("America/New_York")))  # 06:30 BST


def test_next_open_and_next_close_while_closed(overnight):
    """On a Saturday afternoon the window next opens Monday 20:00 and that one closes Tuesday 06:00."""
    at = london(2026, 1, 17, 12, 0)
    assert overnight.next_open(at) == utc(2026, 1, 19, 20, 0)
    assert overnight.next_close(at) == utc(2026, 1, 20, 6, 0)


def test_next_open_and_next_close_while_open(overnight):
    """While open, next_open is when the current window opened and next_close when it closes, both in UTC."""
    at = london(2026, 6, 13, 3, 0)  # Saturday, summer time
    assert overnight.next_open(at) == utc(2026, 6, 12, 19, 0)
    assert overnight.next_close(at) == utc(2026, 6, 13, 5, 0)
    assert overnight.next_open(at).tzinfo is UTC


def test_a_window_is_closed_at_its_closing_time(overnight):
    """At exactly the closing time the window is closed and the next opening is reported."""
    at = london(2026, 1, 20, 6, 0)
    assert not overnight.is_open(at)
    assert overnight.next_open(at) == utc(2026, 1, 20, 20, 0)


def test_overnight_is_nine_hours_when_clocks_go_forward():
    """20:00-06:00 London from 2026-03-28 to 03-29 is 9 hours long in UTC."""
    daily = window("20:00", "06:00")
    at = london(2026, 3, 28, 21, 0)
    assert daily.next_open(at) == utc(2026, 3, 28, 20, 0)
    assert daily.next_close(at) == utc(2026, 3, 29, 5, 0)
    assert daily.next_close(at) - daily.next_open(at) == timedelta(hours=9)


def test_overnight_is_eleven_hours_when_clocks_go_back():
    """20:00-06:00 London from 2026-10-24 to 10-25 is 11 hours long in UTC."""
    daily = window("20:00", "06:00")
    at = london(2026, 10, 24, 21, 0)
    assert daily.next_open(at) == utc(2026, 10, 24, 19, 0)
    assert daily.next_close(at) == utc(2026, 10, 25, 6, 0)
    assert daily.next_close(at) - daily.next_open(at) == timedelta(hours=11)


def test_a_skipped_opening_time_shifts_forward_by_the_gap():
    """01:30-03:00 on spring-forward night opens at 02:30 BST (01:30 UTC) and lasts 30 minutes."""
    early = window("01:30", "03:00")
    assert early.next_open(london(2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 1, 30)
    assert early.next_close(london(2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 2, 0)
    assert not early.is_open(london(2026, 3, 29, 2, 15))
    assert early.is_open(london(2026, 3, 29, 2, 30))
    assert not early.is_open(london(2026, 3, 29, 3, 0))
    assert early.next_close(london(2026, 3, 28, 0, 0)) - early.next_open(london(2026, 3, 28, 0, 0)) == timedelta(
        minutes=90
    )


def test_a_repeated_opening_time_means_its_first_occurrence():
    """01:30-03:00 on the autumn night opens at the first 01:30 (BST) and stays open through the repeated hour."""
    early = window("01:30", "03:00")
    assert early.next_open(london(2026, 10, 25, 0, 0)) == utc(2026, 10, 25, 0, 30)
    assert early.next_close(london(2026, 10, 25, 0, 0)) == utc(2026, 10, 25, 3, 0)
    assert early.is_open(london(2026, 10, 25, 1, 15, fold=1))
    assert not early.is_open(london(2026, 10, 25, 3, 0))


def test_a_window_inside_the_skipped_hour_moves_an_hour_later():
    """01:10-01:50 London on spring-forward night runs 02:10-02:50 BST (01:10-01:50 UTC)."""
    gap = window("01:10", "01:50")
    at = london(2026, 3, 28, 12, 0)
    assert (gap.next_open(at), gap.next_close(at)) == (utc(2026, 3, 29, 1, 10), utc(2026, 3, 29, 1, 50))


def test_a_window_that_would_close_before_it_opens_skips_the_night():
    """01:45-02:15 London opens at 02:45 BST but would close at 02:15 BST, so it skips spring-forward night."""
    short = window("01:45", "02:15")
    at = london(2026, 3, 28, 12, 0)
    assert short.next_open(at) == utc(2026, 3, 30, 0, 45)
    assert not short.is_open(london(2026, 3, 29, 2, 10))


def test_back_to_back_days_make_one_window():
    """A 00:00-00:00 window on sat,sun is one window from Saturday 00:00 to Monday 00:00."""
    weekend = window("00:00", "00:00", days="sat,sun")
    sunday = london(2026, 1, 18, 12, 0)
    assert weekend.is_open(sunday)
    assert weekend.next_open(sunday) == utc(2026, 1, 17, 0, 0)
    assert weekend.next_close(sunday) == utc(2026, 1, 19, 0, 0)
    assert not weekend.is_open(london(2026, 1, 19, 0, 0))


@pytest.mark.parametrize(
    ("days", "open_on"),
    [
        ("mon,wed-fri", {0, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("fri-mon", {4, 5, 6, 0}),
        ("daily", set(range(7))),
        ("*", set(range(7))),
        (" Mon - Tue ", {0, 1}),
    ],
)
def test_day_lists_and_ranges(days, open_on):
    """Day lists, ranges (wrapping over the weekend too), "daily" and "*" select the days a window opens."""
    office = window("09:00", "17:00", days=days, timezone="UTC")
    monday = utc(2026, 1, 19, 12, 0)
    assert {day for day in range(7) if office.is_open(monday + timedelta(days=day))} == open_on


def test_timezone_defaults_to_utc():
    """A window without a timezone is read in UTC, every day."""
    spec = WindowSpec(name="w", start="22:00", end="23:00")
    assert (spec.days, spec.timezone) == ("*", "UTC")
    assert RenderWindow(spec).next_open(utc(2026, 6, 1, 0, 0)) == utc(2026, 6, 1, 22, 0)


def test_naive_datetimes_are_refused(overnight):
    """Asking with a naive datetime is an error rather than a guess."""
    with pytest.raises(ValueError, match="has no time zone"):
        overnight.is_open(datetime(2026, 1, 16, 21, 0))


def test_triggers_fire_at_opening_and_closing(overnight):
    """The open trigger fires Friday 20:00 and the close trigger Saturday 06:00, then Monday/Tuesday."""
    opens, closes = overnight.triggers()
    friday = london(2026, 1, 16, 12, 0)
    assert opens.get_next_fire_time(None, friday) == utc(2026, 1, 16, 20, 0)
    assert closes.get_next_fire_time(None, friday) == utc(2026, 1, 17, 6, 0)
    saturday = london(2026, 1, 17, 12, 0)
    assert opens.get_next_fire_time(None, saturday) == utc(2026, 1, 19, 20, 0)
    assert closes.get_next_fire_time(None, saturday) == utc(2026, 1, 20, 6, 0)
    assert str(opens.timezone) == "Europe/London"


def test_triggers_agree_with_the_clock_on_spring_forward_night():
    """On spring-forward night the triggers fire when next_open and next_close say the window opens and closes."""
    early = window("01:30", "03:00")
    opens, closes = early.triggers()
    at = london(2026, 3, 28, 12, 0)
    night = london(2026, 3, 29, 0, 0)
    # APScheduler returns the skipped wall time unnormalised; == across zones is False for such times (PEP 495).
    assert opens.get_next_fire_time(None, at).astimezone(UTC) == early.next_open(night) == utc(2026, 3, 29, 1, 30)
    assert closes.get_next_fire_time(None, at).astimezone(UTC) == early.next_close(night) == utc(2026, 3, 29, 2, 0)


def test_triggers_of_a_same_day_window_close_on_the_same_day():
    """A 09:00-17:00 window's close trigger fires on the days it opens."""
    opens, closes = window("09:00", "17:00", days="sat", timezone="UTC").triggers()
    friday = utc(2026, 1, 16, 12, 0)
    assert opens.get_next_fire_time(None, friday) == utc(2026, 1, 17, 9, 0)
    assert closes.get_next_fire_time(None, friday) == utc(2026, 1, 17, 17, 0)


def test_when_now():
    """when = "now" runs at once, with no time attached."""
    assert resolve_when("now", {}, utc(2026, 1, 16, 12, 0)) == ("now", None)


def test_when_names_a_closed_window(overnight):
    """A closed window's name resolves to its next opening, in UTC."""
    assert resolve_when("overnight", {"overnight": overnight}, london(2026, 1, 16, 12, 0)) == (
        "window",
        utc(2026, 1, 16, 20, 0),
    )


def test_when_names_an_open_window(overnight):
    """An open window's name resolves to now, so a request made mid-window runs tonight."""
    now = london(2026, 1, 16, 23, 0)
    assert resolve_when("overnight", {"overnight": overnight}, now) == ("window", utc(2026, 1, 16, 23, 0))


@pytest.mark.parametrize(
    ("when", "at"),
    [
        ("2026-03-28T22:00+01:00", utc(2026, 3, 28, 21, 0)),
        ("2026-03-28T22:00Z", utc(2026, 3, 28, 22, 0)),
        ("2026-03-28T22:00", utc(2026, 3, 28, 22, 0)),
        ("2026-03-28 22:00:30", utc(2026, 3, 28, 22, 0, 30)),
    ],
)
def test_when_is_an_iso_date_time(when, at):
    """An ISO date-time resolves to that time in UTC; without an offset it is taken as UTC."""
    assert resolve_when(when, {}, utc(2026, 1, 1, 0, 0)) == ("at", at)


@pytest.mark.parametrize("when", ["tonight", "2026-03-28", "", "2026-13-45T25:00"])
def test_when_not_understood_lists_the_choices(overnight, when):
    """Anything else is refused with the accepted forms and the configured window names."""
    with pytest.raises(ValueError) as caught:
        resolve_when(when, {"overnight": overnight}, utc(2026, 1, 1, 0, 0))
    message = str(caught.value)
    assert repr(when) in message
    assert '"now"' in message and '"overnight"' in message and "ISO date-time" in message


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"start": "25:00", "end": "06:00"}, "start '25:00' is not a time; write HH:MM"),
        ({"start": "20:00", "end": "6pm"}, "end '6pm' is not a time"),
        ({"start": "20:00", "end": "06:00", "days": "mon-fry"}, "days 'mon-fry' has an unknown day 'fry'"),
        ({"start": "20:00", "end": "06:00", "days": "mon-"}, "days 'mon-' has an unknown day ''"),
        ({"start": "20:00", "end": "06:00", "timezone": "Europe/Londn"}, "unknown timezone 'Europe/Londn'"),
        ({"start": "20:00"}, "end: Field required"),
        ({"start": "20:00", "end": "06:00", "colour": "red"}, "colour: Extra inputs"),
        ({"start": "00:00", "end": "00:00"}, " starts and ends at 00:00 every day, so it never closes"),
    ],
)
def test_config_errors_name_the_window_and_the_value(table, message):
    """parse_windows refuses bad tables with a message naming the window and the bad value."""
    with pytest.raises(ValueError) as caught:
        parse_windows({"overnight": table})
    assert str(caught.value).startswith("window 'overnight'")
    assert message in str(caught.value)


def test_window_names_cannot_look_like_other_whens():
    """A window may not be called "now" or something that is not a plain name."""
    for name in ("now", "2026-03-28T22:00", ""):
        with pytest.raises(ValidationError, match="window name"):
            WindowSpec(name=name, start="20:00", end="06:00")


def test_parse_windows_keys_windows_by_name():
    """Every table in the config becomes a window under its own name."""
    windows = parse_windows(
        {"overnight": {"start": "20:00", "end": "06:00"}, "lunch": {"start": "12:00", "end": "13:00"}}
    )
    assert {name: window.name for name, window in windows.items()} == {"overnight": "overnight", "lunch": "lunch"}
