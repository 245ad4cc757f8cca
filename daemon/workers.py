"""The daemon's side of the worker processes: start, feed, watch, restart."""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from dataclasses import dataclass, field

import structlog

from daemon import worker
from engine import faults

log = structlog.get_logger("hotshot.workers")
# Workers are forked from a server process that has already imported torch, diffusers (with the
# logging modules the worker routes at start) and the engine, so a worker (re)starts in a fraction of
# a second instead of paying those imports each time.
# The server itself never renders, so forking it is safe.
SPAWN = multiprocessing.get_context("forkserver")
SPAWN.set_forkserver_preload(["daemon.worker", "engine.render", "engine.backends.wan_vace",
                              "diffusers.utils.logging", "transformers.utils.logging"])


@dataclass
class WorkerHandle:
    """One worker process bound to one device."""

    name: str
    device: str
    inbox: queue.Queue
    log_format: str
    log_level: str
    job_id: int | None = None
    pid: int | None = None
    models: frozenset[str] = frozenset()
    cache_bytes: int | None = None
    killed_because: str | None = None
    process: multiprocessing.process.BaseProcess | None = field(default=None, repr=False)
    conn: object = field(default=None, repr=False)

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
        self.job_id = None
        self.models = frozenset()
        self.killed_because = None
        threading.Thread(target=self._forward, args=(parent_end, self.process), daemon=True,
                         name=f"{self.name}-reader").start()
        log.info("worker started", worker=self.name, device=self.device, pid=self.pid)

    def _forward(self, conn, process) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                process.join()
                self.inbox.put(("worker-exit", self.name, {"pid": process.pid, "code": process.exitcode}))
                return
            self.inbox.put(("worker", self.name, message))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def idle(self) -> bool:
        return self.alive and self.job_id is None

    def send(self, message: dict) -> bool:
        try:
            self.conn.send(message)
            return True
        except (BrokenPipeError, OSError):
            return False

    def assign(self, job_id: int, job: dict) -> bool:
        self.job_id = job_id
        return self.send({"type": "render", "job": job})

    def stop_after_chunk(self, reason: str, job_id: int | None = None) -> None:
        """Ask the worker to checkpoint and stop after the current chunk (of `job_id`, or of any job)."""
        self.send({"type": "stop", "reason": reason, "job": job_id})

    def cancel(self, job_id: int, reason: str) -> None:
        """Ask the worker to drop `job_id` at the next diffusion step."""
        self.send({"type": "cancel", "reason": reason, "job": job_id})

    def kill(self, reason: str) -> None:
        """SIGKILL the worker; its job fails (and is retried) with `reason`."""
        if self.process is not None and self.process.is_alive():
            self.killed_because = reason
            self.process.kill()

    def shutdown(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        self.send({"type": "exit"})
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()


def make_pool(devices: list[str], inbox: queue.Queue, log_format: str, log_level: str,
              cache_bytes: int | None = None) -> list[WorkerHandle]:
    """One worker per device, each with its own model cache ("auto" lets the worker pick CUDA or the CPU)."""
    return [WorkerHandle(f"worker-{index}", device, inbox, log_format, log_level, cache_bytes=cache_bytes)
            for index, device in enumerate(devices)]
