"""Watch the roots for file system events; events are only hints.

Each event puts the affected path on a queue for the daemon's loop. A lost
event costs nothing but time: the reconcile scan finds the file anyway. A
root that went away (an unmounted share) is watched afresh when it is back.
When the kernel's inotify queue overflows (more events at once than
`fs.inotify.max_queued_events`, a sequence drop onto a busy machine), events
were lost: the watcher says so at once, and the daemon scans the roots then
rather than at its next `reconcile_seconds`.
"""

from __future__ import annotations

import contextlib
import os
import queue
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
from watchdog.observers.inotify_c import InotifyEvent, InotifyFD
from watchdog.observers.polling import PollingObserver

from daemon.conventions import kind_of_name

# The events that can tell the daemon something. Opening and reading files (its own reads of every request,
# ffprobe's and the workers' reads of every video) are not asked of the kernel at all.
EVENTS = [FileCreatedEvent, DirCreatedEvent, FileDeletedEvent, DirDeletedEvent, FileMovedEvent, DirMovedEvent,
          FileModifiedEvent, FileAttribEvent, FileClosedEvent]


class _Forward(FileSystemEventHandler):
    def __init__(self, hints: queue.Queue) -> None:
        self.hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type in ("modified", "attrib", "closed"):
            return  # a folder is modified by every file written in it; those files' own events say it
        kind = "folder" if event.is_directory else "file"
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if isinstance(path, bytes):
                path = path.decode()
            # Files hotshot never reads (status files, their temporary names, frames) are dropped here rather
            # than on the daemon's loop: a sequence drop makes several such events for every request.
            if path and (kind == "folder" or kind_of_name(os.path.basename(path)) is not None):
                self.hints.put((kind, Path(path)))


class _OverflowReporting(InotifyFD):
    """watchdog's reader of the inotify queue, which also reports the queue's overflow: watchdog rebuilds its
    watches then and logs it, but tells no event handler, so the daemon would learn of the lost events only at
    its next reconcile scan."""

    def __init__(self, overflowed: Callable[[], None]) -> None:
        super().__init__()
        self.overflowed = overflowed

    def handle_event(self, event: InotifyEvent) -> None:
        super().handle_event(event)  # watches rebuilt first: what the scan misses, their events tell
        if event.is_queue_overflow:
            self.overflowed()


class _InotifyObserver(InotifyObserver):
    """watchdog's inotify observer reading through `_OverflowReporting` (its `__init__`, with that reader)."""

    def __init__(self, overflowed: Callable[[], None]) -> None:
        self._inotify_fd = _OverflowReporting(overflowed)
        self._inotify_fd.start()
        BaseObserver.__init__(self, InotifyEmitter, timeout=DEFAULT_OBSERVER_TIMEOUT, inotify_fd=self._inotify_fd)


class Watcher:
    """A watchdog observer over every root, native (inotify) or polling. `overflowed` is called (on the
    observer's thread) when the kernel dropped events because its queue was full."""

    def __init__(self, roots: list[Path], hints: queue.Queue, polling: bool = False,
                 poll_seconds: float = 1.0, overflowed: Callable[[], None] | None = None) -> None:
        if polling:
            self.observer = PollingObserver(timeout=poll_seconds)
        elif overflowed is not None:
            self.observer = _InotifyObserver(overflowed)
        else:
            self.observer = Observer()
        self.handler = _Forward(hints)
        self.watches: dict[Path, ObservedWatch] = {}
        for root in roots:
            self.watches[root] = self._schedule(root)

    def start(self) -> None:
        self.observer.start()

    def rewatch(self, root: Path) -> None:
        """Watch `root` afresh after it came back: the old watch followed a folder (or a mount) that is gone."""
        old = self.watches.pop(root, None)
        if old is not None:
            with contextlib.suppress(KeyError):
                self.observer.unschedule(old)
        self.watches[root] = self._schedule(root)

    def _schedule(self, root: Path) -> ObservedWatch:
        return self.observer.schedule(self.handler, str(root), recursive=True, event_filter=EVENTS)

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=10)
