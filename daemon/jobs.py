"""Jobs from their claim to their end: workers, start times, progress and outcomes.

The loop hands each queued job to an idle worker (`dispatch`), and each report
of a worker (`message`) changes the job's row and its status file: progress,
finished chunks, and its end (done, failed, interrupted). Jobs waiting for a
render window or a start time are released here when the clock says so, and a
running job is asked to stop when its window closes (if it pauses then) or
when it is cancelled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.config import Settings
from daemon.control import Commands, remove_job_files
from daemon.conventions import root_of
from daemon.messages import ChunkDone, Done, Failed, Interrupted, Models, Progress, Ready, UnknownMessages, WorkerReport
from daemon.progress import Display, LiveJob
from daemon.resolve import Setup, render_job
from daemon.roots import RootStates
from daemon.schedule import Schedule
from daemon.sources import claim_refusal
from daemon.states import ErrorKind, Job, JobState, MediaKind, MediaState
from daemon.store import Store
from daemon.workers import Worker, WorkerPool
from engine.devices import device_kind
from engine.errors import MediaError
from engine.probe import probe

log = structlog.get_logger("hotshot.jobs")
CANCEL_KILL_SECONDS = 30.0  # a worker that has not dropped a cancelled job by then is killed


class Jobs:
    def __init__(self, store: Store, settings: Settings, setup: Setup, schedule: Schedule,
                 workers: WorkerPool, commands: Commands, publish: Callable[[int], None],
                 display: Display, roots: RootStates, unknown: UnknownMessages | None = None) -> None:
        self.store = store
        self.settings = settings
        self.setup = setup
        self.schedule = schedule
        self.workers = workers
        self.commands = commands
        self.publish = publish
        self.display = display
        self.roots = roots
        self.unknown = unknown or UnknownMessages()
        self.clock = schedule.clock
        self.live: dict[int, LiveJob] = {}
        self._closed_windows: frozenset[str] | None = None  # as of the last look at queued jobs
        self.finished: list[int] = []

    # -- start times ----------------------------------------------------------

    def review_scheduled(self, waiting: list[Job]) -> None:
        """Release waiting jobs whose start came; send queued jobs whose window shut back to wait.

        Queued jobs are looked at only when the set of closed windows changed (and once at the start, for
        jobs of windows no longer configured): a job is queued in a window only while it is open, and
        finding them reads every queued job, which a facility's queue of thousands made a cost of every turn
        of an idle loop."""
        for job in waiting:
            self._review_start(job)
        now = self.schedule.now()
        closed = frozenset(name for name, window in self.schedule.windows.items() if not window.is_open(now))
        if closed == self._closed_windows:
            return
        self._closed_windows = closed
        for job in self.store.in_windows(JobState.QUEUED):
            if not self.schedule.may_start(job.window, None):
                self.wait_for_start(job, self.schedule.describe(job.window, None))

    def _review_start(self, job: Job) -> None:
        problem = self.schedule.unknown_window(job.window)
        if problem:
            self.fail(job.id, problem, ErrorKind.REQUEST)
            return
        if self.schedule.may_start(job.window, job.start_at):
            self.store.release(job.id, job.window or "start time")
            log.info("job released", job=job.id, window=job.window)
            self.publish(job.id)
            return
        next_start = self.schedule.next_start(job.window, job.start_at)
        if next_start != job.start_at:  # the window it waited for was missed: wait for the next one
            self.wait_for_start(job, self.schedule.describe(job.window, job.start_at))

    def wait_for_start(self, job: Job, reason: str, uncount: bool = False, **clear: None) -> None:
        self.store.wait(job.id, reason, self.schedule.next_start(job.window, job.start_at), uncount, **clear)
        self.publish(job.id)

    # -- workers --------------------------------------------------------------

    def dispatch(self) -> None:
        """Give each idle worker the first job in line, preferring one whose model it has loaded."""
        for handle in self.workers:
            if not handle.idle:
                continue
            away = sorted(str(root) for root in self.roots.unavailable)
            job = self.store.claim_next(handle.name, self.clock(), handle.models, away)
            if job is None:
                return
            with structlog.contextvars.bound_contextvars(job=job.id):
                request = Path(job.request_path)
                refused = claim_refusal(job, self.store.media(job.source_media_id),
                                        root_of(request, self.settings.roots) or request.parent,
                                        self.settings.allow_hard_links)
                if refused:
                    log.warning("the source changed after the job was queued; it is not rendered", error=refused)
                    self.fail(job.id, refused, ErrorKind.INPUT)
                    continue
                job = self._without_load(job, handle)
                try:
                    spec = render_job(job, self.store, self.setup, self.settings.work_dir)
                except Exception as exc:  # noqa: BLE001 - a job that cannot even be prepared fails alone
                    log.error("job preparation failed", exc_info=True)
                    self.fail(job.id, f"could not prepare the render: {exc}")
                    continue
                if not job.spec:
                    self.store.record_render(job.id, spec.model_dump(mode="json", exclude={"done_chunks"}),
                                             int(spec.render_id.rsplit("_r", 1)[1]), str(spec.output),
                                             str(spec.manifest))
                estimate = job.estimate or {}
                self.live[job.id] = LiveJob(
                    job.id, handle.name, f"{job.id:>4} {request.parent.name}/{request.name}", time.monotonic(),
                    estimate.get("seconds"), window=job.window, pause_at=self.schedule.pause_at(job.window),
                    reported={"chunks_resumed": len(spec.done_chunks), "chunk": 0, "chunks": estimate.get("chunks"),
                              "step": 0, "steps": spec.steps,
                              "frames_done": 0, "frames_total": estimate.get("frames"), "phase": "starting"},
                    estimate=estimate)
                if self.setup.device_kind == "cpu" and len(self.live) > 1:
                    for other in self.live.values():  # renders sharing the CPU run slower than alone
                        other.shared = True
                handle.assign(job.id, self._placed(spec.model_dump(mode="json"), handle))
                log.info("job started", worker=handle.name, output=spec.output.name, resume=len(spec.done_chunks),
                         window=job.window)
                self.publish(job.id)

    def _take_over(self, handle: Worker) -> None:
        """Follow a render that its worker carried on while the daemon restarted (a Ray slot outlives the daemon,
        daemon/ray_worker.py `reclaim`), as if this daemon had started it: its reports, its stall and its cancel
        are this daemon's now."""
        job = self.store.job(handle.job_id)
        request = Path(job.request_path)
        estimate = job.estimate or {}
        self.live[job.id] = LiveJob(job.id, handle.name, f"{job.id:>4} {request.parent.name}/{request.name}",
                                    time.monotonic(), estimate.get("seconds"), window=job.window,
                                    pause_at=self.schedule.pause_at(job.window), reported=dict(job.progress or {}),
                                    estimate=estimate)
        log.info("the job's render carried on through the daemon's restart; followed again", job=job.id,
                 worker=handle.name)
        self.publish(job.id)

    def _placed(self, spec: dict, handle: Worker) -> dict:
        """The job as sent to `handle`: its Render Info is to record where each chunk was rendered, this
        attempt's chunks by `handle`, resumed ones where they were rendered before."""
        earlier = {str(row["idx"]): json.loads(row["rendered_by"]) for row in self.store.chunks(spec["job_id"])
                   if row.get("rendered_by")}
        context = {**spec.get("manifest_context", {}),
                   "rendered_by": {"this_attempt": handle.rendered_by(), "chunks": earlier}}
        return {**spec, "manifest_context": context}

    def _without_load(self, job: Job, handle: Worker) -> Job:
        """The job with its estimate made for this worker: no model load when the worker holds the model."""
        estimate = job.estimate or {}
        load = (estimate.get("parts") or {}).get("load")
        if not load or job.settings["model"]["value"] not in handle.models:
            return job
        factor = (estimate["seconds"] - load) / estimate["seconds"] if estimate["seconds"] else 1.0
        estimate = {**estimate, "parts": {**estimate["parts"], "load": 0.0},
                    "work": {**estimate.get("work", {}), "model_load": 0.0},
                    **{key: round(estimate[key] * factor, 1) for key in ("seconds", "seconds_low", "seconds_high")
                       if key in estimate}}
        self.store.revise_estimate(job.id, estimate)
        return dataclasses.replace(job, estimate=estimate)

    def message(self, handle: Worker, report: WorkerReport) -> None:
        """A worker's report: what it has loaded, progress, a finished chunk, or how its job ended."""
        match report:
            case Ready(pid):
                handle.pid = pid
                if handle.job_id in self.live:  # a job handed to a worker still starting: its silence starts now
                    self.live[handle.job_id].last_report = time.monotonic()
                elif handle.job_id is not None:
                    self._take_over(handle)
                return
            case Models(loaded):
                handle.models = frozenset(loaded)
                return
            case Progress(job) | ChunkDone(job) | Done(job) | Failed(job) | Interrupted(job):
                job_id = job
            case _:
                self.unknown("jobs", report)
                return
        if job_id in self.live and self.live[job_id].last_report != float("inf"):
            self.live[job_id].last_report = time.monotonic()
        with structlog.contextvars.bound_contextvars(job=job_id):
            match report:
                case Progress(_, progress):
                    self._progress(job_id, progress)
                case ChunkDone(_, record):
                    self.store.add_chunk(job_id, {**record, "rendered_by": handle.rendered_by()})
                    self._progress(job_id, None, force_status=True)
                case Done(_, result):
                    handle.job_id = None
                    self._done(job_id, result)
                case Failed(_, error, retryable):
                    handle.job_id = None
                    self.failed(job_id, error, retryable)
                case Interrupted(_, reason):
                    handle.job_id = None
                    self._interrupted(job_id, reason)

    def stop_running(self, job: Job, reason: str) -> bool:
        """Ask the worker of a running job to drop it at the next diffusion step; False if no worker has it."""
        handle = self.workers.holding(job.id)
        live = self.live.get(job.id)
        if handle is None or live is None:
            return False
        self.store.mark_cancelling(job.id, reason)
        handle.cancel(job.id, reason)
        live.cancel_sent = time.monotonic()
        log.info("cancelling a running job", job=job.id, worker=handle.name, reason=reason)
        self.publish(job.id)
        return True

    def review_running(self) -> None:
        """Refresh the status of running jobs; pause those whose window closed; kill workers that ignore a cancel."""
        now = self.clock()
        for live in list(self.live.values()):
            handle = self.workers.named(live.worker)
            if live.cancel_sent is not None and time.monotonic() - live.cancel_sent > CANCEL_KILL_SECONDS:
                log.warning("the worker did not drop a cancelled job; killing it", job=live.job_id,
                            worker=handle.name)
                live.cancel_sent = None
                handle.kill("it did not drop a cancelled job")
            stall = self.settings.worker_stall_seconds
            if stall and live.cancel_sent is None and time.monotonic() - live.last_report > stall:
                log.warning("the worker made no progress; killing it", job=live.job_id, worker=handle.name,
                            seconds=stall)
                live.last_report = float("inf")  # once
                handle.kill(f"it made no progress for {stall:g} s (worker_stall_seconds)")
            if live.pause_at is not None and now >= live.pause_at and live.stopping is None:
                live.stopping = f"render window {live.window!r} closed"
                handle.stop_after_chunk(live.stopping, live.job_id)
                log.info("render window closed: the job pauses after its current chunk", job=live.job_id,
                         window=live.window)
            if time.monotonic() - live.last_status >= self.settings.status_every_seconds:
                self._refresh(live, publish=True)

    def requeue_orphans(self, reason: str = "no worker had the running job; it resumes") -> None:
        """Running jobs that no worker has (after a restart; or their end was not recorded, the database could
        not be written then): finish the cancels under way, put the rest back in the queue; they resume from
        their checkpoints."""
        held = {handle.job_id for handle in self.workers if handle.job_id is not None}
        for job in self.store.jobs((JobState.RUNNING,)):
            if job.id in held:
                continue
            self._forget(job.id)
            if job.cancel_reason:
                self._cancelled(job)
                continue
            self.store.requeue(job.id, "recovered", reason)
            log.warning("a running job had no worker; it is queued again", job=job.id, reason=reason)
            self.publish(job.id)

    # -- progress and outcomes ------------------------------------------------

    def _progress(self, job_id: int, progress: dict | None, force_status: bool = False) -> None:
        live = self.live.get(job_id)
        if live is None:
            return
        if progress is not None:
            live.reported = progress
        self._refresh(live, publish=force_status)

    def _refresh(self, live: LiveJob, publish: bool = False) -> None:
        """Work out percent, elapsed and ETA afresh; rewrite the status file when due."""
        progress = live.refresh()
        self.store.set_progress(live.job_id, progress)
        self.display.update(live.job_id, live.label, progress)
        if publish or time.monotonic() - live.last_status >= self.settings.status_every_seconds:
            live.last_status = time.monotonic()
            self.publish(live.job_id)

    def _forget(self, job_id: int) -> LiveJob | None:
        self.display.finish(job_id)
        return self.live.pop(job_id, None)

    def _done(self, job_id: int, result: dict) -> None:
        job = self.store.job(job_id)
        live = self._forget(job_id)
        if job.cancel_reason:
            log.info("the render finished before its cancel took effect; it is kept", reason=job.cancel_reason)
            self.store.keep_despite_cancel(job_id)
        source = self.store.media(job.source_media_id)
        output = Path(result["output"])
        try:
            # The engine checked the output before publishing it; its probe stands unless the file changed since.
            info = result.get("output_info") or {}
            stat = output.stat()
            if info.get("size_bytes") != stat.st_size:
                info = probe(output, self.settings.ffprobe_timeout_seconds).to_dict()
            self.store.save_media(output, job.shot_id, kind=MediaKind.RENDER, state=MediaState.READY, size=stat.st_size,
                                  mtime_ns=stat.st_mtime_ns, inode=stat.st_ino, ctime_ns=stat.st_ctime_ns,
                                  probe=info, error=None,
                                  parent_id=source["id"], root_id=source["root_id"] or source["id"], job_id=job_id)
        except (MediaError, OSError) as exc:
            self.failed(job_id, f"the render finished but its output cannot be read: {exc}", retryable=True)
            return
        outputs = {
            "video": output.name,
            "render_info": Path(result["manifest"]).name,
            "frames": result["frames"],
            "width": result["width"],
            "height": result["height"],
            "seconds": round(result["seconds"], 2),
            "estimate_seconds": (job.estimate or {}).get("seconds"),
            "chunks_resumed": result["chunks_resumed"],
        }
        if result["manifest_data"].get("warnings"):
            outputs["warnings"] = result["manifest_data"]["warnings"]
        sequence = result["manifest_data"].get("image_sequence")
        if sequence:
            outputs["image_sequence"] = f"{sequence['folder']}/ ({sequence['frames']} {sequence['format']} frames)"
        sample = cost_sample(result["manifest_data"], shared=bool(live and live.shared))
        if sample:
            self.store.record_costs(job_id, sample)
        progress = dict(live.progress) if live else {}
        progress.update(percent=100.0, eta_seconds=0, frames_done=result["frames"])
        self.store.finish(job_id, outputs, progress)
        self._ended(job_id)
        remove_job_files(job, self.settings.work_dir)  # checkpoints, and hidden files of killed earlier attempts
        log.info("job done", output=str(output), seconds=round(result["seconds"], 2))

    def failed(self, job_id: int, error: str, retryable: bool) -> None:
        """A render failed (or its worker died): retry it later, or fail it; a job being cancelled is cancelled."""
        self._forget(job_id)
        job = self.store.job(job_id)
        if job.cancel_reason:
            self._cancelled(job)
            return
        root = root_of(Path(job.request_path), self.settings.roots)
        if root is not None and not self.roots.look(root):
            # Its share went away under it: not the job's fault. It waits for the root and resumes.
            self.store.requeue(job_id, "interrupted", f"watch root {root} is unavailable", uncount=True,
                               error=f"its watch root {root} went away ({error}); it resumes when the root is back")
            log.warning("the job's watch root went away; it resumes when the root is back", root=str(root))
            self.publish(job_id)
            return
        if retryable and job.attempts < self.settings.max_attempts:
            delay = self.settings.retry_backoff_seconds * 2 ** (job.attempts - 1)
            self.store.requeue(job_id, "retry", error, error=error, error_kind=ErrorKind.TRANSIENT,
                               not_before=self.clock() + delay)
            log.warning("job will be retried", error=error, attempt=job.attempts, delay=delay)
            self.publish(job_id)
            return
        if retryable:
            error = f"{error} (gave up after {job.attempts} attempts)"
        # Its checkpoints stay (keep_failed_checkpoints_hours) so that `hotshot retry` resumes from them; its
        # hidden partial outputs beside the source go (they may be what filled the share).
        self.fail(job_id, error, ErrorKind.TRANSIENT if retryable else ErrorKind.INPUT)
        remove_job_files(job, self.settings.work_dir, keep_checkpoints=True)
        log.warning("job failed", error=error)

    def lost(self, job_id: int, reason: str) -> None:
        """Its worker was lost through no fault of the job (a cluster node gone): back in line at once, its
        attempt given back; it resumes from its last checkpoint on another worker."""
        self._forget(job_id)
        job = self.store.job(job_id)
        if job.cancel_reason:
            self._cancelled(job)
            return
        self.store.requeue(job_id, "interrupted", reason, uncount=True,
                           error=f"{reason}; resumes from its last chunk on another worker")
        log.warning("the job's worker was lost; it is queued again", reason=reason)
        self.publish(job_id)

    def _interrupted(self, job_id: int, reason: str) -> None:
        """A worker stopped a job: cancelled, paused at its window's close, or stopped for a shutdown."""
        self._forget(job_id)
        job = self.store.job(job_id)
        if job.cancel_reason:
            self._cancelled(job)
            return
        if job.window is not None and not self.schedule.may_start(job.window, None):
            self.wait_for_start(job, f"paused when render window {job.window!r} closed; resumes from its last "
                                     f"chunk when it opens ({self.schedule.opens(job.window)})",
                                uncount=True, progress=None, error=None)
            log.info("job paused until its render window opens", window=job.window)
            return
        self.store.requeue(job_id, "interrupted", reason, uncount=True,
                           error=f"paused ({reason}); resumes from its last chunk")
        self.publish(job_id)

    def _cancelled(self, job: Job) -> None:
        self.commands.finish_cancel(job, job.cancel_reason)
        self.finished.append(job.id)

    def fail(self, job_id: int, error: str, kind: ErrorKind | None = None) -> None:
        self.store.fail(job_id, error, kind)
        self._ended(job_id)

    def _ended(self, job_id: int) -> None:
        self.finished.append(job_id)
        self.publish(job_id)


def cost_sample(manifest: dict, shared: bool) -> dict | None:
    """What a render did and how long each part took, for fitting the next estimates; None for a resumed
    render, whose earlier chunks were timed in another attempt."""
    timing = manifest.get("timing") or {}
    if not timing.get("parts") or any(chunk["resumed"] for chunk in manifest["chunk_plan"]["chunks"]):
        return None
    device = device_kind(manifest["model"]["device"])
    share = None
    if device == "cpu" and timing.get("cpu_seconds") is not None and timing["seconds"] > 0:
        share = round(timing["cpu_seconds"] / (timing["seconds"] * (os.cpu_count() or 1)), 3)
    return {"model": manifest["model"]["id"], "device": device, "shared": shared, "cpu_share": share,
            "work": timing["work"], "seconds": timing["parts"], "total": timing["seconds"]}
