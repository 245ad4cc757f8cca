"""The daemon: one loop that turns file events into renders and status files.

Everything that changes state happens on the loop's thread, in this order each
tick: take hints (watcher events, reconcile requests, render window triggers,
worker messages) from one inbox; ingest files that became stable; carry out
operator commands left by the CLI; revisit waiting jobs (for their source,
their start time or their render window); watch running jobs (status, window
closings, cancels); hand queued jobs to idle workers. Threads around it
(watchdog, APScheduler, one reader per worker pipe) only put messages in the
inbox; notifications are sent from a queue on a thread of their own.

`Daemon` holds the loop and its inbox and composes the collaborators that do
each step, each the owner of its own state: `Reconciler` (daemon/reconcile.py:
file events, the reconcile scan, watch roots, deleted requests),
`Registration` (daemon/registration.py: stable files to jobs), `WaitingJobs`
(daemon/waiting.py), `Jobs` (daemon/jobs.py: dispatch, workers' reports),
`Publisher` and `ClusterPage` (daemon/publishing.py: status files,
notifications, the cluster's picture). daemon/wakeups.py starts the watcher
and the scheduler, daemon/housekeeping.py makes good what a stop or a crash
left behind, and `Steps` (daemon/steps.py) keeps a failing step from stopping
the loop.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from daemon import ray_cluster, ray_worker
from daemon.archive import Archiver
from daemon.config import Settings
from daemon.control import PAUSED, Commands, Outcome, root_lock, state_lock
from daemon.errors import CommandRefused, ConfigError
from daemon.gpus import device_kind, worker_devices
from daemon.housekeeping import recover, remove_job_temporaries, remove_leftover_temporaries, requeue_before_exit
from daemon.ingest import FailedFiles, Ingest
from daemon.jobs import Jobs
from daemon.messages import (
    ClusterGone,
    Done,
    FromWorker,
    Hint,
    Inbox,
    InboxMessage,
    Reconcile,
    Stop,
    UnknownMessages,
    WindowEdge,
    WorkerExited,
)
from daemon.progress import Display, NoDisplay
from daemon.publishing import ClusterPage, Publisher
from daemon.reconcile import Reconciler
from daemon.registration import Registration
from daemon.resolve import load_setup
from daemon.roots import RootStates
from daemon.schedule import Schedule
from daemon.stability import StabilityTracker
from daemon.states import ACTIVE_STATES, CommandState, JobState
from daemon.steps import Steps
from daemon.store import Store
from daemon.waiting import WaitingJobs
from daemon.wakeups import start_scheduler, start_watcher
from daemon.workers import ProcessWorker, Worker, make_pool
from engine.files import FileLock

log = structlog.get_logger("hotshot.daemon")
TICK_SECONDS = 0.1


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
        self.cluster_page = ClusterPage(self.store, settings, self.workers)
        self.setup.loaded = lambda model: any(model in handle.models for handle in self.workers)
        self.steps = Steps()
        self.publisher = publisher = Publisher(self.store, settings)
        self.commands = Commands(self.store, settings, self.schedule, publisher.publish)
        self.jobs = Jobs(self.store, settings, self.setup, self.schedule, self.workers, self.commands,
                         publisher.publish, self.display, self.roots, self.unknown_messages)
        self.commands.stop_running = self.jobs.stop_running
        self.ingest = Ingest(self.store, settings, self.setup, clock, publisher.publish, self.schedule)
        self.failed_files = FailedFiles()
        self.waiting = WaitingJobs(self.store, settings, self.ingest, self.jobs, self.roots, self.schedule, clock)
        self.registration = Registration(self.ingest, self.tracker, self.failed_files, self.commands, publisher,
                                         self.waiting, self.steps)
        self.reconciler = Reconciler(settings, self.store, self.roots, self.tracker, self.failed_files, self.ingest,
                                     self.jobs, self.commands, self.waiting, self._rewatch)
        self.paused = self.store.flag(PAUSED) == "1"
        self.archiver = Archiver(self.store, settings.archive_after_days, clock)
        self._stop = threading.Event()
        self._stop_reason = ""
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
        self.watcher = watcher = start_watcher(self.settings, self.inbox)
        self.publisher.notifications.start()
        self.scheduler = scheduler = start_scheduler(self.settings, self.inbox)
        log.info("daemon started", roots=[str(root) for root in self.settings.roots], drain=drain,
                 database=str(self.settings.database), devices=[handle.device for handle in self.workers],
                 paused=self.paused)
        self._log_windows()
        try:
            remove_leftover_temporaries(self.settings)
            self.steps.run("watch roots", self.reconciler.check_roots)
            self.steps.run("reconcile", self.reconcile)
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
            self.steps.run("status files", self.publisher.close)
            self.workers.shutdown()
            if self.ray is not None:
                self.steps.run("cluster", self.cluster_page.publish, True)
                if not self.start_again:  # leaving a cluster that is gone ends the process
                    self.ray.shutdown()
            self.publisher.notifications.stop(timeout=30)
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
        self.steps.run("watch roots", self.reconciler.check_roots)
        self.registration.register_stable()
        self.steps.run("commands", self._take_commands)
        self.steps.run("deleted requests", self.reconciler.cancel_deleted_requests)
        self.steps.run("waiting jobs", self.waiting.review)
        self.steps.run("running jobs", self.jobs.review_running)
        if not self._stop.is_set():
            self.workers.restart_due()
        if not self._stop.is_set() and not self.paused:
            self.steps.run("dispatch", self.jobs.dispatch)
        self.steps.run("archive", self.archiver.step)  # one small batch a turn while old finished jobs remain
        if self.ray is not None:
            self.steps.run("cluster", self.cluster_page.publish)

    def reconcile(self) -> None:
        """Compare the roots that are there with the database: observe what changed, note what vanished."""
        self.reconciler.reconcile()

    @property
    def finished(self) -> list[int]:
        """Jobs that ended while this daemon ran, in order."""
        return self.jobs.finished

    def finished_everything(self) -> bool:
        """Nothing can happen now: jobs left wait for a render window or a time, or claiming is paused."""
        if not (self.reconciler.settled() and self.inbox.empty() and len(self.tracker) == 0
                and not self.publisher.writing()):
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
                self.steps.run(getattr(item, "step", "inbox"), self._handle, item)
            handled = item
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: InboxMessage) -> None:
        match item:
            case Hint(kind, path):
                self.reconciler.hint(kind, path)
            case Reconcile():
                self.reconcile()
            case FromWorker(worker, report):
                self.jobs.message(self.workers.named(worker), report)
                if isinstance(report, Done):  # its output is registered now: jobs waiting for it look again
                    self.waiting.changed(Path(report.result["output"]).parent)
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

    # -- commands -------------------------------------------------------------

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

    # -- workers --------------------------------------------------------------

    def _worker_exit(self, handle: Worker, pid: int | None, code: int | None) -> None:
        if handle.pid is not None and pid not in (None, handle.pid):
            return
        job_id, handle.job_id = handle.job_id, None
        log.warning("worker exited", worker=handle.name, code=code, job=job_id)
        if not self._stop.is_set():
            self.workers.exited(handle)
        if job_id is not None:
            remove_job_temporaries(self.store, self.settings, job_id)
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

    # -- plumbing -------------------------------------------------------------

    def _recover(self) -> None:
        """After a stop or a crash: write the status files a crash kept from being written, finish cancels
        that were under way, put running jobs back in the queue."""
        recover(self.store, self.jobs, self.publisher)

    def _rewatch(self, root: Path) -> None:
        """Watch a root that is back afresh (once the watcher runs)."""
        if self.watcher is not None:
            self.watcher.rewatch(root)

    def _log_windows(self) -> None:
        now = self.schedule.now()
        for name, window in self.settings.render_windows.items():
            log.info("render window", window=name, open=window.is_open(now),
                     opens=window.next_open(now).isoformat(), closes=window.next_close(now).isoformat(),
                     at_close=window.spec.at_close)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(number, frame):
            if self._stop.is_set():
                log.warning("second signal: stopping now")
                for handle in self.workers:
                    handle.kill("a second signal stopped the daemon")
                requeue_before_exit(self.settings.database)
                os._exit(1)
            self.stop(f"{signal.Signals(number).name} received")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
