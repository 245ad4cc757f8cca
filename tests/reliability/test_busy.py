"""SQLite busy: `hotshot status` reading in a loop while the daemon writes as fast as it can; neither fails."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from structlog.testing import capture_logs

from daemon.cli.status import status_data
from daemon.store import Store
from tests.conftest import PROJECT
from tests.harness import RunningDaemon, settings_for, wait_for_state
from tests.reliability.support import QUICK, copy_plate, report, write_json

SHOTS, PER_SHOT = 6, 5


@pytest.mark.slow
def test_status_readers_and_the_daemon_never_get_in_each_others_way(tmp_path, media, models_dir):
    """Two reader threads and a `hotshot status --json --watch` process read the database as fast as they can
    while the daemon registers and renders 30 requests (every claim, progress report and chunk a write)."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough", status_every_seconds=0.05)
    root = settings.roots[0]
    stop = threading.Event()
    reads, failures = [0, 0], []

    def read(slot: int) -> None:
        while not stop.is_set():
            try:
                store = Store.open(settings.database, read_only=True)
                try:
                    status_data(store)
                finally:
                    store.close()
                reads[slot] += 1
            except Exception as exc:  # noqa: BLE001 - what the test counts
                failures.append(repr(exc))

    with capture_logs() as logs, RunningDaemon(settings):
        watch = subprocess.Popen([sys.executable, "-m", "daemon.cli", "status", "--json", "--watch", "--interval",
                                  "0", "--state", str(settings.state_dir)], cwd=PROJECT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        readers = [threading.Thread(target=read, args=(slot,), name=f"reader-{slot}") for slot in range(2)]
        for reader in readers:
            reader.start()
        started = time.monotonic()
        requests = []
        for shot_index in range(SHOTS):
            shot = root / f"sh{shot_index:03d}"
            copy_plate(media, shot)
            requests += [write_json(shot / f"r{index}.render.json", {**QUICK, "prompt": str(index)})
                         for index in range(PER_SHOT)]
        states = [wait_for_state(request, ("done", "failed"), 300)["state"] for request in requests]
        seconds = time.monotonic() - started
        stop.set()
        for reader in readers:
            reader.join(10)
        watch.send_signal(signal.SIGTERM)
        out, err = watch.communicate(timeout=30)
        assert watch.returncode == 0, err[-2000:]
    documents = [json.loads(line) for line in out.splitlines() if line.strip()]
    step_failures = [entry for entry in logs if entry.get("event") == "a step of the loop failed; it is tried again"]
    report("SQLite busy: status readers while the daemon writes", 1, int(bool(failures or step_failures)), 0,
           "pytest tests/reliability/test_busy.py", reads=sum(reads) + len(documents), seconds=round(seconds, 1))
    assert states == ["done"] * len(requests)
    assert not failures, failures[:5]
    assert not step_failures, step_failures[:3]
    assert len(documents) > 10 and all("queue" in document for document in documents)
    assert min(reads) > 10
