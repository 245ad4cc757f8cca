"""A render slot on a Ray cluster: the worker loop of daemon/worker.py inside a long-lived Ray actor.

The daemon creates one named, detached actor per slot (daemon/ray_worker.py).
The actor runs the same loop as a worker process, with two queues in place of
the pipe: the daemon's messages go in through `send`, and the reports (ready,
models, progress, chunks, results) wait in an outbox that a thread of the
daemon empties with `reports`. Ray runs the actor's methods on a few threads
(`max_concurrency`), so a cancel or a stop reaches the loop while it renders.

A render outlives the daemon that sent it: its reports wait in the outbox
until a daemon pulls them, so a daemon started again after a crash takes the
render over (`attach`) instead of rendering the job a second time.

The actor never touches the database or a status file: it only renders the
paths it is given (already translated for its node by the daemon's path map)
and says so. `probe` is how the daemon learns, before sending any work,
whether this node can read the watch roots and write the work folder.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from pathlib import Path

from daemon import worker
from daemon.messages import Done, Failed, Interrupted, Render, ToWorker, WorkerReport

ATTACH_IDLE_SECONDS = 30.0  # how long a daemon that (re)attaches waits for a leftover render to unwind


class _QueueEnd:
    """The loop's end of its 'pipe': the daemon's messages in, reports out to the outbox; whether a job is
    in hand (from its `Render` to its outcome), and which job is still owed to a daemon (from its `Render` until
    a daemon pulled its outcome)."""

    def __init__(self, incoming: queue.Queue, outbox: queue.Queue) -> None:
        self.incoming = incoming
        self.outbox = outbox
        self.busy = False
        self.job: int | None = None

    def recv(self) -> ToWorker:
        message = self.incoming.get()
        if isinstance(message, Render):
            self.busy = True
            self.job = message.job["job_id"]
        return message

    def send(self, report: WorkerReport) -> None:
        if isinstance(report, Done | Failed | Interrupted):
            self.busy = False
        self.outbox.put(report)


class RenderSlot:
    """One render slot: a model cache and the worker loop, on whichever node Ray placed it."""

    def __init__(self, name: str, device: str, cache_bytes: int | None, log_level: str,
                 fault_variables: dict[str, str] | None = None) -> None:
        from daemon import logs
        from engine import faults

        faults.adopt(fault_variables or {})  # the reliability tests' fault injection reaches the slots too
        logs.configure("json", log_level)
        logs.route_ml_libraries()
        self.name = name
        self.device = device
        self.control = worker.WorkerControl()
        self.incoming: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.end = _QueueEnd(self.incoming, self.outbox)
        self.thread = threading.Thread(target=worker.serve, daemon=True, name=f"{name}-loop",
                                       args=(self.end, name, device, cache_bytes, os.getpid(), _unreachable,
                                             self.control))
        self.thread.start()

    # -- called by the daemon -----------------------------------------------------

    def where(self) -> dict:
        """Which node and process this slot lives in."""
        import ray

        context = ray.get_runtime_context()
        return {"node": socket.gethostname(), "node_ip": ray.util.get_node_ip_address(),
                "node_id": context.get_node_id(), "actor": self.name, "pid": os.getpid()}

    def probe(self, roots: list[str], work_dir: str) -> list[str]:
        """What this node cannot do of what rendering needs (empty: all is well): list every watch root, and
        write, read back and delete a file in the work folder (paths as this node mounts them)."""
        problems = []
        for root in roots:
            try:
                next(iter(os.scandir(root)), None)
            except OSError as exc:
                problems.append(f"cannot read the watch root {root}: {exc.strerror or exc}")
        try:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            probe = Path(work_dir) / f".probe-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
            probe.write_text(self.name)
            if probe.read_text() != self.name:
                problems.append(f"the work folder {work_dir} did not read back what was written")
            probe.unlink()
        except OSError as exc:
            problems.append(f"cannot write the work folder {work_dir}: {exc.strerror or exc}")
        return problems

    def attach(self, job: int | None = None) -> dict:
        """A daemon takes this slot over (a new one after a restart); where the slot lives, and `job` if the slot
        still holds it for the new daemon.

        `job` is the job the database says this slot was rendering. Its render carries on, or its outcome waits
        if it ended while no daemon listened: its reports (chunks, models, outcome) stay in the outbox for the
        new daemon, so nothing is rendered twice. Anything else an earlier daemon left here is dropped: cancelled
        at its next step, waited for, and its reports forgotten, so that it no longer writes in a work folder
        another slot may resume from."""
        held = self.end.job
        if held is not None and held == job:
            return {**self.where(), "job": held}
        if held is not None and self.busy():
            self.control.cancel("the daemon that sent this job is gone; it was requeued", held)
        deadline = time.monotonic() + ATTACH_IDLE_SECONDS
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        while True:
            try:
                self.outbox.get_nowait()
            except queue.Empty:
                break
        self.end.job = None
        return {**self.where(), "job": None, "busy": self.busy()}

    def busy(self) -> bool:
        """Whether a render is under way (its job's outcome not yet in the outbox)."""
        return self.end.busy

    def send(self, message: ToWorker) -> None:
        self.incoming.put(message)

    def reports(self, timeout: float) -> list[WorkerReport]:
        """The reports waiting for the daemon, waiting up to `timeout` for the first."""
        try:
            found = [self.outbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                found.append(self.outbox.get_nowait())
            except queue.Empty:
                break
        if any(isinstance(report, Done | Failed | Interrupted) and report.job == self.end.job for report in found):
            self.end.job = None  # its outcome is a daemon's now
        return found


def _unreachable() -> None:
    """The queues never break; kept for the loop's signature."""

