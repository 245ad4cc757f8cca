"""Logging set-up: one structlog stream for hotshot and the libraries it uses.

Only entry points (the CLI, the worker process) call `configure`. Output is
JSON lines, or readable console lines when stderr is a terminal. watchdog,
APScheduler, diffusers and transformers log through the same formatter.
"""

from __future__ import annotations

import logging
import sys

import structlog

LIBRARY_LOGGERS = ("watchdog", "apscheduler", "diffusers", "transformers", "urllib3")


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
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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


def route_ml_libraries() -> None:
    """Send diffusers' and transformers' own log handlers into the shared stream (worker only)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.enable_propagation()
        library.disable_progress_bar()
