"""The daemon: one loop that turns file events into renders and status files.

Everything that changes state happens on the loop's thread, in this order each
tick: take hints (watcher events, reconcile requests, worker messages) from
one inbox; ingest files that became stable; revisit requests waiting for
their source; hand queued jobs to idle workers. Threads around it (watchdog,
APScheduler, one reader per worker pipe) only put messages in the inbox.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.config import Settings
from daemon.conventions import is_ignored, kind_of, root_of
from daemon.errors import ConfigError
from daemon.ingest import Ingest
from daemon.presets import load_presets
from daemon.resolve import render_job
from daemon.scan import candidate_files, changed_files, stale_temporaries
from daemon.stability import StabilityTracker
from daemon.status_file import write_status
from daemon.store import ACTIVE_STATES, Store, utc_now
from daemon.workers import WorkerHandle, make_pool
from engine.catalog import CatalogError, load_catalog
from engine.errors import MediaError
from engine.probe import probe

log = structlog.get_logger("hotshot.daemon")
TICK_SECONDS = 0.1
WORKER_RESTART_SECONDS = 5.0


@dataclass
class LiveJob:
    """What the loop keeps about a running job between progress messages."""

    job_id: int
    worker: str
    started: float
    estimate_seconds: float | None
    last_status: float = 0.0
    resumed: int = 0
    progress: dict = field(default_factory=dict)


class Daemon:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        try:
            self.catalog = load_catalog(settings.catalogs, settings.models_dir)
        except CatalogError as exc:
            raise ConfigError(str(exc)) from exc
        self.presets = load_presets(settings.presets_file)
        for root in settings.roots:
            if not root.is_dir():
                raise ConfigError(f"watch root {root} does not exist or is not a folder")
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_state_dir(settings.state_dir)
        self.store = Store.open(settings.database)
        self.inbox: queue.Queue = queue.Queue()
        self.tracker = StabilityTracker(settings.stable_seconds, clock)
        self.ingest = Ingest(self.store, settings, self.catalog, self.presets, clock, settings.device_kind,
                             self.publish)
        self.workers = make_pool(settings.devices, self.inbox, settings.log_format, settings.log_level)
        self.live: dict[int, LiveJob] = {}
        self.finished: list[int] = []
        self._stop = threading.Event()
        self._stop_reason = ""
        self._dirty_folders: set[Path] = set()
        self._reconciled = False
        self._worker_started: dict[str, float] = {}

    # -- running --------------------------------------------------------------

    def run(self, drain: bool = False) -> int:
        """Run until stopped (or, with `drain`, until nothing is left to do); return an exit code."""
        self._install_signal_handlers()
        for job_id in self.store.recover_running():
            self.publish(job_id)
        for handle in self.workers:
            self._start_worker(handle)
        watcher = self._start_watcher()
        scheduler = BackgroundScheduler(timezone="UTC")
        scheduler.add_job(lambda: self.inbox.put(("reconcile",)), "interval",
                          seconds=self.settings.reconcile_seconds, id="reconcile")
        scheduler.start()
        log.info("daemon started", roots=[str(root) for root in self.settings.roots], drain=drain,
                 database=str(self.settings.database))
        try:
            self._remove_stale_temporaries()
            self.reconcile()
            while True:
                self.tick()
                if self._stop.is_set() and not any(handle.job_id for handle in self.workers):
                    break
                if drain and self.finished_everything():
                    log.info("drained: nothing left to do")
                    break
        finally:
            scheduler.shutdown(wait=False)
            watcher.stop()
            for handle in self.workers:
                handle.shutdown()
            self.store.close()
            self._lock.close()
        return 0

    def stop(self, reason: str = "stop requested") -> None:
        """Stop claiming; let running chunks finish and checkpoint; then return from `run`."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
            self.inbox.put(("stop",))

    def tick(self) -> None:
        self._take_inbox(TICK_SECONDS)
        for stable in sorted(self.tracker.poll(), key=lambda item: kind_of(item.path) != "video"):
            self.ingest.file_stable(stable)
            self._dirty_folders.add(stable.path.parent)
        self._revisit_waiting()
        if not self._stop.is_set():
            self._dispatch()

    def finished_everything(self) -> bool:
        return (self._reconciled and self.inbox.empty() and len(self.tracker) == 0
                and not self.store.jobs(ACTIVE_STATES))

    # -- inbox ----------------------------------------------------------------

    def _take_inbox(self, timeout: float) -> None:
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(item)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "hint":
            self._hint(item[1], item[2])
        elif kind == "reconcile":
            self.reconcile()
        elif kind == "worker":
            self._worker_message(self._worker(item[1]), item[2])
        elif kind == "worker-exit":
            self._worker_exit(self._worker(item[1]), item[2])
        elif kind == "stop" and self._stop.is_set():
            for handle in self.workers:
                if handle.job_id is not None:
                    handle.stop_after_chunk(self._stop_reason)

    def _hint(self, kind: str, path: Path) -> None:
        root = root_of(path, self.settings.roots)
        if root is None or is_ignored(path, root):
            return
        if kind == "folder":
            if path.is_dir():
                for found in candidate_files(path):
                    self.tracker.observe(found)
            return
        if kind_of(path) is None:
            return
        self._dirty_folders.add(path.parent)
        if not path.exists():
            self.tracker.forget(path)
            self.ingest.file_gone(path)
            return
        self.tracker.observe(path)

    def reconcile(self) -> None:
        """Compare the roots with the database: observe what changed, note what vanished."""
        known = self.store.known_files()
        for path in changed_files(self.settings.roots, known):
            self.tracker.observe(path)
        for row in self.store.db.execute("SELECT path FROM media WHERE state != 'missing'").fetchall():
            path = Path(row[0])
            if not path.exists():
                self.ingest.file_gone(path)
                self._dirty_folders.add(path.parent)
        self._reconciled = True

    def _remove_stale_temporaries(self) -> None:
        """Half-written files of a daemon or worker that crashed are deleted, never published."""
        for path in stale_temporaries([*self.settings.roots, self.settings.work_dir]):
            with contextlib.suppress(OSError):
                path.unlink()
                log.info("removed a stale temporary file", path=str(path))

    def _revisit_waiting(self) -> None:
        now = self.clock()
        for job in self.store.jobs(("waiting",)):
            if Path(job["request_path"]).parent in self._dirty_folders or now >= (job["wait_deadline"] or 0):
                self.ingest.revisit(job)
        self._dirty_folders.clear()

    # -- jobs and workers -----------------------------------------------------

    def _dispatch(self) -> None:
        for handle in self.workers:
            if not handle.idle:
                continue
            job = self.store.claim_next(handle.name, self.clock())
            if job is None:
                return
            with structlog.contextvars.bound_contextvars(job=job["id"]):
                try:
                    spec = render_job(job, self.store, self.catalog, self.settings.work_dir)
                except Exception as exc:  # noqa: BLE001 - a job that cannot even be prepared fails alone
                    log.error("job preparation failed", exc_info=True)
                    self._finish(job["id"], "failed", error=f"could not prepare the render: {exc}")
                    continue
                if not job.get("spec"):
                    self.store.update_job(job["id"], spec=spec.model_dump(mode="json", exclude={"done_chunks"}),
                                          render_number=int(spec.render_id.rsplit("_r", 1)[1]),
                                          output_path=str(spec.output), manifest_path=str(spec.manifest))
                self.live[job["id"]] = LiveJob(job["id"], handle.name, time.monotonic(),
                                               (job.get("estimate") or {}).get("seconds"),
                                               resumed=len(spec.done_chunks))
                handle.assign(job["id"], spec.model_dump(mode="json"))
                log.info("job started", worker=handle.name, output=spec.output.name, resume=len(spec.done_chunks))
                self.publish(job["id"])

    def _worker_message(self, handle: WorkerHandle, message: dict) -> None:
        kind = message["type"]
        if kind == "ready":
            handle.pid = message["pid"]
            return
        job_id = message["job"]
        with structlog.contextvars.bound_contextvars(job=job_id):
            if kind == "progress":
                self._progress(job_id, message["progress"])
            elif kind == "chunk":
                self.store.add_chunk(job_id, message["record"])
                self._progress(job_id, None, force_status=True)
            elif kind == "done":
                handle.job_id = None
                self._done(job_id, message["result"])
            elif kind == "failed":
                handle.job_id = None
                self._failed(job_id, message["error"], message.get("retryable", True))
            elif kind == "interrupted":
                handle.job_id = None
                self.live.pop(job_id, None)
                self.store.uncount_attempt(job_id)
                self.store.update_job(job_id, "interrupted", message["reason"], state="queued", worker=None,
                                      progress=None, error=f"paused ({message['reason']}); resumes from its last chunk")
                self.publish(job_id)

    def _worker_exit(self, handle: WorkerHandle, info: dict) -> None:
        if handle.pid is not None and info.get("pid") not in (None, handle.pid):
            return
        job_id, handle.job_id = handle.job_id, None
        log.warning("worker exited", worker=handle.name, code=info.get("code"), job=job_id)
        if job_id is not None:
            self._failed(job_id, f"the worker process died (exit code {info.get('code')})", retryable=True)
        if not self._stop.is_set():
            self._start_worker(handle)

    def _start_worker(self, handle: WorkerHandle) -> None:
        last = self._worker_started.get(handle.name)
        if last is not None and time.monotonic() - last < WORKER_RESTART_SECONDS:
            time.sleep(WORKER_RESTART_SECONDS - (time.monotonic() - last))
        self._worker_started[handle.name] = time.monotonic()
        handle.start()

    def _worker(self, name: str) -> WorkerHandle:
        return next(handle for handle in self.workers if handle.name == name)

    def _progress(self, job_id: int, progress: dict | None, force_status: bool = False) -> None:
        live = self.live.get(job_id)
        if live is None:
            return
        if progress is not None:
            live.progress = with_eta(progress, time.monotonic() - live.started, live.estimate_seconds)
        self.store.set_progress(job_id, live.progress)
        if force_status or time.monotonic() - live.last_status >= self.settings.status_every_seconds:
            live.last_status = time.monotonic()
            self.publish(job_id)

    def _done(self, job_id: int, result: dict) -> None:
        job = self.store.job(job_id)
        live = self.live.pop(job_id, None)
        source = self.store.media(job["source_media_id"])
        output = Path(result["output"])
        try:
            info = probe(output, self.settings.ffprobe_timeout_seconds)
            stat = output.stat()
            self.store.save_media(output, job["shot_id"], kind="render", state="ready", size=stat.st_size,
                                  mtime_ns=stat.st_mtime_ns, probe=info.to_dict(), error=None,
                                  parent_id=source["id"], root_id=source["root_id"] or source["id"], job_id=job_id)
        except (MediaError, OSError) as exc:
            self._failed(job_id, f"the render finished but its output cannot be read: {exc}", retryable=True)
            return
        outputs = {
            "video": output.name,
            "render_info": Path(result["manifest"]).name,
            "frames": result["frames"],
            "width": result["width"],
            "height": result["height"],
            "seconds": round(result["seconds"], 2),
            "estimate_seconds": (job.get("estimate") or {}).get("seconds"),
            "chunks_resumed": result["chunks_resumed"],
        }
        sequence = result["manifest_data"].get("image_sequence")
        if sequence:
            outputs["image_sequence"] = f"{sequence['folder']}/ ({sequence['frames']} {sequence['format']} frames)"
        self._refine_calibration(job, result["manifest_data"])
        progress = dict(live.progress) if live else {}
        progress.update(percent=100.0, eta_seconds=0, frames_done=result["frames"])
        self._finish(job_id, "done", outputs=outputs, progress=progress)
        shutil.rmtree(self.settings.work_dir / f"job-{job_id:06d}", ignore_errors=True)
        log.info("job done", output=str(output), seconds=round(result["seconds"], 2))

    def _refine_calibration(self, job: dict, manifest: dict) -> None:
        """Learn this model's real speed on this device kind from the chunks rendered in this attempt."""
        rendered = [chunk for chunk in manifest["chunk_plan"]["chunks"] if not chunk["resumed"]]
        seconds = sum(chunk["seconds"] for chunk in rendered)
        out = manifest["output"]
        settings = job["settings"]
        passes = 2 if settings["cfg"]["value"] > 1.0 else 1
        units = sum(chunk["diffused_frames"] for chunk in rendered) * settings["steps"]["value"] * passes \
            * out["width"] * out["height"] / 1e6
        if units > 0 and seconds > 0:
            device = "cuda" if manifest["model"]["device"].startswith("cuda") else "cpu"
            value = self.store.refine_calibration(manifest["model"]["id"], device, seconds / units)
            log.info("calibration refined", model=manifest["model"]["id"], device=device,
                     seconds_per_megapixel_frame_step=round(value, 5))

    def _failed(self, job_id: int, error: str, retryable: bool) -> None:
        self.live.pop(job_id, None)
        job = self.store.job(job_id)
        if retryable and job["attempts"] < self.settings.max_attempts:
            delay = self.settings.retry_backoff_seconds * 2 ** (job["attempts"] - 1)
            self.store.update_job(job_id, "retry", error, state="queued", worker=None, error=error,
                                  error_kind="transient", not_before=self.clock() + delay, progress=None)
            log.warning("job will be retried", error=error, attempt=job["attempts"], delay=delay)
            self.publish(job_id)
            return
        if retryable:
            error = f"{error} (gave up after {job['attempts']} attempts)"
        self._finish(job_id, "failed", error=error, error_kind="transient" if retryable else "input")
        log.warning("job failed", error=error)

    def _finish(self, job_id: int, state: str, **values) -> None:
        self.store.update_job(job_id, state, values.get("error"), state=state, worker=None,
                              finished_at=utc_now(), **values)
        self.finished.append(job_id)
        self.publish(job_id)
        if state == "failed":
            self._discard_partial_outputs(job_id)

    def _discard_partial_outputs(self, job_id: int) -> None:
        """Remove a job's checkpoints and its unpublished image sequence; never a finished output."""
        shutil.rmtree(self.settings.work_dir / f"job-{job_id:06d}", ignore_errors=True)
        job = self.store.job(job_id)
        if job and job.get("spec"):
            output = Path(job["spec"]["output"])
            shutil.rmtree(output.parent / f".{job['spec']['render_id']}.frames.part", ignore_errors=True)

    def publish(self, job_id: int) -> None:
        """Write the status file of a job, if it is the newest job of its request."""
        job = self.store.job(job_id)
        if job is None:
            return
        latest = self.store.latest_job_for(job["request_path"])
        if latest and latest["id"] != job_id:
            return
        try:
            write_status(job)
        except OSError as exc:
            log.warning("status file not written", job=job_id, error=str(exc))

    # -- plumbing -------------------------------------------------------------

    def _start_watcher(self):
        from daemon.watch import Watcher

        inbox = self.inbox

        class _Hints:
            def put(self, item):
                inbox.put(("hint", *item))

        watcher = Watcher(self.settings.roots, _Hints(), polling=self.settings.observer == "polling",
                          poll_seconds=self.settings.poll_seconds)
        watcher.start()
        return watcher

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(number, frame):
            if self._stop.is_set():
                log.warning("second signal: stopping now")
                for handle in self.workers:
                    if handle.process is not None:
                        handle.process.kill()
                os._exit(1)
            self.stop(f"{signal.Signals(number).name} received")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)


def with_eta(progress: dict, elapsed: float, estimate: float | None) -> dict:
    """Progress with percent done, elapsed time and time left added."""
    chunks = max(progress.get("chunks") or 1, 1)
    steps = max(progress.get("steps") or 1, 1)
    chunk = max(progress.get("chunk") or 0, 0)
    resumed = progress.get("chunks_resumed") or 0
    done_in_chunk = (progress.get("step") or 0) / steps
    completed = max(chunk - 1, 0) + done_in_chunk if chunk else 0.0
    if progress.get("phase") == "writing output":
        completed = chunks
    fraction_now = max(completed - resumed, 0.0)
    fraction_total = max(chunks - resumed, 1e-9)
    if fraction_now > 0:
        eta = elapsed / fraction_now * (fraction_total - fraction_now)
    elif estimate is not None:
        eta = max(estimate - elapsed, 0.0)
    else:
        eta = None
    return {
        **progress,
        "percent": round(100.0 * completed / chunks, 1),
        "elapsed_seconds": round(elapsed, 1),
        "eta_seconds": None if eta is None else round(eta, 1),
    }


def _lock_state_dir(state_dir: Path):
    handle = open(state_dir / "hotshot.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise ConfigError(f"another hotshot daemon is running with state dir {state_dir}") from exc
    with contextlib.suppress(OSError):
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
    return handle
