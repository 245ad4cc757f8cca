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

    def refresh(self) -> dict:
        """The latest report with percent, elapsed and ETA worked out as of now."""
        self.progress = with_eta(self.reported, time.monotonic() - self.started, self.estimate_seconds)
        return self.progress


def with_eta(progress: dict, elapsed: float, estimate: float | None) -> dict:
    """Progress with percent done, elapsed time and time left added."""
    chunks = max(progress.get("chunks") or 1, 1)
    steps = max(progress.get("steps") or 1, 1)
    chunk = max(progress.get("chunk") or 0, 0)
    resumed = progress.get("chunks_resumed") or 0
    done_in_chunk = (progress.get("step") or 0) / steps
    completed = max(chunk - 1, 0) + done_in_chunk if chunk else 0.0
    if progress.get("phase") == "writing output":
        completed = chunks
    fraction_now = max(completed - resumed, 0.0)
    fraction_total = max(chunks - resumed, 1e-9)
    if fraction_now > 0:
        eta = elapsed / fraction_now * (fraction_total - fraction_now)
    elif estimate is not None:
        eta = max(estimate - elapsed, 0.0)
    else:
        eta = None
    return {
        **progress,
        "percent": round(100.0 * completed / chunks, 1),
        "elapsed_seconds": round(elapsed, 1),
        "eta_seconds": None if eta is None else round(eta, 1),
    }


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
        detail = f"chunk {progress.get('chunk', 0)}/{progress.get('chunks', 0)} " \
                 f"step {progress.get('step', 0)}/{progress.get('steps', 0)} {progress.get('phase', '')}"
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
