"""Publishing what the loop did: each request's status file, a notification when a job ends, and the Ray
cluster's picture for `hotshot status`.

Status files are written on the loop's thread (`publish`), or for a batch of registered jobs side by side on
threads of their own (`BatchWrites` in daemon/status_file.py) while the loop registers the next batch. Every
file written, either way, is handed to the notifiers of its watch root, which hear of each ending once;
notifications are sent from a queue on a thread of its own.
"""

from __future__ import annotations

import time
from pathlib import Path

from daemon import ray_worker
from daemon.config import Settings
from daemon.notify import NotificationQueue, RootNotifiers
from daemon.states import FINISHED_STATES, Job
from daemon.status_file import BatchWrites, publish_newest, publish_newest_many
from daemon.store import Store
from daemon.workers import WorkerPool

CLUSTER_REFRESH_SECONDS = 30.0


class Publisher:
    """Writes status files and announces how jobs ended. It owns the batches of status files being written
    and the notification queue."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.batch_writes = BatchWrites(store)
        self.notifications = NotificationQueue()
        self.notifiers = RootNotifiers(((route.root, route) for route in settings.notify),
                                       sleep=self.notifications.wait)
        self._announced: dict[int, str] = {}

    def publish(self, job_id: int) -> None:
        """Write the status file of a job, if it is the newest job of its request; announce how a job ended."""
        self._announce_all(self.batch_writes.wait_for(job_id))  # its registered status first
        published = publish_newest(self.store, job_id)
        if published is not None:
            self._announce(*published)

    def publish_many(self, job_ids: list[int]) -> None:
        """`publish` for many jobs, their status files written side by side."""
        for published in publish_newest_many(self.store, job_ids):
            self._announce(*published)

    def write_batch(self, job_ids: list[int]) -> None:
        """Have the status files of a committed batch written beside the loop's next steps (`BatchWrites`)."""
        self._announce_all(self.batch_writes.submit(job_ids))

    def written(self, wait: bool) -> None:
        """Announce the batches of status files written by now; with `wait`, wait for every batch first."""
        self._announce_all(self.batch_writes.wait() if wait else self.batch_writes.finished())

    def writing(self) -> bool:
        """Whether status files of registered batches are still being written."""
        return bool(self.batch_writes)

    def close(self) -> None:
        """Wait for every batch of status files, and announce them."""
        self._announce_all(self.batch_writes.close())

    def _announce_all(self, written: list[tuple[Job, Path, dict]]) -> None:
        for item in written:
            self._announce(*item)

    def _announce(self, job: Job, path: Path, document: dict) -> None:
        """Tell the notifiers how a job ended (once per ending)."""
        if job.state not in FINISHED_STATES:
            self._announced.pop(job.id, None)  # a retried job is announced again when it ends
        elif self._announced.get(job.id) != job.state:
            self._announced[job.id] = job.state
            for notifier in self.notifiers.for_request(Path(job.request_path)):
                self.notifications.submit(notifier, job.state, path, document)


class ClusterPage:
    """The Ray cluster's picture for `hotshot status`, kept in the database."""

    def __init__(self, store: Store, settings: Settings, workers: WorkerPool) -> None:
        self.store = store
        self.settings = settings
        self.workers = workers
        self._published: tuple[float, dict | None] = (float("-inf"), None)
        self._checked = float("-inf")

    def publish(self, now: bool = False) -> None:
        """Write the picture when a slot changes, and at least every CLUSTER_REFRESH_SECONDS (nodes come and go
        without telling the slots); with `now`, at once."""
        if not now and time.monotonic() - self._checked < self.settings.status_every_seconds:
            return
        self._checked = time.monotonic()
        written, document = self._published
        current = ray_worker.cluster_status(self.workers)
        changed = {key: value for key, value in current.items() if key != "updated"} != \
            {key: value for key, value in (document or {}).items() if key != "updated"}
        if now or changed or time.monotonic() - written >= CLUSTER_REFRESH_SECONDS:
            self.store.set_cluster(current)
            self._published = (time.monotonic(), current)
