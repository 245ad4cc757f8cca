"""Load: many requests over many shots dropped at once, with duplicate drops and re-saves; event storms.

The daemon runs in a process of its own, so that its peak memory (VmHWM) is its own. The figures printed
(and recorded by `make test-reliability`) are the time from the last drop to every request queued, to
every request done, and the daemon's peak resident memory.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from structlog.testing import capture_logs

from daemon.store import Store
from tests.harness import RunningDaemon, settings_for, state_of, wait_for, wait_for_state
from tests.helpers import make_clip
from tests.reliability.support import DaemonProcess, config_file, report, write_json

STORM = 1500  # rewrites of each of the two files
TINY = {"model": "passthrough", "frame_range": [0, 4], "output_size": 64, "context": {"size": 9, "overlap": 2}}


def counts(database) -> tuple[int, int, int]:
    """(jobs, jobs queued or further on, jobs done)."""
    if not database.exists():
        return 0, 0, 0
    store = Store.open(database, read_only=True)
    try:
        rows = store.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
    except Exception:  # noqa: BLE001 - the schema may not be there yet
        return 0, 0, 0
    finally:
        store.close()
    by_state = {state: count for state, count in rows}
    total = sum(by_state.values())
    return total, total - by_state.get("waiting", 0), by_state.get("done", 0)


def drop(root, shots: int, per_shot: int, clip) -> list:
    requests = []
    for shot_index in range(shots):
        shot = root / f"show/sh{shot_index:03d}"
        shot.mkdir(parents=True)
        shutil.copyfile(clip, shot / ".plate.mp4.copying")
        os.replace(shot / ".plate.mp4.copying", shot / "plate.mp4")
        for index in range(per_shot):
            requests.append(write_json(shot / f"r{index:02d}.render.json", {**TINY, "prompt": f"take {index}"}))
    return requests


@pytest.mark.slow
@pytest.mark.parametrize("shots,per_shot", [
    pytest.param(10, 10, id="100-requests"),
    pytest.param(100, 10, id="1000-requests"),
])
def test_many_requests_at_once_each_render_exactly_once(tmp_path, models_dir, shots, per_shot):
    """Every request is dropped at once, then dropped again unchanged (a second copy of the batch) and a third
    of them re-saved (touched): exactly one job per request, every one rendered, none lost."""
    clip = make_clip(tmp_path / "clip.mp4", 8, size="64x32")
    config = config_file(tmp_path, models_dir, log_level="warning", reconcile_seconds=30.0)
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    database = tmp_path / "state" / "hotshot.db"
    try:
        requests = drop(tmp_path / "root", shots, per_shot, clip)
        for request in requests:                      # the same batch copied in again
            write_json(request, json.loads(request.read_text()))
        for request in requests[::3]:                 # and some of it saved once more
            os.utime(request)
        last_drop = time.monotonic()
        total = shots * per_shot
        wait_for(lambda: counts(database)[1] >= total, 60 + total, "every request to be queued")
        queued = time.monotonic() - last_drop
        wait_for(lambda: counts(database)[2] >= total, 60 + 3 * total, "every request to be rendered")
        rendered = time.monotonic() - last_drop
        peak = daemon.peak_rss_kib()
        time.sleep(2.0)  # time for duplicates still settling to show up, if they made jobs
        jobs = counts(database)[0]
        assert daemon.alive()
        daemon.stop()
    finally:
        daemon.kill_session()
    states = [state_of(request) for request in requests]
    outputs = sorted(path.name for path in (tmp_path / "root").rglob("plate_r*.mp4"))
    lost = total - states.count("done")
    report(f"load: {total} requests over {shots} shots at once, dropped twice, a third re-saved", 1,
           int(jobs != total or lost != 0), lost, f"pytest tests/reliability/test_load.py -k {total}-requests "
           "-m reliability", seconds_to_all_queued=round(queued, 1), seconds_to_all_done=round(rendered, 1),
           daemon_peak_rss_mib=round(peak / 1024, 1) if peak else None)
    assert jobs == total, f"{jobs} jobs for {total} distinct requests"
    assert lost == 0 and states == ["done"] * total
    assert len(outputs) == total and set(outputs) == {f"plate_r{n:03d}.mp4" for n in range(1, per_shot + 1)}


def test_an_event_storm_on_one_file_does_not_ingest_it_again(tmp_path, media, models_dir):
    """Thousands of modified events on a request and on its source (rewritten with the same bytes): the
    request is registered once and the video probed once more at most, and the loop keeps up."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough", reconcile_seconds=3600)
    shot = settings.roots[0] / "sh010"
    shot.mkdir(parents=True)
    clip = make_clip(shot / "plate.mp4", 8, size="64x32")
    request = write_json(shot / "r.render.json", TINY)
    with capture_logs() as logs, RunningDaemon(settings) as daemon:
        wait_for_state(request, ("done",), 60)
        data, video = request.read_bytes(), clip.read_bytes()
        started = time.monotonic()
        for _ in range(STORM):
            with open(request, "r+b") as handle:
                handle.write(data)
            with open(clip, "r+b") as handle:
                handle.write(video[:4096])
        storm = time.monotonic() - started
        wait_for(lambda: daemon.inbox.empty() and len(daemon.tracker) == 0, 60, "the storm to settle")
        settled = time.monotonic() - started
        other = write_json(shot / "s.render.json", {**TINY, "prompt": "after the storm"})
        wait_for_state(other, ("done",), 60)
    registered = [entry["job"] for entry in logs if entry.get("event") == "request registered"]
    probed = [entry for entry in logs if entry.get("event") == "media registered"]
    report(f"event storm: {2 * STORM:,} rewrites (modify events) of a request and its source", 1, 0, 0,
           "pytest tests/reliability/test_load.py -k storm", seconds_of_storm=round(storm, 1),
           seconds_to_settle=round(settled, 1))
    assert registered == [1, 2], "the request was registered again"
    assert len(probed) <= 2, probed  # the clip when it arrived, and at most once after the storm


def test_an_overflow_of_the_inotify_queue_makes_the_daemon_scan_at_once(tmp_path, models_dir):
    """More file events at once than the kernel's inotify queue holds: the events after the overflow are lost
    (a request among them), the daemon logs it and scans the roots at once, and the request gets its status
    file long before `reconcile_seconds` (an hour here) would have found it."""
    queue_size = int(open("/proc/sys/fs/inotify/max_queued_events").read())  # read only: it is machine-wide
    settings = settings_for(tmp_path, models_dir, default_model="passthrough", reconcile_seconds=3600)
    shot = settings.roots[0] / "sh010"
    frames = shot / "plate"
    frames.mkdir(parents=True)
    make_clip(shot / "plate.mp4", 8, size="64x32")
    with capture_logs() as logs, RunningDaemon(settings) as daemon:
        first = write_json(shot / "first.render.json", TINY)
        wait_for_state(first, ("done",), 60)
        # The watcher's reader of the inotify queue is held up (it reads under this lock) while a sequence's
        # frames arrive: each new file is two events (created, closed after writing), queued by the kernel.
        reader = daemon.watcher.observer._inotify_fd
        with reader._lock:
            for frame in range(queue_size // 2 + 100):
                (frames / f"plate.{frame:05d}.exr").touch()
            request = write_json(shot / "lost.render.json", TINY)  # its events do not fit in the queue
        wait_for_state(request, ("done",), 60)
    warned = [entry for entry in logs if entry.get("event", "").startswith("file events were lost")]
    assert len(warned) == 1, warned
