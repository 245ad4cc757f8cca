"""Every message that crosses a thread or a process in the daemon, one class each.

Two channels carry them. The daemon's inbox (`Inbox`) is fed by the threads
around the loop: watchdog (`Hint`), APScheduler (`Reconcile`, `WindowEdge`),
the loop's own stop (`Stop`) and each worker's reader (`FromWorker`,
`WorkerExited`). A worker's pipe carries `ToWorker` messages one way (render,
stop after the chunk, cancel, exit) and `WorkerReport` messages back (ready,
models, progress, chunk, done, failed, interrupted). The classes are frozen
dataclasses of plain values, so they pickle across the pipe unchanged.

Receivers dispatch with `match` and a final case that calls `unknown()`: a
message nobody handles is logged as an error and counted, never dropped in
silence. An inbox message's `step` names the loop step that handles it, in the
log when that step fails.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import structlog

log = structlog.get_logger("hotshot.messages")


# -- daemon → worker ------------------------------------------------------------

@dataclass(frozen=True)
class Render:
    """Render this job (an engine `RenderJob` as JSON, without its device)."""

    job: dict


@dataclass(frozen=True)
class StopAfterChunk:
    """Checkpoint and stop after the current chunk (of `job`, or of any job when None)."""

    reason: str
    job: int | None = None


@dataclass(frozen=True)
class Cancel:
    """Drop `job` at the next diffusion step."""

    reason: str
    job: int


@dataclass(frozen=True)
class Exit:
    """Finish nothing more; leave."""


ToWorker = Render | StopAfterChunk | Cancel | Exit


# -- worker → daemon ------------------------------------------------------------

@dataclass(frozen=True)
class Ready:
    """The worker has started (its imports done) and takes jobs."""

    pid: int


@dataclass(frozen=True)
class Models:
    """The models the worker holds loaded now (sent before each job's outcome)."""

    loaded: tuple[str, ...]


@dataclass(frozen=True)
class Progress:
    job: int
    progress: dict


@dataclass(frozen=True)
class ChunkDone:
    """A chunk is finished and checkpointed: its record for the `chunks` table."""

    job: int
    record: dict


@dataclass(frozen=True)
class Done:
    job: int
    result: dict


@dataclass(frozen=True)
class Failed:
    job: int
    error: str
    retryable: bool = True
    traceback: str | None = None


@dataclass(frozen=True)
class Interrupted:
    """The worker stopped the job on request (cancel, stop, window closing); it resumes from its checkpoints."""

    job: int
    reason: str


WorkerReport = Ready | Models | Progress | ChunkDone | Done | Failed | Interrupted


# -- the daemon's inbox ------------------------------------------------------------

@dataclass(frozen=True)
class Hint:
    """A file system event: something changed at `path` (a `file` or a `folder`)."""

    step: ClassVar[str] = "hint"

    kind: Literal["file", "folder"]
    path: Path


@dataclass(frozen=True)
class Reconcile:
    """Time for the full rescan of the roots."""

    step: ClassVar[str] = "reconcile"


@dataclass(frozen=True)
class WindowEdge:
    """A render window opens or closes (only wakes the loop; the clock decides)."""

    step: ClassVar[str] = "window"

    window: str
    edge: Literal["opens", "closes"]


@dataclass(frozen=True)
class Stop:
    """The daemon was asked to stop."""

    step: ClassVar[str] = "stop"


@dataclass(frozen=True)
class FromWorker:
    """A worker's report, as its reader thread received it."""

    step: ClassVar[str] = "worker"

    worker: str
    report: WorkerReport


@dataclass(frozen=True)
class WorkerExited:
    """A worker process ended (its pipe closed)."""

    step: ClassVar[str] = "worker-exit"

    worker: str
    pid: int | None
    code: int | None


@dataclass(frozen=True)
class ClusterGone:
    """The Ray cluster the daemon joined by a plain address is gone (its head stopped or restarted); the daemon
    stops and starts itself anew to join it again (daemon/ray_cluster.py `start_again`)."""

    step: ClassVar[str] = "cluster"

    reason: str


InboxMessage = Hint | Reconcile | WindowEdge | Stop | FromWorker | WorkerExited | ClusterGone
Inbox = queue.Queue  # of InboxMessage


class HintSink:
    """What the watcher puts its (kind, path) events into: hints on the inbox."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def put(self, item: tuple[str, Path]) -> None:
        self.inbox.put(Hint(*item))


class UnknownMessages:
    """Counts messages a receiver had no case for (each one is also logged as an error)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, receiver: str, message: object) -> None:
        self.count += 1
        log.error("unknown message", receiver=receiver, message=repr(message)[:200], unknown_so_far=self.count)
