"""The worker process: renders one job at a time for the daemon.

It runs in its own process so that a crash or an out-of-memory in rendering
cannot take the daemon down. It never touches the database: it reports
progress, finished chunks, the models it holds and the result over its pipe,
and the daemon records them. Control messages (stop after the current chunk,
cancel at the next diffusion step) arrive on the same pipe and are read by a
small thread while the main thread renders.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

from daemon import messages
from daemon.messages import (
    Cancel,
    ChunkDone,
    Done,
    Exit,
    Failed,
    Models,
    Progress,
    Ready,
    Render,
    StopAfterChunk,
    UnknownMessages,
    WorkerReport,
)

PR_SET_PDEATHSIG = 1


def main(conn: Connection, name: str, device: str, log_format: str, log_level: str, parent: int,
         cache_bytes: int | None = None, fault_variables: dict[str, str] | None = None) -> None:
    """Entry point of the worker process."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from engine import faults

    faults.adopt(fault_variables or {})  # the fork server's environment may be older than the daemon's

    from daemon import logs

    logs.configure(log_format, log_level)
    logs.route_ml_libraries()
    serve(conn, name, device, cache_bytes, os.getpid(), _gone)


def _gone() -> None:
    """The daemon is gone: there is nobody to work for."""
    os._exit(3)


def serve(conn, name: str, device: str, cache_bytes: int | None, pid: int | None, lost: Callable[[], None],
          control: WorkerControl | None = None) -> None:
    """The worker loop, in a process or on a thread: take jobs from `conn`, render them, report back.

    `lost` is called when `conn` breaks (the daemon is gone); `pid` is what `Ready` reports.
    """
    import structlog

    structlog.contextvars.bind_contextvars(worker=name)
    log = structlog.get_logger("hotshot.worker")

    jobs: queue.Queue = queue.Queue()
    control = control or WorkerControl()
    sender = _Sender(conn, lost)
    threading.Thread(target=_read_control, args=(conn, jobs, control, lost), daemon=True,
                     name=f"{name}-control").start()

    from engine.models import ModelCache

    cache = ModelCache(cache_bytes)
    sender.send(Ready(pid))
    log.info("worker ready", device=device)
    while True:
        message = jobs.get()
        if message is None:
            return
        _run_job(message.job, device, cache, sender, control, log)


def _run_job(job_data: dict, device: str, cache, sender: _Sender, control: WorkerControl,
             log) -> None:
    import structlog

    from engine.errors import EngineError, Interrupted, MediaError, is_disk_full
    from engine.job import RenderJob
    from engine.render import render

    job = RenderJob.model_validate({**job_data, "device": device})
    events = _PipeEvents(job.job_id, sender, control)
    with structlog.contextvars.bound_contextvars(job=job.job_id):
        try:
            try:
                result = render(job, events, cache)
            finally:
                events.close()
        except Interrupted as exc:
            reply = messages.Interrupted(job.job_id, exc.reason)
        except MediaError as exc:
            stopping = control.stop_reason or control.cancel_reason
            if stopping:
                # A decode cut short while the daemon stops (a signal that reached ffmpeg too) says nothing
                # about the source: the job pauses and resumes from its checkpoints.
                log.info("render stopped while the daemon stops", error=str(exc))
                reply = messages.Interrupted(job.job_id, stopping)
            else:
                log.warning("render failed", error=str(exc), retryable=exc.retryable)
                reply = Failed(job.job_id, str(exc), exc.retryable)
        except EngineError as exc:
            log.warning("render failed", error=str(exc), retryable=exc.retryable)
            reply = Failed(job.job_id, str(exc), exc.retryable)
        except Exception as exc:  # noqa: BLE001 - any crash of a render is reported, the worker lives on
            log.error("render crashed", exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
            if is_disk_full(exc):
                error = f"no space left on a disk the render writes to ({exc}); free some space, then " \
                        "`hotshot retry` resumes the job"
            reply = Failed(job.job_id, error, True, traceback.format_exc(limit=20))
        else:
            reply = Done(job.job_id, result.to_dict())
    # Before the result, so the daemon knows this worker's models when it next hands out a job.
    sender.send(Models(tuple(sorted(set(cache.loaded)))))
    sender.send(reply)


class WorkerKilled(BaseException):
    """Unwinds a thread worker's render when the daemon kills it (a process worker is simply SIGKILLed)."""


class WorkerControl:
    """What the daemon asked of the job in hand: stop after the current chunk, or cancel at once; and, for a
    thread worker, whether it was killed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.job: int | None = None
        self.stop_reason: str | None = None
        self.cancel_reason: str | None = None
        self.killed = False

    def begin(self, job_id: int) -> None:
        with self.lock:
            self.job, self.stop_reason, self.cancel_reason = job_id, None, None

    def stop(self, reason: str, job_id: int | None) -> None:
        with self.lock:
            if job_id is None or job_id == self.job:
                self.stop_reason = reason

    def cancel(self, reason: str, job_id: int) -> None:
        with self.lock:
            if job_id == self.job:
                self.cancel_reason = reason


class _Sender:
    """Thread-safe sends; if the daemon is gone there is nobody to work for, so exit."""

    def __init__(self, conn: Connection, lost: Callable[[], None]) -> None:
        self.conn = conn
        self.lost = lost
        self.lock = threading.Lock()

    def send(self, message: WorkerReport) -> None:
        try:
            with self.lock:
                self.conn.send(message)
        except (BrokenPipeError, EOFError, OSError):
            self.lost()


class _PipeEvents:
    """RenderEvents that travel to the daemon over the pipe.

    A cancel stops the render at once: `progress`, which the engine calls after
    every diffusion step, raises `Interrupted`. A stop (shutdown, a render window
    closing) is answered by `stop_requested`, between chunks.
    """

    PROGRESS_INTERVAL = 0.5
    # A model load reports nothing until it is done (minutes for large weights from a slow disk): its report is
    # sent again this often meanwhile, so that `worker_stall_seconds` need not exceed the slowest load.
    HEARTBEAT_SECONDS = 2.0
    # ...but not for ever: a load still going after this long is taken for a hang (reports stop, and the stall
    # rule kills the worker `worker_stall_seconds` later).
    HEARTBEAT_LIMIT_SECONDS = 3600.0

    def __init__(self, job_id: int, sender: _Sender, control: WorkerControl) -> None:
        self.job_id = job_id
        self.sender = sender
        self.control = control
        self._last_progress = 0.0
        self._heartbeat: tuple[threading.Thread, threading.Event] | None = None

    def progress(self, progress) -> None:
        if self.control.killed:
            raise WorkerKilled
        if self.control.cancel_reason:
            from engine.errors import Interrupted

            raise Interrupted(self.control.cancel_reason, max(progress.chunk - 1, 0))
        self.close()  # whatever was loading is loaded
        now = time.monotonic()
        last_step = progress.step in (0, progress.steps)
        if last_step or now - self._last_progress >= self.PROGRESS_INTERVAL:
            self._last_progress = now
            self.sender.send(report := Progress(self.job_id, progress.to_dict()))
            if progress.phase == "loading model":  # the engine's report right before it loads the model
                done = threading.Event()
                beat = threading.Thread(target=self._beat, args=(report, done), daemon=True,
                                        name=f"heartbeat-{self.job_id}")
                self._heartbeat = (beat, done)
                beat.start()

    def _beat(self, report: Progress, done: threading.Event) -> None:
        until = time.monotonic() + self.HEARTBEAT_LIMIT_SECONDS
        while not done.wait(self.HEARTBEAT_SECONDS) and time.monotonic() < until:
            self.sender.send(report)

    def close(self) -> None:
        """Stop repeating the loading report (the next report is due, or the render ended)."""
        if self._heartbeat is not None:
            beat, done = self._heartbeat
            self._heartbeat = None
            done.set()
            beat.join()

    def chunk_done(self, record) -> None:
        self.sender.send(ChunkDone(self.job_id, record.to_dict()))

    def stop_requested(self) -> str | None:
        return self.control.cancel_reason or self.control.stop_reason


def _read_control(conn: Connection, jobs: queue.Queue, control: WorkerControl, lost: Callable[[], None]) -> None:
    unknown = UnknownMessages()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            lost()
            return
        match message:
            case Render(job):
                control.begin(job["job_id"])  # here, so a cancel right behind it finds its job
                jobs.put(message)
            case StopAfterChunk(reason, job):
                control.stop(reason, job)
            case Cancel(reason, job):
                control.cancel(reason, job)
            case Exit():
                jobs.put(None)
                return
            case _:
                unknown("worker", message)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process if its parent dies, so no orphan keeps rendering.

    The parent is the fork server, which exits when the daemon does; a worker
    that starts after the daemon is already gone exits at once.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        os._exit(3)
