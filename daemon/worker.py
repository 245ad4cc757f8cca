"""The worker process: renders one job at a time for the daemon.

It runs in its own process so that a crash or an out-of-memory in rendering
cannot take the daemon down. It never touches the database: it reports
progress, finished chunks and the result over its pipe, and the daemon
records them. Control messages (stop after the current chunk) arrive on the
same pipe and are read by a small thread while the main thread renders.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG = 1


def main(conn: Connection, name: str, device: str, log_format: str, log_level: str, parent: int) -> None:
    """Entry point of the worker process."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from daemon import logs

    logs.configure(log_format, log_level)
    import structlog

    structlog.contextvars.bind_contextvars(worker=name)
    log = structlog.get_logger("hotshot.worker")

    jobs: queue.Queue = queue.Queue()
    stop_reason: list[str] = []
    sender = _Sender(conn)
    threading.Thread(target=_read_control, args=(conn, jobs, stop_reason), daemon=True).start()

    from engine.models import ModelCache

    logs.route_ml_libraries()
    cache = ModelCache()
    sender.send({"type": "ready", "pid": os.getpid()})
    log.info("worker ready", device=device)
    while True:
        message = jobs.get()
        if message is None:
            return
        stop_reason.clear()
        _run_job(message["job"], device, cache, sender, stop_reason, log)


def _run_job(job_data: dict, device: str, cache, sender: _Sender, stop_reason: list[str], log) -> None:
    import structlog

    from engine.errors import EngineError, Interrupted
    from engine.job import RenderJob
    from engine.render import render

    job = RenderJob.model_validate({**job_data, "device": device})
    events = _PipeEvents(job.job_id, sender, stop_reason)
    with structlog.contextvars.bound_contextvars(job=job.job_id):
        try:
            result = render(job, events, cache)
        except Interrupted as exc:
            sender.send({"type": "interrupted", "job": job.job_id, "reason": exc.reason})
        except EngineError as exc:
            log.warning("render failed", error=str(exc), retryable=exc.retryable)
            sender.send({"type": "failed", "job": job.job_id, "error": str(exc), "retryable": exc.retryable})
        except Exception as exc:  # noqa: BLE001 - any crash of a render is reported, the worker lives on
            log.error("render crashed", exc_info=True)
            sender.send({"type": "failed", "job": job.job_id, "retryable": True,
                         "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=20)})
        else:
            sender.send({"type": "done", "job": job.job_id, "result": result.to_dict()})


class _Sender:
    """Thread-safe sends; if the daemon is gone there is nobody to work for, so exit."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: dict) -> None:
        try:
            with self.lock:
                self.conn.send(message)
        except (BrokenPipeError, EOFError, OSError):
            os._exit(3)


class _PipeEvents:
    """RenderEvents that travel to the daemon over the pipe."""

    PROGRESS_INTERVAL = 0.5

    def __init__(self, job_id: int, sender: _Sender, stop_reason: list[str]) -> None:
        self.job_id = job_id
        self.sender = sender
        self.stop_reason = stop_reason
        self._last_progress = 0.0

    def progress(self, progress) -> None:
        now = time.monotonic()
        last_step = progress.step in (0, progress.steps)
        if last_step or now - self._last_progress >= self.PROGRESS_INTERVAL:
            self._last_progress = now
            self.sender.send({"type": "progress", "job": self.job_id, "progress": progress.to_dict()})

    def chunk_done(self, record) -> None:
        self.sender.send({"type": "chunk", "job": self.job_id, "record": record.to_dict()})

    def stop_requested(self) -> str | None:
        return self.stop_reason[0] if self.stop_reason else None


def _read_control(conn: Connection, jobs: queue.Queue, stop_reason: list[str]) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(3)
        if message["type"] == "render":
            jobs.put(message)
        elif message["type"] == "stop":
            stop_reason[:] = [message.get("reason", "stop requested")]
        elif message["type"] == "exit":
            jobs.put(None)
            return


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process if the daemon dies, so no orphan keeps rendering."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(3)
