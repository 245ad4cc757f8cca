"""The daemon: one loop that turns file events into renders and status files.

Everything that changes state happens on the loop's thread, in this order each
tick: take hints (watcher events, reconcile requests, render window triggers,
worker messages) from one inbox; ingest files that became stable; carry out
operator commands left by the CLI; revisit waiting jobs (for their source,
their start time or their render window); watch running jobs (status, window
closings, cancels); hand queued jobs to idle workers. Threads around it
(watchdog, APScheduler, one reader per worker pipe) only put messages in the
inbox; notifications are sent from a queue on a thread of their own.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from daemon import ray_cluster, ray_worker
from daemon.archive import Archiver
from daemon.config import Settings
from daemon.control import (
    PAUSED,
    Commands,
    Outcome,
    remove_job_files,
    remove_stale_temporaries,
    root_lock,
    state_lock,
)
from daemon.conventions import is_ignored, kind_of, root_of, storable
from daemon.errors import CommandRefused, ConfigError
from daemon.gpus import device_kind, worker_devices
from daemon.ingest import CANCELLED_BY_FIELD, Batch, FailedFiles, Ingest
from daemon.jobs import Jobs
from daemon.messages import (
    ClusterGone,
    Done,
    FromWorker,
    Hint,
    HintSink,
    Inbox,
    InboxMessage,
    Reconcile,
    Stop,
    UnknownMessages,
    WindowEdge,
    WorkerExited,
)
from daemon.notify import NotificationQueue, RootNotifiers
from daemon.progress import Display, NoDisplay
from daemon.resolve import load_setup
from daemon.roots import CHECK_SECONDS, RootStates
from daemon.scan import candidate_files, changed_files
from daemon.schedule import Schedule
from daemon.stability import StabilityTracker, StableFile
from daemon.states import ACTIVE_STATES, FINISHED_STATES, CommandState, Job, JobState
from daemon.status_file import BatchWrites, publish_newest, publish_newest_many
from daemon.store import Store
from daemon.workers import ProcessWorker, Worker, make_pool
from engine import faults
from engine.errors import DiskFullError, is_disk_full
from engine.files import FileLock

log = structlog.get_logger("hotshot.daemon")
TICK_SECONDS = 0.1
STEP_ERROR_LOG_SECONDS = 60.0
EXIT_BUSY_SECONDS = 2.0
# Files registered in one transaction at most: a sequence drop's status files appear batch by batch, and
# the CLI never waits long for the write lock.
BATCH_FILES = 500
CLUSTER_REFRESH_SECONDS = 30.0
# Waiting jobs are read when something may have changed for them (a file in their folder, a write to the
# database, a deadline, start time or window edge that came), and at least this often as a safety net.
WAITING_REVIEW_SECONDS = 10.0


class Daemon:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time,
                 display: Display | None = None, worker_kind: type[Worker] = ProcessWorker) -> None:
        """`worker_kind` is how jobs are rendered: in worker processes (what `hotshot run` does) or, for tests,
        on threads of this process (`ThreadWorker`)."""
        self.settings = settings
        self.clock = clock
        self.display = display or NoDisplay()
        for root in settings.roots:
            if not root.is_dir():
                raise ConfigError(f"watch root {root} does not exist or is not a folder")
        # Before anything is written: a cluster that cannot be joined stops the start and changes nothing. A
        # daemon started anew to rejoin its cluster (ray_cluster.start_again) holds its lock while it waits.
        rejoining = settings.executor == "ray" and ray_cluster.rejoining()
        self.ray = ray_cluster.connect(settings) if settings.executor == "ray" and not rejoining else None
        self._lock = state_lock(settings.state_dir, wait_seconds=2.0)  # a CLI command may hold it for a moment
        if self._lock is None:
            raise ConfigError(f"another hotshot daemon is running with state dir {settings.state_dir}")
        self._lock.write(str(os.getpid()))
        self._root_locks: list[FileLock] = []
        try:
            for root in settings.roots:
                lock = root_lock(root, settings.state_dir)
                if lock is not None:
                    self._root_locks.append(lock)
        except ConfigError:
            self.release_locks()
            raise
        if rejoining:
            self.ray = ray_cluster.connect(settings)
        self.store = Store.open(settings.database)
        devices = worker_devices(settings.devices)
        kind = device_kind(devices) if self.ray is None else "cuda" if settings.ray_gpus_per_slot else "cpu"
        self.setup = load_setup(settings, kind, self.store.cost_history)
        self.roots = RootStates(settings.roots, {root for root in settings.roots
                                                 if self.store.flag(f"mount {root}") == "1"},
                                lambda root, mounted: self.store.set_flag(f"mount {root}", "1" if mounted else "0"))
        self._roots_checked = float("-inf")
        self.inbox: Inbox = queue.Queue()
        self.unknown_messages = UnknownMessages()
        self.tracker = StabilityTracker(settings.stable_seconds, clock)
        policy = settings.defer_full_clips
        self.schedule = Schedule(settings.render_windows, clock, policy.window if policy else None,
                                 policy.longer_than_frames if policy else 0)
        # On a terminal the bars stand for the workers' info lines, which would break them up.
        worker_level = "warning" if display and settings.log_level in ("debug", "info") else settings.log_level
        cache_bytes = int(settings.model_cache_gb * 2**30) if settings.model_cache_gb else None
        if self.ray is not None:
            self.workers = ray_worker.make_ray_pool(settings, self.inbox, worker_level, cache_bytes)
        else:
            self.workers = make_pool(devices, self.inbox, settings.log_format, worker_level, cache_bytes, worker_kind)
        self._cluster_published: tuple[float, dict | None] = (float("-inf"), None)
        self._cluster_checked = float("-inf")
        self.setup.loaded = lambda model: any(model in handle.models for handle in self.workers)
        self.commands = Commands(self.store, settings, self.schedule, self.publish)
        self.jobs = Jobs(self.store, settings, self.setup, self.schedule, self.workers, self.commands,
                         self.publish, self.display, self.roots, self.unknown_messages)
        self.commands.stop_running = self.jobs.stop_running
        self.ingest = Ingest(self.store, settings, self.setup, clock, self.publish, self.schedule)
        self.batch_writes = BatchWrites(self.store)
        self.failed_files = FailedFiles()
        self.notifications = NotificationQueue()
        self.notifiers = RootNotifiers(((route.root, route) for route in settings.notify),
                                       sleep=self.notifications.wait)
        self.paused = self.store.flag(PAUSED) == "1"
        self.archiver = Archiver(self.store, settings.archive_after_days, clock)
        self._announced: dict[int, str] = {}
        self._gone_requests: dict[Path, float] = {}
        self._stop = threading.Event()
        self._stop_reason = ""
        self._dirty_folders: set[Path] = set()
        self._waiting_due = float("-inf")
        self._waiting_changes = -1
        self._reconciled = False
        self._failing_steps: set[str] = set()
        self._step_logged: dict[str, float] = {}
        self.scheduler: BackgroundScheduler | None = None
        self.watcher = None
        self.start_again = False  # set when the Ray cluster went away: `hotshot run` starts the daemon anew

    # -- running --------------------------------------------------------------

    def run(self, drain: bool = False) -> int:
        """Run until stopped (or, with `drain`, until nothing is left to do); return an exit code."""
        self._install_signal_handlers()
        if self.ray is not None:  # before orphans are requeued: a slot's actor may still render its job
            ray_worker.reclaim(self.workers, self.store.jobs((JobState.RUNNING,)))
        self._recover()
        self.workers.start_all()
        self.watcher = watcher = self._start_watcher()
        self.notifications.start()
        self.scheduler = scheduler = self._start_scheduler()
        log.info("daemon started", roots=[str(root) for root in self.settings.roots], drain=drain,
                 database=str(self.settings.database), devices=[handle.device for handle in self.workers],
                 paused=self.paused)
        self._log_windows()
        try:
            self._remove_stale_temporaries()
            self._guarded("watch roots", self._check_roots)
            self._guarded("reconcile", self.reconcile)
            while True:
                self.tick()
                if self._stop.is_set() and not self.workers.busy():
                    break
                if drain and self.finished_everything():
                    log.info("drained: nothing left to do now", paused=self.paused,
                             waiting_for_start=len([job for job in self.store.jobs((JobState.WAITING, JobState.QUEUED))
                                                    if job.scheduled]))
                    if self.failed_files.files:
                        log.warning("drained with files that could not be registered",
                                    files=self.failed_files.report())
                    break
        finally:
            scheduler.shutdown(wait=False)
            watcher.stop()
            self._guarded("status files", self._announce_written, self.batch_writes.close)
            self.workers.shutdown()
            if self.ray is not None:
                self._guarded("cluster", self._publish_cluster, True)
                if not self.start_again:  # leaving a cluster that is gone ends the process
                    self.ray.shutdown()
            self.notifications.stop(timeout=30)
            self.store.close()
            self.release_locks()
        return 0

    def release_locks(self) -> None:
        """Let go of the state folder and the watch roots (a daemon that ran, or one that could not start)."""
        for lock in self._root_locks:
            lock.write("")
            lock.release()
        self._root_locks = []
        self._lock.write("")
        self._lock.release()

    def stop(self, reason: str = "stop requested") -> None:
        """Stop claiming; let running chunks finish and checkpoint; then return from `run`."""
        if not self._stop.is_set():
            log.info("daemon stopping: running chunks finish and checkpoint, then their jobs wait in the queue",
                     reason=reason)
            self._stop_reason = reason
            self._stop.set()
            self.inbox.put(Stop())

    def tick(self) -> None:
        """One turn of the loop. A step that fails (a full disk, a database that cannot be written) is logged
        and tried again on a later turn; it never stops the daemon."""
        self._take_inbox(TICK_SECONDS)
        self._guarded("watch roots", self._check_roots)
        stable = self.tracker.poll()
        videos = [item for item in stable if kind_of(item.path) == "video"]
        self._guarded("probes", self.ingest.probe_ahead, [item.path for item in videos])
        for video in videos:
            self._register_batch([video])  # each alone: probing takes a while, and the lock is held meanwhile
        requests = [item for item in stable if kind_of(item.path) != "video"]
        for first in range(0, len(requests), BATCH_FILES):
            self._register_batch(requests[first:first + BATCH_FILES])
        # Status files still being written are waited for once no more files are on their way: a drop keeps
        # the writers busy beside registering; a lone request has its status file when the turn ends.
        self._guarded("status files", self._announce_written,
                      self.batch_writes.wait if len(self.tracker) == 0 else self.batch_writes.finished)
        self._guarded("commands", self._take_commands)
        self._guarded("deleted requests", self._cancel_deleted_requests)
        self._guarded("waiting jobs", self._review_waiting)
        self._guarded("running jobs", self.jobs.review_running)
        if not self._stop.is_set():
            self.workers.restart_due()
        if not self._stop.is_set() and not self.paused:
            self._guarded("dispatch", self.jobs.dispatch)
        self._guarded("archive", self.archiver.step)  # one small batch a turn while old finished jobs remain
        if self.ray is not None:
            self._guarded("cluster", self._publish_cluster)

    def _publish_cluster(self, now: bool = False) -> None:
        """Keep the cluster's picture for `hotshot status` in the database: when a slot changes, and at least
        every CLUSTER_REFRESH_SECONDS (nodes come and go without telling the slots)."""
        if not now and time.monotonic() - self._cluster_checked < self.settings.status_every_seconds:
            return
        self._cluster_checked = time.monotonic()
        written, document = self._cluster_published
        current = ray_worker.cluster_status(self.workers)
        changed = {key: value for key, value in current.items() if key != "updated"} != \
            {key: value for key, value in (document or {}).items() if key != "updated"}
        if now or changed or time.monotonic() - written >= CLUSTER_REFRESH_SECONDS:
            self.store.set_cluster(current)
            self._cluster_published = (time.monotonic(), current)

    def _guarded(self, step: str, action: Callable, *args) -> bool:
        """Run one step of the loop; log a failure (once a minute per step) and carry on. True if it worked."""
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive a full disk or an unwritable database
            self._step_failed(step, exc)
            return False
        self._step_works(step)
        return True

    def _step_failed(self, step: str, exc: Exception) -> None:
        now = time.monotonic()
        self._failing_steps.add(step)
        if now - self._step_logged.get(step, -STEP_ERROR_LOG_SECONDS) >= STEP_ERROR_LOG_SECONDS:
            self._step_logged[step] = now
            log.error("a step of the loop failed; it is tried again", step=step,
                      error=f"{type(exc).__name__}: {exc}", exc_info=True)

    def _step_works(self, step: str) -> None:
        if step in self._failing_steps:
            self._failing_steps.discard(step)
            log.info("a failed step of the loop works again", step=step)

    def _register_batch(self, stable: list[StableFile]) -> None:
        """Ingest stable files in one transaction, then write their status files. A full disk or a database
        that cannot be written fails the whole batch (its files are looked at again once they have been
        stable again); anything else about one file fails that file alone (`failed_files`)."""
        try:
            with self.ingest.batch() as batch:
                for item in stable:
                    self._register(item)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive a full disk or an unwritable database
            self._step_failed("ingest", exc)
            for item in stable:
                self.tracker.observe(item.path)
            return
        self._step_works("ingest")
        self._dirty_folders.update(item.path.parent for item in stable)
        self._guarded("status files", self._registered, batch)

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
            self._announce_written(lambda: self.batch_writes.submit(batch.jobs))

    def _announce_written(self, written: Callable[[], list[tuple[Job, Path, dict]]]) -> None:
        for item in written():
            self._announce(*item)

    @property
    def finished(self) -> list[int]:
        """Jobs that ended while this daemon ran, in order."""
        return self.jobs.finished

    def finished_everything(self) -> bool:
        """Nothing can happen now: jobs left wait for a render window or a time, or claiming is paused."""
        if not (self._reconciled and self.inbox.empty() and len(self.tracker) == 0 and not self._gone_requests
                and not self.batch_writes):
            return False
        for job in self.store.jobs(ACTIVE_STATES):
            if job.state == JobState.RUNNING or (job.state == JobState.QUEUED and not self.paused) \
                    or (job.state == JobState.WAITING and not job.scheduled):
                return False
        return True

    # -- inbox ----------------------------------------------------------------

    def _take_inbox(self, timeout: float) -> None:
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        handled = None
        while True:
            # A file written makes several events in a row (created, modified, closed); what a hint leads to
            # depends only on the file as it is when handled, so one of a run of equal hints is enough.
            if not (isinstance(item, Hint) and item == handled):
                self._guarded(getattr(item, "step", "inbox"), self._handle, item)
            handled = item
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: InboxMessage) -> None:
        match item:
            case Hint(kind, path):
                self._hint(kind, path)
            case Reconcile():
                self.reconcile()
            case FromWorker(worker, report):
                self.jobs.message(self.workers.named(worker), report)
                if isinstance(report, Done):  # its output is registered now: jobs waiting for it look again
                    self._dirty_folders.add(Path(report.result["output"]).parent)
            case WorkerExited(worker, pid, code):
                self._worker_exit(self.workers.named(worker), pid, code)
            case WindowEdge(name, edge):
                window = self.settings.render_windows[name]
                log.info(f"render window {edge}", window=name, open=window.is_open(self.schedule.now()))
            case ClusterGone(reason):
                self._cluster_gone(reason)
            case Stop():
                if self._stop.is_set():
                    for handle in self.workers:
                        if handle.job_id is not None:
                            handle.stop_after_chunk(self._stop_reason)
            case _:
                self.unknown_messages("daemon", item)

    def _hint(self, kind: str, path: Path) -> None:
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
        self._dirty_folders.add(path.parent)
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
                self._dirty_folders.add(path.parent)
        for name in self.store.active_request_paths():
            request = Path(name)
            if name not in seen and root_of(request, present) is not None and not request.exists():
                self._gone_requests.setdefault(request, time.monotonic())
        self.jobs.requeue_orphans()
        self._sweep_work_folders()
        self._reconciled = True

    def _check_roots(self) -> None:
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
            if self.watcher is not None:
                self.watcher.rewatch(root)
        if back and self._reconciled:
            self.reconcile()

    def _root_present(self, root: Path | None) -> bool:
        """Whether `root` is there right now (a file that vanished with its root was not deleted)."""
        return root is None or self.roots.look(root)

    def _sweep_work_folders(self) -> None:
        """Checkpoints nobody can use any more: of finished jobs, and of failed ones kept long enough for a retry."""
        kept_since = datetime.now(UTC) - timedelta(hours=self.settings.keep_failed_checkpoints_hours)
        for folder in self.settings.work_dir.glob("job-*"):
            job_id = folder.name.removeprefix("job-")
            job = self.store.job(int(job_id)) if job_id.isdigit() else None
            if job is None or job.state in (JobState.DONE, JobState.CANCELLED) or (job.state == JobState.FAILED and (
                    not job.finished_at or datetime.fromisoformat(job.finished_at) <= kept_since)):
                if job is not None:
                    remove_job_files(job, self.settings.work_dir)
                else:
                    shutil.rmtree(folder, ignore_errors=True)
                log.info("removed checkpoints", job=job and job.id, state=job and job.state)

    def _remove_stale_temporaries(self) -> None:
        """Half-written files of a daemon or worker that crashed are deleted, never published."""
        remove_stale_temporaries([*self.settings.roots, self.settings.work_dir])

    def _recover(self) -> None:
        """After a stop or a crash: write the status files a crash kept from being written, finish cancels
        that were under way, put running jobs back in the queue."""
        first = self.store.unpublished_since()
        if first is not None:
            job_ids = self.store.job_ids_since(first)
            log.info("writing the status files of jobs registered just before the last stop", jobs=len(job_ids))
            self.publish_many(job_ids)
            self.store.published(first)
        self.jobs.requeue_orphans("the daemon restarted while this job ran; it resumes")

    # -- commands and cancels -------------------------------------------------

    def _take_commands(self) -> None:
        """Carry out what the CLI left in the command box, answering in the same row."""
        for row in self.store.pending_commands():
            with structlog.contextvars.bound_contextvars(command=row["command"], target=row["target"]):
                try:
                    outcome = self.commands.apply(row["command"], row["target"])
                except CommandRefused as exc:
                    self.store.finish_command(row["id"], CommandState.REFUSED, Outcome(str(exc)).to_json())
                    log.info("command refused", error=str(exc))
                except Exception as exc:  # noqa: BLE001 - a command that breaks must not stop the daemon
                    log.error("command failed", exc_info=True)
                    self.store.finish_command(row["id"], CommandState.REFUSED,
                                              Outcome(f"the command failed: {exc}").to_json())
                else:
                    self.store.finish_command(row["id"], CommandState.DONE, outcome.to_json())
                    log.info("command done", result=outcome.message)
            self.paused = self.store.flag(PAUSED) == "1"

    def _cancel_deleted_requests(self) -> None:
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

    def _review_waiting(self) -> None:
        """Revisit jobs waiting for their source; release jobs whose start came; hold those whose window shut.

        Reading every waiting job on every turn made thousands of them (a drop saved for the night) a cost
        of an idle loop; they are read only when something may have changed for them (`WAITING_REVIEW_SECONDS`)."""
        now = self.clock()
        changes = self.store.db.conn.total_changes  # this connection's writes: registering, commands, ends
        if not self._dirty_folders and changes == self._waiting_changes and now < self._waiting_due:
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
                elif Path(job.request_path).parent in self._dirty_folders or now >= (job.wait_deadline or 0):
                    self.ingest.revisit(job)
                else:
                    due = min(due, job.wait_deadline)
        self._dirty_folders.clear()
        self.jobs.review_scheduled(scheduled)
        moment = self.schedule.now()
        for window in self.settings.render_windows.values():  # jobs released or held at its edges
            due = min([due, *(edge.timestamp() for edge in (window.next_open(moment), window.next_close(moment))
                              if edge.timestamp() > now)])
        self._waiting_due = due
        self._waiting_changes = self.store.db.conn.total_changes

    # -- workers --------------------------------------------------------------

    def _worker_exit(self, handle: Worker, pid: int | None, code: int | None) -> None:
        if handle.pid is not None and pid not in (None, handle.pid):
            return
        job_id, handle.job_id = handle.job_id, None
        log.warning("worker exited", worker=handle.name, code=code, job=job_id)
        if not self._stop.is_set():
            self.workers.exited(handle)
        if job_id is not None:
            # What it was writing stays half-written under hidden names: remove it now, not at the next start.
            job = self.store.job(job_id)
            folders = [self.settings.work_dir / f"job-{job_id:06d}"]
            if job and job.output_path:
                folders.append(Path(job.output_path).parent)
            remove_stale_temporaries(folders)
            if handle.lost_because and not handle.killed_because:
                self.jobs.lost(job_id, handle.lost_because)
                return
            error = f"the worker was killed: {handle.killed_because}" if handle.killed_because \
                else f"the worker process died (exit code {code})"
            self.jobs.failed(job_id, error, retryable=True)

    def _cluster_gone(self, reason: str) -> None:
        """The Ray cluster joined by a plain address is gone: its slots' jobs are back in line (their attempts
        given back), and the daemon stops so that `hotshot run` starts it again to join the cluster when it is
        back (this process cannot leave the cluster and live; `ray_cluster.start_again`)."""
        if self.start_again:
            return
        log.warning("the Ray cluster went away; the daemon starts again and waits for it", reason=reason)
        self.start_again = True
        for handle in self.workers:
            if handle.job_id is not None:
                job_id, handle.job_id = handle.job_id, None
                self.jobs.lost(job_id, f"the Ray cluster went away ({reason})")
        self.stop("the Ray cluster went away")

    # -- status files and notifications ---------------------------------------

    def publish(self, job_id: int) -> None:
        """Write the status file of a job, if it is the newest job of its request; announce how a job ended."""
        self._announce_written(lambda: self.batch_writes.wait_for(job_id))  # its registered status first
        published = publish_newest(self.store, job_id)
        if published is not None:
            self._announce(*published)

    def publish_many(self, job_ids: list[int]) -> None:
        """`publish` for many jobs, their status files written side by side."""
        for published in publish_newest_many(self.store, job_ids):
            self._announce(*published)

    def _announce(self, job: Job, path: Path, document: dict) -> None:
        """Tell the notifiers how a job ended (once per ending)."""
        if job.state not in FINISHED_STATES:
            self._announced.pop(job.id, None)  # a retried job is announced again when it ends
        elif self._announced.get(job.id) != job.state:
            self._announced[job.id] = job.state
            for notifier in self.notifiers.for_request(Path(job.request_path)):
                self.notifications.submit(notifier, job.state, path, document)

    # -- plumbing -------------------------------------------------------------

    def _start_watcher(self):
        from daemon.watch import Watcher

        watcher = Watcher(self.settings.roots, HintSink(self.inbox), polling=self.settings.observer == "polling",
                          poll_seconds=self.settings.poll_seconds, overflowed=self._events_lost)
        watcher.start()
        return watcher

    def _events_lost(self) -> None:
        """The kernel's queue of file events overflowed (on the watcher's thread): scan the roots now."""
        log.warning("file events were lost (the kernel's inotify queue overflowed; fs.inotify.max_queued_events "
                    "may be raised): scanning the roots now")
        self.inbox.put(Reconcile())

    def _start_scheduler(self) -> BackgroundScheduler:
        """APScheduler, rebuilt from the settings at each start: the reconcile interval and, for every render
        window, cron triggers at its opening and closing. They only wake the loop; the clock decides."""
        scheduler = BackgroundScheduler(timezone="UTC")
        scheduler.add_job(self.inbox.put, "interval", args=[Reconcile()], seconds=self.settings.reconcile_seconds,
                          id="reconcile")
        for name, window in self.settings.render_windows.items():
            opens, closes = window.triggers()
            scheduler.add_job(self.inbox.put, opens, args=[WindowEdge(name, "opens")], id=f"window {name} opens")
            scheduler.add_job(self.inbox.put, closes, args=[WindowEdge(name, "closes")], id=f"window {name} closes")
        scheduler.start()
        return scheduler

    def _log_windows(self) -> None:
        now = self.schedule.now()
        for name, window in self.settings.render_windows.items():
            log.info("render window", window=name, open=window.is_open(now),
                     opens=window.next_open(now).isoformat(), closes=window.next_close(now).isoformat(),
                     at_close=window.spec.at_close)

    def _requeue_before_exit(self) -> None:
        """On a second signal: put the running jobs back in the queue and say so in their status files, so
        nobody reads "about 2 s left" until the next start. Through a connection of its own, since the
        signal may have interrupted the loop inside a transaction; given up after a moment if it cannot."""
        try:
            store = Store.open(self.settings.database)
            store.db.execute(f"PRAGMA busy_timeout = {int(EXIT_BUSY_SECONDS * 1000)}")
            try:
                for job in store.jobs((JobState.RUNNING,)):
                    if job.cancel_reason:
                        continue  # the next start finishes the cancel
                    store.requeue(job.id, "interrupted", "stopped at once by a second signal",
                                  error="stopped at once by a second signal; resumes from its last chunk")
                    publish_newest(store, job.id)
            finally:
                store.close()
        except Exception:  # noqa: BLE001 - exiting now matters more; the next start requeues them anyway
            log.warning("running jobs not requeued before exiting; the next start does it", exc_info=True)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(number, frame):
            if self._stop.is_set():
                log.warning("second signal: stopping now")
                for handle in self.workers:
                    handle.kill("a second signal stopped the daemon")
                self._requeue_before_exit()
                os._exit(1)
            self.stop(f"{signal.Signals(number).name} received")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
