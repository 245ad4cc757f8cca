"""Registration at scale: a sequence drop registered in batches, and the reconcile scan that finds files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon.control import PAUSED
from daemon.conventions import status_path
from daemon.scan import candidate_files, changed_files
from daemon.states import JobState, MediaState
from daemon.status_file import BatchWrites
from tests.harness import settings_for, status_of, tick_until, ticked_daemon, write_request
from tests.helpers import make_clip

SHOTS = 3
PER_SHOT = 100
TINY = {"model": "passthrough", "frame_range": [0, 4], "output_size": 64, "source": "plate.mp4"}


def test_a_drop_of_hundreds_of_requests_gets_every_status_file_and_job_in_order(tmp_path, models_dir):
    """Three hundred requests dropped at once into three shots are registered in batches: each gets one job and
    a status file naming it, and the queue orders them by the priority each asked for, then by arrival."""
    settings = settings_for(tmp_path, models_dir, stable_seconds=0.0, default_model="passthrough")
    requests = []
    for shot in range(SHOTS):
        folder = settings.roots[0] / f"seq/sh{shot:03d}"
        folder.mkdir(parents=True)
        make_clip(folder / "plate.mp4", 8, size="64x32")
        for index in range(PER_SHOT):
            requests.append(write_request(folder / f"r{index:03d}.render.json", **TINY, prompt=f"take {index}",
                                          priority=(index * 7) % 5))
    with ticked_daemon(settings) as daemon:
        daemon.store.set_flag(PAUSED, "1")
        daemon.paused = True
        tick_until(daemon, lambda: all(status_of(request) for request in requests), 60, "every status file")
        statuses = [status_of(request) for request in requests]
        jobs = daemon.store.jobs()
        queue = daemon.store.queue()
        assert daemon.store.unpublished_since() is None
    assert len(jobs) == len(requests) and {job.request_path for job in jobs} == {str(r) for r in requests}
    by_path = {job.request_path: job for job in jobs}
    for request, status in zip(requests, statuses, strict=True):
        asked = json.loads(request.read_text())["priority"]
        assert (status["state"], status["job"], status["priority"]) == ("queued", by_path[str(request)].id, asked)
    assert [job.id for job in queue] == [job.id for job in sorted(jobs, key=lambda job: (-job.priority, job.id))]
    assert len({job.priority for job in queue}) == 5


def test_the_scan_reports_new_and_changed_videos_and_requests_only(tmp_path):
    """The reconcile scan reports videos and requests that are new or whose size or time changed; never
    unchanged ones, other files, hidden or temporary names, or what lies behind a linked folder."""
    root = tmp_path / "root"
    shot = root / "seq/sh010"
    (shot / "plate").mkdir(parents=True)
    files = {name: shot / name for name in ("plate.mp4", "Take.MOV", "r1.render.json", "r2.render.json",
                                             "notes.txt", "plate_r001.control-depth.mp4", ".hidden.mp4",
                                             "copying.mp4.part", "plate/plate.1001.exr", "mov")}
    for path in files.values():
        path.write_bytes(b"x")
    (root / ".trash").mkdir()
    (root / ".trash/old.render.json").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "elsewhere.mp4").write_bytes(b"x")
    (root / "linked").symlink_to(outside, target_is_directory=True)

    candidates = {path.relative_to(root).as_posix() for path in candidate_files(root)}
    assert candidates == {"seq/sh010/plate.mp4", "seq/sh010/Take.MOV", "seq/sh010/r1.render.json",
                          "seq/sh010/r2.render.json"}
    assert all(isinstance(path, Path) for path in changed_files([root], {}))

    known = {str(files[name]): (path.stat().st_size, path.stat().st_mtime_ns)
             for name, path in files.items() if name in ("plate.mp4", "Take.MOV", "r1.render.json")}
    files["r1.render.json"].write_bytes(b"xy")                         # changed size
    os.utime(files["Take.MOV"], ns=(1, 1))                             # changed time
    assert sorted(changed_files([root], known)) == sorted([files["Take.MOV"], files["r1.render.json"],
                                                           files["r2.render.json"]])   # r2 is new


def test_reconcile_finds_new_changed_and_removed_files(tmp_path, models_dir):
    """With no events at all, the reconcile scan registers a new request, registers an edited one again as a
    new job, and marks a removed video missing."""
    settings = settings_for(tmp_path, models_dir, stable_seconds=0.0, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    clip = make_clip(shot / "plate.mp4", 8, size="64x32")
    spare = make_clip(shot / "spare.mp4", 8, size="64x32")
    first = write_request(shot / "a.render.json", **TINY, when="2099-01-01T00:00:00")
    with ticked_daemon(settings) as daemon:
        tick_until(daemon, lambda: status_of(first), 30, "the first request")
        first_job = status_of(first)["job"]
        second = write_request(shot / "b.render.json", **TINY, when="2099-01-01T00:00:00")
        write_request(first, **TINY, prompt="edited", when="2099-01-01T00:00:00")
        spare.unlink()
        for _ in range(3):           # reconcile and tick only: no watcher runs in a ticked daemon
            daemon.reconcile()
            daemon.tick()
        tick_until(daemon, lambda: status_of(second) and status_of(first)["job"] != first_job, 30, "the scan")
        jobs = {job.id: job for job in daemon.store.jobs()}
        assert jobs[first_job].state == JobState.CANCELLED
        assert jobs[status_of(first)["job"]].state == JobState.WAITING
        assert jobs[status_of(second)["job"]].state == JobState.WAITING
        assert daemon.store.media_at(spare)["state"] == MediaState.MISSING
        assert daemon.store.media_at(clip)["state"] == MediaState.READY


def test_status_files_written_beside_the_next_batch_keep_the_crash_note_on_the_oldest_unwritten_batch(
        tmp_path, models_dir):
    """Two batches' status files handed to the writers one after the other: once the first batch's are written
    the store's note names the second batch's first job (where a restart would write from), and once both
    are written it is cleared; every request then has a status file naming its job."""
    settings = settings_for(tmp_path, models_dir, stable_seconds=0.0, default_model="passthrough")
    folder = settings.roots[0] / "seq/sh000"
    folder.mkdir(parents=True)
    make_clip(folder / "plate.mp4", 8, size="64x32")
    requests = [write_request(folder / f"r{index}.render.json", **TINY, prompt=f"take {index}") for index in range(6)]
    with ticked_daemon(settings) as daemon:
        daemon.store.set_flag(PAUSED, "1")
        daemon.paused = True
        tick_until(daemon, lambda: all(status_of(request) for request in requests), 60, "every status file")
        by_path = {job.request_path: job.id for job in daemon.store.jobs()}
        ids = [by_path[str(request)] for request in requests]
        for request in requests:
            status_path(request).unlink()
        writes = BatchWrites(daemon.store)
        for first, last in ((0, 3), (3, 6)):
            with daemon.store.immediate():
                daemon.store.note_unpublished(ids[first])  # as registering does; a note already there stays
            writes.submit(ids[first:last])
        assert daemon.store.unpublished_since() == ids[0]
        writes.wait(1)
        assert daemon.store.unpublished_since() == ids[3]
        assert [status_of(request)["job"] for request in requests[:3]] == ids[:3]
        writes.close()
        assert daemon.store.unpublished_since() is None
        assert [status_of(request)["job"] for request in requests] == ids
