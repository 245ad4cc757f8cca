"""A watch root disappears and comes back: a folder renamed away, an unmounted share.

While it is away nothing under it may count as deleted (no media marked missing, no request cancelled)
and its jobs wait; when it is back the daemon watches it again: with reconcile scans turned off, only
events can find a request dropped afterwards, with the native observer and with PollingObserver.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.store import Store
from tests.harness import RunningDaemon, settings_for, status_of, wait_for, wait_for_state
from tests.reliability.support import QUICK, copy_plate, report, state_of, write_json

LATER = "2099-01-01T00:00:00"
SLOW = {"model": "tiny-wan-vace", "frame_range": [0, 99], "output_size": 96, "steps": 2, "seed": 11,
        "context": {"size": 17, "overlap": 5}}


def database_state(settings) -> tuple[list, list]:
    store = Store.open(settings.database, read_only=True)
    try:
        media = [(Path(row["path"]).name, row["state"]) for row in store._all("SELECT * FROM media ORDER BY id")]
        jobs = [(job.id, job.state) for job in store.jobs()]
    finally:
        store.close()
    return media, jobs


def events(logs, event):
    return [entry for entry in logs if entry.get("event") == event]


@pytest.mark.slow
@pytest.mark.parametrize("observer", ["native", "polling"])
def test_a_root_renamed_away_and_back_keeps_its_state(tmp_path, media, models_dir, observer):
    """The root folder is renamed away for a few seconds, then back: nothing is marked missing or cancelled,
    and a request dropped after it is back is found by the observer (no reconcile scans) and rendered."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough", observer=observer, poll_seconds=0.2,
                            reconcile_seconds=3600)
    root = settings.roots[0]
    shot = root / "sh010"
    copy_plate(media, shot)
    done = write_json(shot / "a.render.json", QUICK)
    waiting = write_json(shot / "b.render.json", {**QUICK, "when": LATER})
    with capture_logs() as logs, RunningDaemon(settings):
        wait_for_state(done, ("done",), 60)
        wait_for_state(waiting, ("waiting",), 30)
        before = database_state(settings)
        os.rename(root, tmp_path / "away")
        wait_for(lambda: events(logs, "watch root is unavailable; nothing under it counts as deleted and its jobs "
                                      "wait for it"), 10, "the daemon to notice")
        time.sleep(3 * settings.stable_seconds + 2 * settings.poll_seconds + 1.0)
        away = database_state(settings)
        os.rename(tmp_path / "away", root)
        wait_for(lambda: events(logs, "watch root is back; watching it again"), 10, "the daemon to notice")
        time.sleep(0.5)
        copy_plate(media, root / "sh020")
        later = write_json(root / "sh020" / "r.render.json", QUICK)
        status = wait_for_state(later, ("done", "failed"), 60)
        after = database_state(settings)
    assert away == before, "state changed while the root was away"
    assert status["state"] == "done", status
    assert state_of(waiting) == "waiting" and state_of(done) == "done"
    assert [entry for entry in after[0] if entry[1] == "missing"] == []
    report(f"watch root renamed away and back ({observer} observer)", 1, 0, 0,
           f"pytest tests/reliability/test_roots.py -k 'renamed and {observer}'")


def mount_bind(source: Path, target: Path) -> bool:
    try:
        return subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True).returncode == 0
    except OSError:  # no mount command here
        return False


def unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("observer", ["native", "polling"])
def test_an_unmounted_share_keeps_its_state_and_is_watched_again(tmp_path, media, models_dir, observer):
    """A real share (a bind mount) is unmounted while a job renders from it and mounted again: the job waits
    for it (no attempt lost) and resumes, no media is marked missing, no request cancelled, and the
    share is watched again; then a daemon started while the share is down counts it as away too."""
    share, root = tmp_path / "share", tmp_path / "root"
    share.mkdir()
    root.mkdir()
    if not mount_bind(share, root):
        pytest.skip("mounting is not permitted here (needs root and mount rights)")
    try:
        settings = settings_for(tmp_path, models_dir, observer=observer, poll_seconds=0.2, reconcile_seconds=3600)
        copy_plate(media, root / "sh010")
        running = write_json(root / "sh010" / "a.render.json", SLOW)
        waiting = write_json(root / "sh010" / "b.render.json", {**QUICK, "when": LATER})
        with capture_logs() as logs, RunningDaemon(settings):
            wait_for(lambda: (status_of(running) or {}).get("progress", {}).get("chunk", 0) >= 2, 120,
                     "the render to be under way")
            unmount(root)
            wait_for(lambda: events(logs, "watch root is unavailable; nothing under it counts as deleted and its "
                                          "jobs wait for it"), 10, "the daemon to notice")
            wait_for(lambda: database_state(settings)[1][0][1] == "queued", 120, "the running job to wait")
            time.sleep(2.0)
            away = database_state(settings)
            assert mount_bind(share, root)
            wait_for(lambda: events(logs, "watch root is back; watching it again"), 10, "the daemon to notice")
            time.sleep(0.5)
            copy_plate(media, root / "sh020")
            later = write_json(root / "sh020" / "r.render.json", QUICK)
            first, second = wait_for_state(running, ("done", "failed"), 300), wait_for_state(later, ("done",
                                                                                                     "failed"), 60)
        assert [state for _, state in away[0]] == ["ready"], away
        assert [state for _, state in away[1]] == ["queued", "waiting"], away
        assert first["state"] == "done" and first["attempts"] == 1 and first["outputs"]["chunks_resumed"] >= 1
        assert second["state"] == "done" and state_of(waiting) == "waiting"

        unmount(root)  # a daemon started while the share is down remembers it was a mount
        with capture_logs() as logs, RunningDaemon(settings):
            wait_for(lambda: events(logs, "watch root is unavailable; nothing under it counts as deleted and its "
                                          "jobs wait for it"), 10, "the daemon to notice")
            time.sleep(2.0)
            assert [state for _, state in database_state(settings)[0]] == ["ready", "ready", "ready", "ready"]
            assert state_of(waiting) is None  # the status files are on the share, which is not there
    finally:
        unmount(root)
    assert [job_state for _, job_state in database_state(settings)[1]] == ["done", "waiting", "done"]
    report(f"watch root unmounted mid-render and mounted again ({observer} observer)", 1, 0, 0,
           f"make test-reliability K='unmounted and {observer}'")
