"""Waiting jobs revisited: for their source, their start time or their render window.

Reading every waiting job on every turn of the loop made thousands of them (a drop saved for the night) a
cost of an idle loop. They are read only when something may have changed for them: a file in their folder
(`changed`), a write to the database, a deadline, start time or window edge that came; and at least every
WAITING_REVIEW_SECONDS as a safety net.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemon.config import Settings
from daemon.conventions import root_of
from daemon.ingest import Ingest
from daemon.jobs import Jobs
from daemon.roots import RootStates
from daemon.schedule import Schedule
from daemon.states import JobState
from daemon.store import Store

WAITING_REVIEW_SECONDS = 10.0


class WaitingJobs:
    """Owns what decides the next review: the folders something changed in since the last one, the time the
    next one is due, and the database's write count at the last one."""

    def __init__(self, store: Store, settings: Settings, ingest: Ingest, jobs: Jobs, roots: RootStates,
                 schedule: Schedule, clock: Callable[[], float]) -> None:
        self.store = store
        self.settings = settings
        self.ingest = ingest
        self.jobs = jobs
        self.roots = roots
        self.schedule = schedule
        self.clock = clock
        self._changed_folders: set[Path] = set()
        self._due = float("-inf")
        self._changes = -1

    def changed(self, *folders: Path) -> None:
        """Something changed in `folders` (a file came, went or was registered): their waiting jobs look again."""
        self._changed_folders.update(folders)

    def review(self) -> None:
        """Revisit jobs waiting for their source; release jobs whose start came; hold those whose window shut."""
        now = self.clock()
        changes = self.store.db.conn.total_changes  # this connection's writes: registering, commands, ends
        if not self._changed_folders and changes == self._changes and now < self._due:
            return
        due = now + WAITING_REVIEW_SECONDS
        scheduled = []
        with self.ingest.revisiting():
            for job in self.store.jobs((JobState.WAITING,)):
                if not self.roots.available(root_of(Path(job.request_path), self.settings.roots)):
                    continue
                if job.scheduled:
                    scheduled.append(job)
                    if job.start_at is not None and job.window is None:
                        due = min(due, job.start_at)
                elif Path(job.request_path).parent in self._changed_folders or now >= (job.wait_deadline or 0):
                    self.ingest.revisit(job)
                else:
                    due = min(due, job.wait_deadline)
        self._changed_folders.clear()
        self.jobs.review_scheduled(scheduled)
        moment = self.schedule.now()
        for window in self.settings.render_windows.values():  # jobs released or held at its edges
            due = min([due, *(edge.timestamp() for edge in (window.next_open(moment), window.next_close(moment))
                              if edge.timestamp() > now)])
        self._due = due
        self._changes = self.store.db.conn.total_changes
