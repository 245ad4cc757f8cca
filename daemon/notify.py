"""Notifications when a job ends: an HTTP webhook, a local command, or both.

Each watch root may name a webhook (POSTed the job's status JSON) and a command
(run with the status file's path as its last argument). A failed notification
is logged and reported, never raised: it must not fail a render that worked.
`NotificationQueue` sends them on one background thread so that a slow webhook
never holds up the daemon's loop.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.states import FINISHED_STATES


class _Log:
    """This module's structlog logger, imported on first use: the settings (which hold `NotifySpec`) are read by
    commands like `hotshot status` that log nothing and should not pay for importing structlog."""

    def __getattr__(self, name: str) -> Any:
        import structlog

        return getattr(structlog.get_logger("hotshot.notify"), name)


log = _Log()

State = Literal[tuple(state.value for state in FINISHED_STATES)]  # how a job may end
Post = Callable[[str, bytes, float], int]


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class NotifySpec(BaseModel):
    """How one watch root wants to hear that a job has ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook: str | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    on: list[State] = Field(default=[state.value for state in FINISHED_STATES])
    timeout_seconds: float = Field(default=5.0, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff_seconds: float = Field(default=1.0, ge=0)

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not _is_http_url(value):
            raise ValueError(
                f'webhook {value!r} must be an http:// or https:// URL with a host, like "http://127.0.0.1:9000/hook"'
            )
        return value

    @model_validator(mode="after")
    def _says_how(self) -> NotifySpec:
        if self.webhook is None and self.command is None:
            raise ValueError('notify needs a webhook, a command or both, like webhook = "http://127.0.0.1:9000/hook"')
        return self


@dataclass
class NotifyResult:
    """What happened when one job's end was announced; `error` is None when everything asked for worked."""

    state: str
    attempts: int = 0
    http_status: int | None = None
    exit_code: int | None = None
    error: str | None = None

    def add_error(self, problem: str) -> None:
        self.error = problem if self.error is None else f"{self.error}; {problem}"


def post_json(url: str, body: bytes, timeout: float) -> int:
    """POST `body` as JSON and return the HTTP status; connection problems raise OSError."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:  # an answer, just not a 2xx one
        exc.close()
        return exc.code


class Notifier:
    """Announces job ends for one watch root as its `NotifySpec` says.

    `sleep` waits between webhook retries; when it returns True (as a set
    `threading.Event`'s `wait` does) the remaining retries are dropped, so a
    stopping daemon is not held up. `post` sends one request (see `post_json`).
    """

    def __init__(self, spec: NotifySpec, sleep: Callable[[float], object] = time.sleep,
                 post: Post | None = None) -> None:
        self.spec = spec
        self.sleep = sleep
        self.post = post or post_json

    def notify(self, state: str, status_path: Path, status: dict[str, Any]) -> NotifyResult:
        """Send the webhook and run the command for a job that ended in `state`; never raises."""
        result = NotifyResult(state)
        if state not in self.spec.on:
            return result
        if self.spec.webhook is not None:
            self._send(result, self.spec.webhook, status)
        if self.spec.command is not None:
            self._run(result, [*self.spec.command, str(status_path)])
        if result.error is None:
            log.info("notified", state=state, status_path=str(status_path), attempts=result.attempts,
                     http_status=result.http_status, exit_code=result.exit_code)
        else:
            log.warning("notification failed", state=state, status_path=str(status_path), attempts=result.attempts,
                        http_status=result.http_status, exit_code=result.exit_code, error=result.error)
        return result

    def _send(self, result: NotifyResult, url: str, status: dict[str, Any]) -> None:
        # default=str: a stray non-JSON value must not cost the whole notification.
        body = json.dumps(status, default=str).encode()
        dropped = ""
        for attempt in range(self.spec.retries + 1):
            result.attempts += 1
            try:
                result.http_status = self.post(url, body, self.spec.timeout_seconds)
            except (OSError, HTTPException) as exc:
                problem = f"webhook {url} unreachable: {exc}"
            else:
                if 200 <= result.http_status < 300:
                    return
                problem = f"webhook {url} answered HTTP {result.http_status}"
                if result.http_status < 500:  # not a passing server fault; sending it again cannot help
                    break
            if attempt == self.spec.retries:
                break
            delay = self.spec.backoff_seconds * 2**attempt
            log.info("webhook retry", url=url, attempt=result.attempts, delay_seconds=delay, problem=problem)
            if self.sleep(delay):
                dropped = "; retries dropped as the daemon stops"
                break
        result.add_error(f"{problem} after {result.attempts} attempt{'s' if result.attempts > 1 else ''}{dropped}")

    def _run(self, result: NotifyResult, argv: list[str]) -> None:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=self.spec.timeout_seconds, check=False)
        except subprocess.TimeoutExpired:
            result.add_error(f"command {argv[0]} did not finish within {self.spec.timeout_seconds:g}s and was killed")
            return
        except OSError as exc:
            result.add_error(f"command {argv[0]} could not be run: {exc}")
            return
        result.exit_code = done.returncode
        if done.returncode != 0:
            said = done.stderr.strip()[-500:]
            result.add_error(f"command {argv[0]} exited with {done.returncode}" + (f": {said}" if said else ""))


class NotificationQueue:
    """Sends notifications one after another on a daemon thread named "hotshot-notify".

    Build notifiers with `sleep=queue.wait` so `stop()` cuts their retry waits short.
    `stop()` still sends what was queued before it (one attempt each) and joins the thread.
    """

    def __init__(self) -> None:
        self._items: queue.Queue[tuple[Notifier, str, Path, dict[str, Any]] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="hotshot-notify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`; True if the queue is stopping."""
        return self._stopping.wait(seconds)

    def submit(self, notifier: Notifier, state: str, status_path: Path, status: dict[str, Any]) -> None:
        if self._stopping.is_set():
            log.warning("notification dropped: the daemon is stopping", state=state, status_path=str(status_path))
            return
        self._items.put((notifier, state, status_path, status))

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        self._items.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _work(self) -> None:
        while (item := self._items.get()) is not None:
            notifier, state, status_path, status = item
            try:
                notifier.notify(state, status_path, status)
            except Exception:  # notify never raises by design; this keeps a bug in it from ending the thread
                log.exception("notifier crashed", state=state, status_path=str(status_path))


class RootNotifiers:
    """The notifiers of each watch root, from the `notify` settings; a root of None means every root."""

    def __init__(self, routes: Iterable[tuple[Path | None, NotifySpec]],
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self._routes = [(root, Notifier(spec, sleep=sleep)) for root, spec in routes]

    def for_request(self, request: Path) -> list[Notifier]:
        return [notifier for root, notifier in self._routes if root is None or root in request.parents]
