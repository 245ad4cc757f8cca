"""When a job may start: now, in a named render window, or at a given time.

A request's `when` picks the start; a long full-clip render whose request
says nothing may be sent to a window by the `defer_full_clips` policy. Whether
a window is open is worked out from the clock each time it is asked, so a
daemon started mid-window knows it is open and a missed trigger loses nothing;
the daemon's cron triggers only wake its loop at openings and closings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from daemon.errors import RequestError
from daemon.request import RenderRequest
from daemon.windows import RenderWindow, resolve_when


@dataclass(frozen=True)
class Start:
    """When a job may start: in `window`, or from `at` (epoch seconds), or at once when both are None."""

    window: str | None = None
    at: float | None = None


class Schedule:
    def __init__(self, windows: dict[str, RenderWindow], clock: Callable[[], float],
                 defer_window: str | None = None, defer_longer_than: int = 0) -> None:
        self.windows = windows
        self.clock = clock
        self.defer_window = defer_window
        self.defer_longer_than = defer_longer_than

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def start_of(self, request: RenderRequest, frames: int | None = None, full_clip: bool = False) -> Start:
        """The start a request asks for (or the policy gives it); raise `RequestError` for a `when` not understood."""
        when = request.when
        if ("when" not in request.model_fields_set and full_clip and self.defer_window
                and frames is not None and frames > self.defer_longer_than):
            when = self.defer_window
        try:
            kind, at = resolve_when(when, self.windows, self.now())
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        if kind == "now":
            return Start()
        return Start(when.strip() if kind == "window" else None, at.timestamp())

    def may_start(self, window: str | None, at: float | None) -> bool:
        """Whether a job with this start may run now (an unknown window never opens)."""
        if window is not None:
            found = self.windows.get(window)
            return found is not None and found.is_open(self.now())
        return at is None or self.clock() >= at

    def next_start(self, window: str | None, at: float | None) -> float | None:
        """When the job may next start: its window's next opening, or its time."""
        if window is not None and window in self.windows:
            return self.windows[window].next_open(self.now()).timestamp()
        return at

    def pause_at(self, window: str | None) -> float | None:
        """When a render in `window` must checkpoint and pause, if the window says so (`at_close = "pause"`)."""
        found = self.windows.get(window) if window else None
        if found is None or found.spec.at_close != "pause" or not found.is_open(self.now()):
            return None
        return found.next_close(self.now()).timestamp()

    def describe(self, window: str | None, at: float | None) -> str:
        """What a waiting job waits for, in the window's own local time."""
        if window is not None:
            if window not in self.windows:
                return f"render window {window!r} is not configured"
            return f"waiting for render window {window!r} (opens {self.opens(window)})"
        return f"waiting until {datetime.fromtimestamp(at or 0, UTC):%Y-%m-%d %H:%M UTC}"

    def opens(self, window: str) -> str:
        """When `window` next opens, in its own local time, like "Fri 2026-01-16 20:00 GMT"."""
        found = self.windows[window]
        return f"{found.next_open(self.now()).astimezone(found.zone):%a %Y-%m-%d %H:%M %Z}"

    def unknown_window(self, window: str | None) -> str | None:
        """A message if `window` was configured when the job was made but is not any more."""
        if window is None or window in self.windows:
            return None
        names = ", ".join(f'"{name}"' for name in self.windows) or "none are configured"
        return (f"render window {window!r} is no longer configured (render windows: {names}); "
                "edit the request's \"when\" and save it")
