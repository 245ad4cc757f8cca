"""The watch roots kept in step with the database: file events, the reconcile scan, roots that go away.

File events (watchdog's, put on the loop's inbox) are only hints: a file that changed is observed again by
the stability tracker, one that vanished is noted as gone. The reconcile scan (at start-up, every
`reconcile_seconds` and when events were lost) compares the roots with the database and is the source of
truth. A root that went away (an unmounted share) counts as away, not as emptied: nothing under it is
deleted, and it is scanned again when it is back. A request file counts as deleted once it has been gone
for `stable_seconds` (not just being saved again), and its jobs are cancelled then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.config import Settings
from daemon.control import Commands
from daemon.conventions import is_ignored, kind_of, root_of, storable
from daemon.housekeeping import sweep_work_folders
from daemon.ingest import FailedFiles, Ingest
from daemon.jobs import Jobs
from daemon.roots import CHECK_SECONDS, RootStates
from daemon.scan import candidate_files, changed_files
from daemon.stability import StabilityTracker
from daemon.store import Store
from daemon.waiting import WaitingJobs

log = structlog.get_logger("hotshot.daemon")


class Reconciler:
    """Owns what is known of the roots between scans: the request files seen gone (and since when), whether
    the first scan has been made, and when the roots were last looked at."""

    def __init__(self, settings: Settings, store: Store, roots: RootStates, tracker: StabilityTracker,
                 failed_files: FailedFiles, ingest: Ingest, jobs: Jobs, commands: Commands, waiting: WaitingJobs,
                 rewatch: Callable[[Path], None]) -> None:
        """`rewatch(root)` has the file watcher watch a root that is back afresh."""
        self.settings = settings
        self.store = store
        self.roots = roots
        self.tracker = tracker
        self.failed_files = failed_files
        self.ingest = ingest
        self.jobs = jobs
        self.commands = commands
        self.waiting = waiting
        self.rewatch = rewatch
        self.reconciled = False
        self._gone_requests: dict[Path, float] = {}
        self._roots_checked = float("-inf")

    def settled(self) -> bool:
        """Whether the roots have been scanned and no request file is on its way to counting as deleted."""
        return self.reconciled and not self._gone_requests

    def hint(self, kind: str, path: Path) -> None:
        """A file event: a folder to look into, or a file that changed or vanished."""
        root = root_of(path, self.settings.roots)
        if root is None or is_ignored(path, root) or not self.roots.available(root):
            return  # events from a root that is away describe nothing that is there
        if kind == "folder":
            if path.is_dir():
                for found in candidate_files(path):
                    self.tracker.observe(found)
            return
        if kind_of(path) is None:
            return
        self.waiting.changed(path.parent)
        if not path.exists():
            if not self._root_present(root):
                return  # the root went away, the file was not deleted
            self.tracker.forget(path)
            self.failed_files.registered(path)  # a file that failed and is gone is not reported any more
            self.ingest.file_gone(path)
            if kind_of(path) == "request" and storable(path):
                self._gone_requests.setdefault(path, time.monotonic())
            return
        self._gone_requests.pop(path, None)
        self.tracker.observe(path)

    def reconcile(self) -> None:
        """Compare the roots that are there with the database: observe what changed, note what vanished."""
        present = [root for root in self.settings.roots if self.roots.available(root) and self._root_present(root)]
        known = {**self.store.known_files(), **self.failed_files.unchanged()}
        seen: set[str] = set()
        for path in changed_files(present, known, seen):
            self.tracker.observe(path)
        # What the scan saw is there; only the rest is looked at again (a hidden folder is not scanned).
        for name in self.store.present_media():
            path = Path(name)
            if name not in seen and root_of(path, present) is not None and not path.exists():
                self.ingest.file_gone(path)
                self.waiting.changed(path.parent)
        for name in self.store.active_request_paths():
            request = Path(name)
            if name not in seen and root_of(request, present) is not None and not request.exists():
                self._gone_requests.setdefault(request, time.monotonic())
        self.jobs.requeue_orphans()
        sweep_work_folders(self.store, self.settings)
        self.reconciled = True

    def check_roots(self) -> None:
        """Notice watch roots going away and coming back (at most every CHECK_SECONDS)."""
        if time.monotonic() - self._roots_checked < CHECK_SECONDS:
            return
        self._roots_checked = time.monotonic()
        gone, back = self.roots.check()
        for root in gone:
            log.warning("watch root is unavailable; nothing under it counts as deleted and its jobs wait for it",
                        root=str(root))
        for root in back:
            log.warning("watch root is back; watching it again", root=str(root))
            self.rewatch(root)
        if back and self.reconciled:
            self.reconcile()

    def cancel_deleted_requests(self) -> None:
        """A request file gone for `stable_seconds` (not just being saved again) cancels its jobs."""
        for path, since in list(self._gone_requests.items()):
            if path.exists():
                del self._gone_requests[path]
            elif time.monotonic() - since >= self.settings.stable_seconds:
                del self._gone_requests[path]
                if not self._root_present(root_of(path, self.settings.roots)):
                    continue  # its root went away; the reconcile after it is back looks again
                if self.store.active_jobs_for(str(path)):
                    log.info("request deleted: cancelling its jobs", path=str(path))
                    self.commands.cancel_request(str(path), "the request file was deleted")

    def _root_present(self, root: Path | None) -> bool:
        """Whether `root` is there right now (a file that vanished with its root was not deleted)."""
        return root is None or self.roots.look(root)
