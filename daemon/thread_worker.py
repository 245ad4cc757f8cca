"""A worker on a thread of the daemon's own process: the worker loop of daemon/worker.py, no fork, no pipe.

It speaks the same messages as a process worker, through a pair of queues in
place of the pipe, so the daemon cannot tell them apart. It renders in the
daemon's process, so a crash in rendering is the daemon's crash: `hotshot run`
uses process workers; the daemon's tests use this one, and start, stop and
render as fast as the engine allows. A kill cannot stop a thread from outside:
the render unwinds at its next diffusion step, and nothing more is reported.
"""

from __future__ import annotations

import queue
import threading

import structlog

from daemon import worker
from daemon.messages import Exit, FromWorker, Inbox, ToWorker, WorkerExited, WorkerReport
from daemon.workers import Worker

log = structlog.get_logger("hotshot.workers")
KILLED_CODE = -9  # what a killed thread worker's exit reports, as a SIGKILLed process would


class _QueueEnd:
    """The worker's end of its 'pipe': messages from the daemon in, reports out to the daemon's inbox."""

    def __init__(self, incoming: queue.Queue, inbox: Inbox, name: str, control: worker.WorkerControl) -> None:
        self.incoming = incoming
        self.inbox = inbox
        self.name = name
        self.control = control

    def recv(self) -> ToWorker:
        return self.incoming.get()

    def send(self, report: WorkerReport) -> None:
        if self.control.killed:
            raise BrokenPipeError("the worker was killed")  # a killed process sends nothing more either
        self.inbox.put(FromWorker(self.name, report))


class ThreadWorker(Worker):
    """A worker whose loop runs on a thread of the daemon's process."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.thread: threading.Thread | None = None
        self.control = worker.WorkerControl()
        self._incoming: queue.Queue = queue.Queue()

    def start(self) -> None:
        self.control = worker.WorkerControl()
        self._incoming = queue.Queue()
        self._started()
        end = _QueueEnd(self._incoming, self.inbox, self.name, self.control)
        self.thread = threading.Thread(target=self._run, args=(end, self._incoming),
                                       name=f"hotshot-{self.name} (thread worker)", daemon=True)
        self.thread.start()
        log.info("worker started", worker=self.name, device=self.device, thread=True)

    def _run(self, end: _QueueEnd, incoming: queue.Queue) -> None:
        code = 0
        try:
            worker.serve(end, self.name, self.device, self.cache_bytes, None, _killed, end.control)
        except worker.WorkerKilled:
            code = KILLED_CODE
        except Exception:  # noqa: BLE001 - the loop itself broke: reported as a worker that died
            log.error("thread worker crashed", worker=self.name, exc_info=True)
            code = 1
        incoming.put(Exit())  # its control reader ends too
        end.inbox.put(WorkerExited(self.name, None, code))

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and not self.control.killed

    def send(self, message: ToWorker) -> bool:
        if not self.alive:
            return False
        self._incoming.put(message)
        return True

    def kill(self, reason: str) -> None:
        """Stop reporting at once; the render unwinds at its next step (an idle worker leaves now)."""
        if self.alive:
            self.killed_because = reason
            self.control.killed = True
            self._incoming.put(Exit())

    def shutdown(self, timeout: float = 10.0) -> None:
        if self.thread is None:
            return
        self.send(Exit())
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.control.killed = True
            self.thread.join(timeout)


def _killed() -> None:
    """A report could not go out because the worker was killed: unwind its render."""
    raise worker.WorkerKilled
