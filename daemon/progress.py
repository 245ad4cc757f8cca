"""Progress of running jobs: percent, elapsed and time left, and bars on a terminal.

The daemon keeps a `LiveJob` for each running job and works out percent done,
elapsed time and ETA from the worker's step reports. `hotshot run` on a
terminal shows a bar per running job (`JobBars`, with rich) while the log
scrolls above the bars; anywhere else only the JSON log is written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

# Phases before the first diffusion step: nothing is done yet, and no chunk is being rendered.
BEFORE_CHUNKS = ("starting", "preparing", "loading model")


@dataclass
class LiveJob:
    """What the loop keeps about a running job between progress messages."""

    job_id: int
    worker: str
    label: str
    started: float
    estimate_seconds: float | None
    window: str | None = None
    pause_at: float | None = None      # epoch seconds its render window closes, if it pauses then
    stopping: str | None = None        # why it was asked to stop after the current chunk
    cancel_sent: float | None = None   # monotonic time a cancel was sent to its worker
    last_report: float = field(default_factory=time.monotonic)  # monotonic time its worker last reported
    last_status: float = 0.0
    reported: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)
    estimate: dict = field(default_factory=dict)  # the job's estimate, part by part
    shared: bool = False               # another render ran on the same CPU meanwhile
    chunks_started: float | None = None  # monotonic time of its first chunk report (the model was loaded)
    done_then: float = 0.0               # the fraction done at that time (chunks resumed from checkpoints)

    def refresh(self) -> dict:
        """The latest report with percent, elapsed and ETA worked out as of now."""
        now = time.monotonic()
        if self.chunks_started is None and self.reported.get("phase") not in BEFORE_CHUNKS \
                and self.reported.get("chunk"):
            self.chunks_started, self.done_then = now, fraction_done(self.reported, self.estimate)
        since = None if self.chunks_started is None else now - self.chunks_started
        self.progress = with_eta(self.reported, now - self.started, self.estimate or self.estimate_seconds,
                                 since, self.done_then)
        return self.progress


def fraction_done(progress: dict, estimate: dict | None = None) -> float:
    """How much of the chunk work is done, 0 to 1: whole chunks, and within a chunk its steps (and its frames
    work once it is encoding), weighted by the estimate's split between diffusion and frames work."""
    chunks = max(progress.get("chunks") or 1, 1)
    chunk = progress.get("chunk") or 0
    if progress.get("phase") in BEFORE_CHUNKS or chunk < 1:
        return min((progress.get("chunks_resumed") or 0) / chunks, 1.0)
    if progress.get("phase") == "writing output":
        return 1.0
    parts = (estimate.get("parts") or {}) if estimate else {}
    diffusion, frames = parts.get("diffusion") or 0.0, parts.get("frames") or 0.0
    share = diffusion / (diffusion + frames) if diffusion + frames > 0 else 0.9
    in_chunk = share if progress.get("phase") == "encoding" else \
        share * (progress.get("step") or 0) / max(progress.get("steps") or 1, 1)
    return min((chunk - 1 + in_chunk) / chunks, 1.0)


def with_eta(progress: dict, elapsed: float, estimate: dict | float | None, chunks_for: float | None = None,
             done_then: float = 0.0) -> dict:
    """Progress with percent done, elapsed time and time left added.

    Before the first chunk (the model loading, controls, captions) nothing counts as done and the time left
    is the estimate less the time taken. Once chunks run, the time left is extrapolated from the chunks'
    own pace (not from the loading), plus the estimate for writing the output. A render is never 100 %
    until it is done.
    """
    seconds = estimate.get("seconds") if isinstance(estimate, dict) else estimate
    parts = (estimate.get("parts") or {}) if isinstance(estimate, dict) else {}
    done = fraction_done(progress, estimate if isinstance(estimate, dict) else None)
    writing = progress.get("phase") == "writing output"
    output = parts.get("output", 0.0)
    if chunks_for is not None and done - done_then > 0.02 and not writing:
        eta = chunks_for / (done - done_then) * (1.0 - done) + output
    elif seconds is not None:
        eta = max(seconds - elapsed, output if not writing else 0.0, 0.0)
    else:
        eta = None
    percent = 99.0 if writing else min(100.0 * done, 99.0)
    return {
        **progress,
        "percent": round(percent, 1),
        "elapsed_seconds": round(elapsed, 1),
        "eta_seconds": None if eta is None else round(eta, 1),
    }


def describe(progress: dict) -> str:
    """Where a running job stands in words: the phase before chunks run ("loading model"), else the chunk and
    its step (or what it is doing), as the status file, `hotshot status` and the bars say it."""
    phase = progress.get("phase") or ""
    if phase in BEFORE_CHUNKS or not progress.get("chunk"):
        return phase or "starting"
    if phase == "writing output":
        return phase
    text = f"chunk {progress['chunk']}/{progress.get('chunks', '?')}"
    if phase == "encoding":
        return f"{text} encoding"
    return f"{text} step {progress.get('step', 0)}/{progress.get('steps', 0)}"


class Display(Protocol):
    """Where the daemon shows running jobs besides the status files."""

    def update(self, job_id: int, label: str, progress: dict) -> None: ...

    def finish(self, job_id: int) -> None: ...


class NoDisplay:
    def update(self, job_id: int, label: str, progress: dict) -> None:
        pass

    def finish(self, job_id: int) -> None:
        pass


class JobBars:
    """A rich progress bar per running job at the bottom of the terminal, with the log scrolling above it."""

    def __init__(self, console=None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.console = console or Console(stderr=True)
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self._tasks: dict[int, int] = {}

    def __enter__(self) -> JobBars:
        self.bars.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bars.stop()

    def update(self, job_id: int, label: str, progress: dict) -> None:
        detail = describe(progress)
        if job_id not in self._tasks:
            self._tasks[job_id] = self.bars.add_task(label, total=100.0, detail=detail)
        self.bars.update(self._tasks[job_id], completed=progress.get("percent") or 0.0, detail=detail)

    def finish(self, job_id: int) -> None:
        task = self._tasks.pop(job_id, None)
        if task is not None:
            self.bars.remove_task(task)

    def log_handler(self) -> logging.Handler:
        """A logging handler that prints above the bars instead of through them."""
        return _ConsoleHandler(self.console)


class _ConsoleHandler(logging.Handler):
    def __init__(self, console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.text import Text

        try:
            self.console.print(Text.from_ansi(self.format(record)), soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
