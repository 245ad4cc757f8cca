"""Logging set-up: one structlog stream for hotshot and the libraries it uses.

Only entry points (the CLI, the worker process) call `configure`. Output is
JSON lines, or readable console lines when stderr is a terminal. watchdog,
APScheduler, diffusers and transformers log through the same formatter.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import TextIO

import structlog

LIBRARY_LOGGERS = ("watchdog", "apscheduler", "diffusers", "transformers", "urllib3")
_OUT_LOCK = threading.Lock()


def configure(fmt: str = "auto", level: str = "info", handler: logging.Handler | None = None) -> None:
    """Send every log line to standard error (or to `handler`, e.g. one printing above progress bars)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "console":
        final = [structlog.dev.ConsoleRenderer()]
    else:
        final = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        # Below the level, a line is dropped before it is stamped and formatted (a sequence drop logs a line a
        # request, which at log_level = "warning" cost about a tenth of registering it).
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = handler or logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # hotshot deliberately runs without torchvision; transformers' note about its fallback is not news.
    logging.getLogger("transformers.utils.import_utils").setLevel(logging.ERROR)
    logging.captureWarnings(True)


_real_stderr: TextIO | None = None  # the standard error `capture_stderr` replaced by a pipe


def capture_stderr() -> TextIO:
    """Make everything written to file descriptor 2 reach the log as JSON lines; return a stream on the real
    standard error for the log itself.

    Native libraries (libpng on a truncated image), child processes (the workers, multiprocessing's resource
    tracker) and stray prints write to descriptor 2, which children inherit. It becomes a pipe read by a
    thread: a line that is a JSON object already (a worker's log line) passes as it is; any other line
    becomes a log line of its own, `output outside the log`, with the text in `line`.
    """
    global _real_stderr
    out = _real_stderr = os.fdopen(os.dup(2), "w", buffering=1)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    threading.Thread(target=_relay, args=(read_end, out), name="stderr-relay", daemon=True).start()
    return out


def restore_stderr() -> None:
    """Give descriptor 2 its real standard error back: before this process becomes another program (a daemon
    starting itself anew), whose descriptor 2 would otherwise be a pipe that nobody reads."""
    if _real_stderr is not None:
        _real_stderr.flush()
        os.dup2(_real_stderr.fileno(), 2)


def _relay(read_end: int, out: TextIO) -> None:
    log = structlog.get_logger("hotshot.stderr")
    with os.fdopen(read_end, "rb") as pipe:
        for raw in pipe:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not text.strip():
                continue
            if _json_object(text):
                with _OUT_LOCK:
                    out.write(text + "\n")
            else:
                log.warning("output outside the log", line=text)


def _json_object(text: str) -> bool:
    if not text.startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class LockedStreamHandler(logging.StreamHandler):
    """A stream handler that shares its lock with the stderr relay, so that lines never interleave."""

    def emit(self, record: logging.LogRecord) -> None:
        with _OUT_LOCK:
            super().emit(record)


def route_ml_libraries() -> None:
    """Send diffusers' and transformers' own log handlers into the shared stream (worker only)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.enable_propagation()
        library.disable_progress_bar()
