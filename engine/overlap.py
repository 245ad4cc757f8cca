"""The render loop's stages side by side: decoding ahead of diffusion, finishing behind it.

While the model diffuses chunk k, a thread decodes chunk k+1's frames (with its control videos and masks)
and another blends, checkpoints and encodes chunk k-1. Each hand-over is a queue of one chunk, so memory
stays flat however long the clip. torch, numpy and ffmpeg's pipes release the GIL, so the threads really run
beside each other. An error in a side stage is kept and raised again, unchanged, in the render's own thread;
a render that stops for any reason stops its threads before it returns.

With `overlap=False` (the job's `overlap` setting) each stage runs in the render's own thread, one after the
other, through the same functions: a debugging switch whose output is byte-identical.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("hotshot.engine")

T = TypeVar("T")
POLL_SECONDS = 0.1  # how often a blocked hand-over looks whether the render stopped
_DONE = object()


@dataclass(frozen=True)
class StageSpan:
    """One stage of one chunk: when it started and ended, in seconds from the start of the loop."""

    stage: str
    chunk: int
    start: float
    end: float

    def to_dict(self) -> dict:
        return {"stage": self.stage, "chunk": self.chunk, "start": round(self.start, 4), "end": round(self.end, 4)}


class StageClock:
    """Records the spans of every stage (thread-safe), for the Render Info and bench/overhead.py."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.spans: list[StageSpan] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stage(self, name: str, chunk: int) -> Iterator[None]:
        began = time.monotonic() - self.started
        try:
            yield
        finally:
            span = StageSpan(name, chunk, began, time.monotonic() - self.started)
            with self._lock:
                self.spans.append(span)

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, name: str, chunk: int, began: float) -> None:
        """Record a span that began at `began` (from `now()`, in another stage) and ends now."""
        span = StageSpan(name, chunk, began, self.now())
        with self._lock:
            self.spans.append(span)

    def totals(self) -> dict[str, float]:
        """Seconds spent in each stage, over all chunks."""
        with self._lock:
            spans = list(self.spans)
        totals: dict[str, float] = {}
        for span in spans:
            totals[span.stage] = totals.get(span.stage, 0.0) + span.end - span.start
        return totals


class Ahead(Generic[T]):
    """Iterate `produce()` on a thread of its own, at most `depth` items ahead of the consumer."""

    def __init__(self, produce: Callable[[], Iterable[T]], overlap: bool, name: str, depth: int = 1) -> None:
        self._produce = produce
        self._overlap = overlap
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True) if overlap else None

    def __iter__(self) -> Iterator[T]:
        if self._thread is None:
            yield from self._produce()
            return
        self._thread.start()
        while True:
            kind, value = self._queue.get()
            if kind == "error":
                raise value
            if value is _DONE:
                return
            yield value

    def _run(self) -> None:
        try:
            for item in self._produce():
                if not self._put(("item", item)):
                    return
            self._put(("item", _DONE))
        except BaseException as exc:  # noqa: BLE001  handed to the render's thread, which raises it
            self._put(("error", exc))

    def _put(self, entry: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def close(self, stop_source: Callable[[], None] | None = None) -> None:
        """Stop producing and wait for the thread (whatever it raises now is dropped: the render is over).
        `stop_source` ends what the producer may be waiting on (the decoder), so that it returns at once."""
        self._stop.set()
        if self._thread is None or self._thread.ident is None:
            return
        if self._thread.is_alive() and stop_source is not None:
            stop_source()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=POLL_SECONDS)
        self._thread.join()


class Behind(Generic[T]):
    """Run `consume(item)` for each item handed over, in order, on a thread of its own, at most `depth` behind.

    The first error stops consuming; it is raised by the next `put` or by `finish`. Items handed over after it
    are given to `drop` (which lets go of what they hold) instead.
    """

    def __init__(self, consume: Callable[[T], None], overlap: bool, name: str, depth: int = 1,
                 drop: Callable[[T], None] | None = None) -> None:
        self._consume = consume
        self._drop = drop
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._raised = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True) if overlap else None
        if self._thread is not None:
            self._thread.start()

    def put(self, item: T) -> None:
        if self._thread is None:
            self._consume(item)
            return
        self._raise()
        while True:
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                self._raise()

    def check(self) -> None:
        """Raise the error of an item consumed so far, if any."""
        if self._thread is not None:
            self._raise()

    def finish(self) -> None:
        """Wait until every item handed over is consumed; raise the first error."""
        if self._thread is None:
            return
        self._stop_thread()
        self._raise()

    def abandon(self) -> None:
        """The render stopped for another reason: let the items handed over finish (their chunks stay
        checkpointed), log an error among them (the first error is the one raised), and stop the thread."""
        if self._thread is None:
            return
        self._stop_thread()
        if self._error is not None and not self._raised:
            log.error("finishing a chunk failed while the render stopped", error=repr(self._error))

    def _stop_thread(self) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(_DONE, timeout=POLL_SECONDS)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            self._raised = True
            raise self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:  # after an error, nothing more is finished: drain until told to stop
                if self._drop is not None:
                    with contextlib.suppress(Exception):
                        self._drop(item)
                continue
            try:
                self._consume(item)
            except BaseException as exc:  # noqa: BLE001  raised again in the render's thread
                self._error = exc
