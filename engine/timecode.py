"""SMPTE timecode: a render's start timecode is its source's plus the range start, counted in the source's rate.

A timecode counts frames at a whole nominal rate (25, 30, 60 ...). At 29.97 and
59.94 fps, drop-frame timecode (written with `;` before the frames) skips the
labels 00 and 01 (00 to 03 at 59.94) at the start of every minute except each
tenth, so that it keeps to the clock; non-drop timecode at those rates counts
every label and drifts from the clock, as it does in every editing system.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_PATTERN = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.,])(\d{2,3})$")
DAY_HOURS = 24


@dataclass(frozen=True)
class Timecode:
    """A start timecode and the rate it counts at."""

    hours: int
    minutes: int
    seconds: int
    frames: int
    rate: int
    drop_frame: bool = False

    def __str__(self) -> str:
        separator = ";" if self.drop_frame else ":"
        return f"{self.hours:02d}:{self.minutes:02d}:{self.seconds:02d}{separator}{self.frames:02d}"

    @property
    def frame_number(self) -> int:
        """Frames since 00:00:00:00."""
        total_minutes = self.hours * 60 + self.minutes
        counted = (self.hours * 3600 + self.minutes * 60 + self.seconds) * self.rate + self.frames
        if self.drop_frame:
            counted -= _dropped(self.rate) * (total_minutes - total_minutes // 10)
        return counted

    def plus(self, frames: int) -> Timecode:
        """The timecode `frames` frames later (wrapping at 24 hours)."""
        return from_frame_number(self.frame_number + frames, self.rate, self.drop_frame)


def parse(text: str, fps: str | Fraction) -> Timecode | None:
    """A timecode string as ffprobe reports it (`01:00:10:00`, `00:59:59;28`) at the video's frame rate; None when
    it cannot be read or does not fit the rate."""
    match = _PATTERN.match(text.strip())
    if not match:
        return None
    hours, minutes, seconds, separator, frames = match.groups()
    rate = nominal_rate(fps)
    drop = separator in ";.," and rate % 30 == 0 and Fraction(fps).denominator == 1001
    code = Timecode(int(hours), int(minutes), int(seconds), int(frames), rate, drop)
    if code.minutes > 59 or code.seconds > 59 or code.frames >= rate or code.hours >= DAY_HOURS:
        return None
    return code


def nominal_rate(fps: str | Fraction) -> int:
    """The whole rate a timecode counts at: 30 for 30000/1001, 24 for 24000/1001 ..."""
    return max(1, round(Fraction(fps)))


def from_frame_number(number: int, rate: int, drop_frame: bool = False) -> Timecode:
    """The timecode of frame `number` counted from 00:00:00:00."""
    if drop_frame:
        dropped = _dropped(rate)
        per_ten_minutes = rate * 600 - dropped * 9
        per_minute = rate * 60 - dropped
        number %= per_ten_minutes * 6 * DAY_HOURS
        tens, rest = divmod(number, per_ten_minutes)
        number += dropped * 9 * tens
        if rest > dropped:
            number += dropped * ((rest - dropped) // per_minute)
    number %= rate * 3600 * DAY_HOURS
    frames = number % rate
    seconds = number // rate
    return Timecode(seconds // 3600, seconds // 60 % 60, seconds % 60, frames, rate, drop_frame)


def _dropped(rate: int) -> int:
    """Labels skipped a minute in drop-frame counting: 2 at 29.97, 4 at 59.94."""
    return rate // 15
