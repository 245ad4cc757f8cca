"""Watch the roots for file system events; events are only hints.

Each event puts the affected path on a queue for the daemon's loop. A lost
event costs nothing but time: the reconcile scan finds the file anyway. A
root that went away (an unmounted share) is watched afresh when it is back.
"""

from __future__ import annotations

import contextlib
import os
import queue
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
from watchdog.observers.api import ObservedWatch
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


class Watcher:
    """A watchdog observer over every root, native (inotify) or polling."""

    def __init__(self, roots: list[Path], hints: queue.Queue, polling: bool = False,
                 poll_seconds: float = 1.0) -> None:
        self.observer = PollingObserver(timeout=poll_seconds) if polling else Observer()
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
