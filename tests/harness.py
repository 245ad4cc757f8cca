"""Running the real daemon in tests: temporary roots and state, real workers, real events.

`WORKER_KIND` is the worker every daemon started here gets: process workers, unless a test runs under the
`worker_kind` fixture (tests/conftest.py), which sets it for one test."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from daemon.config import load_settings
from daemon.service import Daemon
from daemon.store import Store
from daemon.workers import ProcessWorker, Worker
from tests.conftest import CATALOG

WORKER_KIND: type[Worker] = ProcessWorker


def settings_for(tmp_path: Path, models_dir: Path, **overrides):
    """Settings for a daemon over `tmp_path/root`, quick to notice files, with the session's tiny model."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    values = dict(
        roots=[root], state_dir=tmp_path / "state", models_dir=models_dir, catalogs=[CATALOG],
        stable_seconds=0.3, reconcile_seconds=2.0, source_wait_seconds=30.0, retry_backoff_seconds=0.0,
        devices=["cpu"], status_every_seconds=0.2, log_format="json", log_level="warning",
    )
    values.update(overrides)
    return load_settings(None, **values)


def chunks_done(database: Path, job_id: int = 1) -> int:
    """How many chunks of a job the database records as finished (0 before the database has its tables)."""
    if not database.exists():
        return 0
    store = Store.open(database, read_only=True)
    try:
        return len(store.chunks(job_id))
    except Exception:  # noqa: BLE001 - the schema may not exist yet
        return 0
    finally:
        store.close()


def sha(path: Path) -> str:
    """The sha256 of a file's bytes (outputs are compared byte for byte)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_of(request: Path) -> str | None:
    """The state in a request's status file, or None while it has none."""
    status = status_of(request)
    return status and status["state"]


def drain(settings, worker_kind: type[Worker] | None = None) -> Daemon:
    """Run the daemon until nothing is left to do; return it for inspection."""
    daemon = Daemon(settings, worker_kind=worker_kind or WORKER_KIND)
    assert daemon.run(drain=True) == 0
    return daemon


class FakeClock:
    """Epoch seconds that start at `start` and run at real speed until a test moves them (`set`)."""

    def __init__(self, start: datetime) -> None:
        self.set(start)

    def __call__(self) -> float:
        return time.monotonic() + self._offset

    def set(self, when: datetime) -> None:
        self._offset = when.timestamp() - time.monotonic()


class RunningDaemon:
    """The daemon in a background thread, stopped (cleanly) on exit."""

    def __init__(self, settings, clock: Callable[[], float] = time.time) -> None:
        self.daemon = Daemon(settings, clock, worker_kind=WORKER_KIND)
        self.thread = threading.Thread(target=self._run, name="test-daemon", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def __enter__(self) -> Daemon:
        self.thread.start()
        return self.daemon

    def __exit__(self, *exc_info) -> None:
        self.daemon.stop("test finished")
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the daemon did not stop"
        if self.error:
            raise self.error


@contextmanager
def ticked_daemon(settings, clock: Callable[[], float] = time.time) -> Iterator[Daemon]:
    """A daemon whose loop the test turns itself (`tick_until`), with no worker processes: nothing renders."""
    daemon = Daemon(settings, clock, worker_kind=WORKER_KIND)
    try:
        daemon.reconcile()
        yield daemon
    finally:
        daemon.store.close()
        daemon.release_locks()


def kill_worker(daemon: Daemon, index: int = 0) -> None:
    """Kill a worker mid-job as a crash would: SIGKILL for a process; a thread worker is killed by the daemon's
    own means (it unwinds at the next diffusion step and reports nothing more)."""
    handle = daemon.workers[index]
    if isinstance(handle, ProcessWorker):
        os.kill(handle.pid, signal.SIGKILL)
    else:
        handle.kill("killed by the test")


def tick_until(daemon: Daemon, condition: Callable[[], object], timeout: float = 30.0, what: str = "condition"):
    """Turn the loop (rescanning the roots each time) until `condition` holds."""

    def turned():
        daemon.reconcile()
        daemon.tick()
        return condition()

    return wait_for(turned, timeout, what)


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def status_of(request: Path) -> dict | None:
    path = request.with_name(request.name.replace(".render.json", ".render.status.json"))
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for_state(request: Path, states: tuple[str, ...], timeout: float = 90.0) -> dict:
    return wait_for(lambda: (s := status_of(request)) and s["state"] in states and s,
                    timeout, f"{request.name} to reach {states}")


def write_request(path: Path, **fields) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields))
    return path
