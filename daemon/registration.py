"""Registering: the files that became stable in a turn of the loop become media and jobs, then status files.

Videos are probed side by side first, then each is registered alone (probing takes a while, and the write lock
is held meanwhile); requests are registered in batches of up to BATCH_FILES in one transaction each
(`Ingest.batch`). A committed batch's status files are written on threads of their own while the next batch
is registered (`Publisher.write_batch`).
"""

from __future__ import annotations

import sqlite3

from daemon.control import Commands
from daemon.conventions import kind_of
from daemon.ingest import CANCELLED_BY_FIELD, Batch, FailedFiles, Ingest
from daemon.publishing import Publisher
from daemon.stability import StabilityTracker, StableFile
from daemon.steps import Steps
from daemon.waiting import WaitingJobs
from engine import faults
from engine.errors import DiskFullError, is_disk_full

# Files registered in one transaction at most: a sequence drop's status files appear batch by batch, and
# the CLI never waits long for the write lock.
BATCH_FILES = 500


class Registration:
    """Takes the stable files from the stability tracker and registers them. A file that fails alone is
    noted in `failed_files`; a batch that fails as a whole goes back to the tracker."""

    def __init__(self, ingest: Ingest, tracker: StabilityTracker, failed_files: FailedFiles, commands: Commands,
                 publisher: Publisher, waiting: WaitingJobs, steps: Steps) -> None:
        self.ingest = ingest
        self.tracker = tracker
        self.failed_files = failed_files
        self.commands = commands
        self.publisher = publisher
        self.waiting = waiting
        self.steps = steps

    def register_stable(self) -> None:
        """Register the files that became stable; announce the status files written meanwhile."""
        stable = self.tracker.poll()
        videos = [item for item in stable if kind_of(item.path) == "video"]
        self.steps.run("probes", self.ingest.probe_ahead, [item.path for item in videos])
        for video in videos:
            self._register_batch([video])  # each alone: probing takes a while, and the lock is held meanwhile
        requests = [item for item in stable if kind_of(item.path) != "video"]
        for first in range(0, len(requests), BATCH_FILES):
            self._register_batch(requests[first:first + BATCH_FILES])
        # Status files still being written are waited for once no more files are on their way: a drop keeps
        # the writers busy beside registering; a lone request has its status file when the turn ends.
        self.steps.run("status files", self.publisher.written, len(self.tracker) == 0)

    def _register_batch(self, stable: list[StableFile]) -> None:
        """Ingest stable files in one transaction, then write their status files. A full disk or a database
        that cannot be written fails the whole batch (its files are looked at again once they have been
        stable again); anything else about one file fails that file alone (`failed_files`)."""
        try:
            with self.ingest.batch() as batch:
                for item in stable:
                    self._register(item)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive a full disk or an unwritable database
            self.steps.failed("ingest", exc)
            for item in stable:
                self.tracker.observe(item.path)
            return
        self.steps.works("ingest")
        self.waiting.changed(*(item.path.parent for item in stable))
        self.steps.run("status files", self._registered, batch)

    def _register(self, stable: StableFile) -> None:
        try:
            self.ingest.file_stable(stable)
        except Exception as exc:  # noqa: BLE001 - one poison file must not stop the others being registered
            if isinstance(exc, sqlite3.OperationalError | DiskFullError) or is_disk_full(exc):
                raise
            self.failed_files.failed(stable, exc)
        else:
            self.failed_files.registered(stable.path)

    def _registered(self, batch: Batch) -> None:
        """A committed batch: stop the running jobs its requests cancel, then have its status files written
        beside the next batch's registering (`BatchWrites`)."""
        for request in batch.cancels:
            self.commands.cancel_request(request, CANCELLED_BY_FIELD)  # running jobs stop on their worker
        for _job in batch.jobs:
            faults.reached("ingest")  # registered, no status file yet: what a restart must make up for
        if batch.jobs:
            self.publisher.write_batch(batch.jobs)
