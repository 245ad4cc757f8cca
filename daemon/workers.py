"""The daemon's side of its workers: what a worker is, the process worker, and the pool that restarts them.

A `Worker` renders one job at a time for the daemon. The daemon only talks to
it through this interface: `assign` a job, ask it to `stop_after_chunk` or
`cancel`, `kill` it, `shutdown`. The worker answers with `WorkerReport`
messages on the daemon's inbox (wrapped in `FromWorker`) and a `WorkerExited`
when it ends. Two implementations exist: `ProcessWorker` (here, what
`hotshot run` uses: a crash or an out-of-memory in rendering cannot take the
daemon down) and `ThreadWorker` (daemon/thread_worker.py: the same loop on a
thread of the daemon's process, for tests). `WorkerPool` holds one worker per
device and the restart policy.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator

import structlog

from daemon import worker
from daemon.messages import Cancel, Exit, FromWorker, Inbox, Render, StopAfterChunk, ToWorker, WorkerExited
from engine import faults

log = structlog.get_logger("hotshot.workers")
# Workers are forked from a server process that has already imported torch, diffusers (with the
# logging modules the worker routes at start) and the engine, so a worker (re)starts in a fraction of
# a second instead of paying those imports each time.
# The server itself never renders, so forking it is safe.
SPAWN = multiprocessing.get_context("forkserver")
SPAWN.set_forkserver_preload(["daemon.worker", "engine.render", "engine.backends.wan_vace",
                              "diffusers.utils.logging", "transformers.utils.logging"])
RESTART_SECONDS = 5.0  # a worker that keeps dying restarts at most this often


class Worker(ABC):
    """One worker bound to one device; the daemon's loop is the only caller.

    `job_id` is the job it holds (set by `assign`, cleared by the daemon when the job's outcome arrives or the
    worker exits); `pid` its process once it is ready (None for a thread); `models` what it reported loaded;
    `killed_because` why the daemon killed it, for the job's error; `lost_because` why it was lost through no
    fault of its job (a cluster node gone), so its job is requeued without spending an attempt.
    """

    def __init__(self, name: str, device: str, inbox: Inbox, log_format: str, log_level: str,
                 cache_bytes: int | None = None) -> None:
        self.name = name
        self.device = device
        self.inbox = inbox
        self.log_format = log_format
        self.log_level = log_level
        self.cache_bytes = cache_bytes
        self.job_id: int | None = None
        self.pid: int | None = None
        self.models: frozenset[str] = frozenset()
        self.killed_because: str | None = None
        self.lost_because: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.device!r}, job={self.job_id})"

    @abstractmethod
    def start(self) -> None:
        """Start (or restart) the worker: it reports `Ready` when it takes jobs."""

    @property
    @abstractmethod
    def alive(self) -> bool: ...

    @property
    def idle(self) -> bool:
        return self.alive and self.job_id is None

    @abstractmethod
    def send(self, message: ToWorker) -> bool:
        """Hand the worker a message; False if it cannot be reached."""

    def assign(self, job_id: int, job: dict) -> bool:
        self.job_id = job_id
        return self.send(Render(job))

    def stop_after_chunk(self, reason: str, job_id: int | None = None) -> None:
        """Ask the worker to checkpoint and stop after the current chunk (of `job_id`, or of any job)."""
        self.send(StopAfterChunk(reason, job_id))

    def cancel(self, job_id: int, reason: str) -> None:
        """Ask the worker to drop `job_id` at the next diffusion step."""
        self.send(Cancel(reason, job_id))

    @abstractmethod
    def kill(self, reason: str) -> None:
        """End the worker now, whatever it is doing; its job fails (and is retried) with `reason`."""

    @abstractmethod
    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the worker to leave (after its current job's stop), waiting up to `timeout`; then end it."""

    def rendered_by(self) -> dict:
        """Where this worker renders, as the Render Info records it for each chunk."""
        return {"node": socket.gethostname(), "worker": self.name}

    def _started(self) -> None:
        self.job_id = None
        self.models = frozenset()
        self.killed_because = None
        self.lost_because = None


class ProcessWorker(Worker):
    """A worker process forked from the fork server, talking over a pipe read by a thread of the daemon."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn = None

    def start(self) -> None:
        parent_end, child_end = SPAWN.Pipe(duplex=True)
        self.process = SPAWN.Process(
            target=worker.main, name=f"hotshot-{self.name}", daemon=True,
            args=(child_end, self.name, self.device, self.log_format, self.log_level, os.getpid(), self.cache_bytes,
                  faults.environment()),
        )
        self.process.start()
        child_end.close()
        self.conn = parent_end
        self.pid = self.process.pid
        self._started()
        threading.Thread(target=self._forward, args=(parent_end, self.process), daemon=True,
                         name=f"{self.name}-reader").start()
        log.info("worker started", worker=self.name, device=self.device, pid=self.pid)

    def _forward(self, conn, process) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                process.join()
                self.inbox.put(WorkerExited(self.name, process.pid, process.exitcode))
                return
            self.inbox.put(FromWorker(self.name, message))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def send(self, message: ToWorker) -> bool:
        try:
            self.conn.send(message)
            return True
        except (BrokenPipeError, OSError):
            return False

    def kill(self, reason: str) -> None:
        """SIGKILL the worker; its job fails (and is retried) with `reason`."""
        if self.process is not None and self.process.is_alive():
            self.killed_because = reason
            self.process.kill()

    def shutdown(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        self.send(Exit())
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()


class WorkerPool:
    """The daemon's workers, one per device, and when a worker that died is started again."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self._started_at: dict[str, float] = {}
        self._restart_at: dict[str, float] = {}

    def __iter__(self) -> Iterator[Worker]:
        return iter(self.workers)

    def __getitem__(self, index: int) -> Worker:
        return self.workers[index]

    def __len__(self) -> int:
        return len(self.workers)

    def named(self, name: str) -> Worker:
        return next(handle for handle in self.workers if handle.name == name)

    def holding(self, job_id: int) -> Worker | None:
        return next((handle for handle in self.workers if handle.job_id == job_id), None)

    def busy(self) -> bool:
        return any(handle.job_id for handle in self.workers)

    def start(self, handle: Worker) -> None:
        self._started_at[handle.name] = time.monotonic()
        handle.start()

    def start_all(self) -> None:
        for handle in self.workers:
            self.start(handle)

    def exited(self, handle: Worker) -> None:
        """A worker died: start it again, but no sooner than RESTART_SECONDS after its last start, so one that
        keeps dying does not spin (the loop turns meanwhile)."""
        self._restart_at[handle.name] = self._started_at.get(handle.name, 0.0) + RESTART_SECONDS

    def restart_due(self) -> None:
        for name, when in list(self._restart_at.items()):
            if time.monotonic() >= when:
                del self._restart_at[name]
                self.start(self.named(name))

    def shutdown(self) -> None:
        for handle in self.workers:
            handle.shutdown()


def make_pool(devices: list[str], inbox: Inbox, log_format: str, log_level: str, cache_bytes: int | None = None,
              kind: type[Worker] = ProcessWorker) -> WorkerPool:
    """One worker per device, each with its own model cache ("auto" lets the worker pick CUDA or the CPU)."""
    return WorkerPool([kind(f"worker-{index}", device, inbox, log_format, log_level, cache_bytes=cache_bytes)
                       for index, device in enumerate(devices)])
