"""The loop's steps: one that fails (a full disk, a database that cannot be written) is logged and tried again
on a later turn; it never stops the daemon."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("hotshot.daemon")
STEP_ERROR_LOG_SECONDS = 60.0


class Steps:
    """Runs the named steps of the loop, and knows which of them are failing (each failure is logged at most
    once a minute per step, and its recovery once)."""

    def __init__(self) -> None:
        self._failing: set[str] = set()
        self._logged: dict[str, float] = {}

    def run(self, step: str, action: Callable, *args) -> bool:
        """Run one step of the loop; log a failure and carry on. True if it worked."""
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive a full disk or an unwritable database
            self.failed(step, exc)
            return False
        self.works(step)
        return True

    def failed(self, step: str, exc: Exception) -> None:
        now = time.monotonic()
        self._failing.add(step)
        if now - self._logged.get(step, -STEP_ERROR_LOG_SECONDS) >= STEP_ERROR_LOG_SECONDS:
            self._logged[step] = now
            log.error("a step of the loop failed; it is tried again", step=step,
                      error=f"{type(exc).__name__}: {exc}", exc_info=True)

    def works(self, step: str) -> None:
        if step in self._failing:
            self._failing.discard(step)
            log.info("a failed step of the loop works again", step=step)
