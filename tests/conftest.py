"""Shared fixtures: real clips, a real tiny model, real folders, no leaked threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT / "tests" / "data"
CATALOG = PROJECT / "config" / "models.toml"


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves a non-daemon thread, or any watchdog/scheduler thread, running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leaked = [t for t in set(threading.enumerate()) - before if t.is_alive() and _counts(t)]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads left running: {[t.name for t in leaked]}")


def _counts(thread: threading.Thread) -> bool:
    name = type(thread).__name__ + thread.name
    return not thread.daemon or any(word in name for word in ("Observer", "Emitter", "APScheduler", "reader",
                                                              "thread worker", "hotshot-"))


@pytest.fixture(params=["thread", pytest.param("process", marks=pytest.mark.slow)])
def worker_kind(request, monkeypatch):
    """The daemon suites run over both kinds of worker: on threads in the fast suite, as processes (what
    `hotshot run` uses) with `make test-slow`; process workers are also what the reliability suite kills."""
    from daemon.thread_worker import ThreadWorker
    from daemon.workers import ProcessWorker
    from tests import harness

    kind = ThreadWorker if request.param == "thread" else ProcessWorker
    monkeypatch.setattr(harness, "WORKER_KIND", kind)
    return kind


@pytest.fixture(scope="session")
def media() -> Path:
    """The bundled test clips (read-only: copy before writing near them)."""
    return DATA


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_spec(models_dir):
    """The catalog's tiny Wan VACE, built once per session with `make_tiny` (the same code as the CLI)."""
    from engine.catalog import load_catalog
    from engine.models import make_tiny

    spec = load_catalog([CATALOG], models_dir)["tiny-wan-vace"]
    make_tiny(spec)
    return spec
