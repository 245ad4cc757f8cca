"""A disk fills up: while a render writes its frames, its MP4, or while the daemon writes its database.

Where the machine allows it (root, `mount -t tmpfs`), the full disk is real: a small tmpfs mounted as a
watch root or as the state folder. Elsewhere the same errors are injected: ENOSPC at a write through the
fault seam (engine/faults.py), and SQLite's own "database or disk is full" through `max_page_count`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.store import Store
from engine.faults import ENV as FAULTS_ENV
from tests.harness import RunningDaemon, drain, settings_for, sha, status_of, wait_for, wait_for_state
from tests.reliability.support import QUICK, Faults, copy_plate, report, state_of, temporaries, write_json

FRAMES = {**QUICK, "output_size": 640, "image_sequence": "png"}   # ~300 KB of PNG per frame
BIG_MP4 = {**QUICK, "output_size": 640}


@contextlib.contextmanager
def small_disk(path: Path, kib: int):
    """A real tmpfs of `kib` KiB at `path`; yields False (nothing mounted) where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(path)],
                                 capture_output=True).returncode == 0
    except OSError:  # no mount command here
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.parametrize("what", [pytest.param("frames", marks=pytest.mark.slow), "mp4"])
def test_a_full_share_fails_the_job_clearly_and_loses_nothing(tmp_path, media, models_dir, monkeypatch, what):
    """The share a render writes to fills up while it writes its image sequence (or its MP4): the job fails
    saying which disk is full, the daemon carries on, a job on another root renders, nothing else changes."""
    small = tmp_path / "small"
    with small_disk(small, 1200 if what == "frames" else 200) as real:
        # A real full disk fails every attempt; an injected fault fires once, so it gets one attempt and its
        # job goes first (the fault fires at the n-th time the worker reaches the point, in whatever job).
        if not real and what == "frames":
            pytest.skip("no fault point sits in the image sequence's writes; this case needs a real small disk")
        attempts = 2 if real else 1
        settings = settings_for(tmp_path, models_dir, roots=[tmp_path / "root", small], max_attempts=attempts)
        full_shot, other_shot = small / "sh010", settings.roots[0] / "sh020"
        for shot in (full_shot, other_shot):
            copy_plate(media, shot, "bars-timecode.mp4")
        request = FRAMES if what == "frames" else BIG_MP4
        full = write_json(full_shot / "r.render.json", {**request, "priority": 1})
        other = write_json(other_shot / "r.render.json", request)
        before = {path.name: sha(path) for path in (full_shot / "plate.mp4", full)}
        if not real:
            faults = Faults(tmp_path / "faults")
            monkeypatch.setenv(FAULTS_ENV, str(faults.path))
            faults.arm("after-chunks", 2, "enospc")
        daemon = drain(settings)
        failed, done = status_of(full), status_of(other)
        after = {path.name: sha(path) for path in (full_shot / "plate.mp4", full)}
        leftovers = temporaries(small)
    assert failed["state"] == "failed", failed
    assert "no space left on the disk holding" in failed["error"] and str(full_shot) in failed["error"]
    assert "hotshot retry" in failed["error"] and f"gave up after {attempts} attempts" in failed["error"]
    assert done["state"] == "done", done
    assert after == before
    assert not leftovers, "the failed job's hidden files still take space on the full share"
    assert daemon.finished and not list(full_shot.glob("plate_r0*"))
    report(f"disk full while writing the {'frames' if what == 'frames' else 'MP4'} ({'tmpfs' if real else 'injected'})",
           1, 0, 0, f"pytest tests/reliability/test_disk_full.py -k {what}")


def fill(folder: Path) -> Path:
    """Fill the disk holding `folder` to the last byte; return the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_a_full_database_disk_does_not_stop_the_daemon(tmp_path, media, models_dir):
    """The disk holding the database fills up while requests arrive and a job runs: the daemon logs the failed
    steps and keeps running; once space is freed every request is registered and rendered exactly once."""
    state = tmp_path / "state"
    with small_disk(state, 4096) as real:
        settings = settings_for(tmp_path, models_dir, default_model="passthrough", state_dir=state)
        shots = [settings.roots[0] / f"sh{index:03d}" for index in range(4)]
        for shot in shots:
            copy_plate(media, shot)
        with capture_logs() as logs, RunningDaemon(settings) as daemon:
            first = write_json(shots[0] / "r.render.json", QUICK)
            wait_for(lambda: state_of(first) in ("running", "done"), 60, "the first job to start")
            if real:
                filler = fill(state)
            else:
                pages = daemon.store.db.execute("PRAGMA page_count").fetchone()[0]
                daemon.store.db.execute(f"PRAGMA max_page_count = {pages}")
            requests = [write_json(shot / "r.render.json", QUICK) for shot in shots[1:]]
            wait_for(lambda: any(entry.get("step") for entry in logs), 30, "a step to fail")
            threading.Event().wait(2.0)
            assert all(state_of(request) in (None, "done", "running", "queued") for request in requests)
            if real:
                filler.unlink()
            else:
                daemon.store.db.execute("PRAGMA max_page_count = 1073741823")
            for request in [first, *requests]:
                wait_for_state(request, ("done", "failed"), 120)
        failures = [entry for entry in logs if entry.get("event") == "a step of the loop failed; it is tried again"]
        store = Store.open(settings.database, read_only=True)
        jobs = store.jobs()
        integrity = store.db.execute("PRAGMA integrity_check").fetchone()[0]
        store.close()
    assert integrity == "ok"
    assert failures and all("database or disk is full" in entry["error"] for entry in failures), failures
    assert [status_of(request)["state"] for request in [first, *requests]] == ["done"] * len(shots)
    assert sorted(job.request_path for job in jobs) == sorted(str(shot / "r.render.json") for shot in shots)
    report(f"database disk full ({'tmpfs' if real else 'max_page_count'})", 1, 0, 0,
           "pytest tests/reliability/test_disk_full.py -k database")

