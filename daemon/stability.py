"""Stable-file detection: a file is looked at only once it has stopped changing.

A path is stable when its size and modification time have not changed for
`stable_seconds`, measured with an injectable clock and `stat`, so tests never
sleep. Watcher events and reconcile scans only tell the tracker which paths to
watch; the tracker decides when they are ready.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Watch:
    size: int
    mtime_ns: int
    since: float


@dataclass(frozen=True)
class StableFile:
    path: Path
    size: int
    mtime_ns: int


class StabilityTracker:
    def __init__(self, stable_seconds: float, clock: Callable[[], float] = time.time,
                 stat: Callable[[Path], os.stat_result] = os.stat) -> None:
        self.stable_seconds = stable_seconds
        self.clock = clock
        self.stat = stat
        self._watching: dict[Path, _Watch] = {}

    def __len__(self) -> int:
        return len(self._watching)

    def __contains__(self, path: Path) -> bool:
        return path in self._watching

    def observe(self, path: Path) -> None:
        """Start (or keep) watching `path`; a change restarts its quiet period."""
        try:
            st = self.stat(path)
        except OSError:
            self._watching.pop(path, None)
            return
        current = self._watching.get(path)
        if current is None or (current.size, current.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._restart(path, st)

    def forget(self, path: Path) -> None:
        self._watching.pop(path, None)

    def poll(self) -> list[StableFile]:
        """Re-check the watched paths whose quiet period is over; return (and stop watching) those that are
        stable, and restart the period of those that changed without an event saying so.

        The paths are kept in the order their periods started, so a poll looks only at those that are due:
        a sequence drop of thousands of files is not stat'ed again on every turn of the loop.
        """
        now = self.clock()
        due = []
        for path, watch in self._watching.items():
            if now - watch.since < self.stable_seconds:
                break
            due.append((path, watch))
        ready = []
        for path, watch in due:
            try:
                st = self.stat(path)
            except OSError:
                del self._watching[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (watch.size, watch.mtime_ns):
                self._restart(path, st, now)
            else:
                del self._watching[path]
                ready.append(StableFile(path, watch.size, watch.mtime_ns))
        return ready

    def _restart(self, path: Path, st: os.stat_result, now: float | None = None) -> None:
        """(Re)start the quiet period of `path`, moving it to the end of the order."""
        self._watching.pop(path, None)
        self._watching[path] = _Watch(st.st_size, st.st_mtime_ns, self.clock() if now is None else now)
