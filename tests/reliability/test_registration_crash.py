"""kill -9 of the daemon between a committed batch of registrations and its status files."""

from __future__ import annotations

from daemon.control import PAUSED
from daemon.store import Store
from tests.harness import status_of, wait_for
from tests.helpers import make_clip
from tests.reliability.support import DaemonProcess, Faults, config_file, temporaries, write_json

REQUESTS = 200
TINY = {"model": "passthrough", "frame_range": [0, 4], "output_size": 64}


def jobs_by_request(database) -> dict[str, list[int]]:
    store = Store.open(database, read_only=True)
    try:
        found: dict[str, list[int]] = {}
        for job in store.jobs():
            found.setdefault(job.request_path, []).append(job.id)
        return found
    finally:
        store.close()


def test_a_crash_after_the_database_batch_loses_no_status_file(tmp_path, models_dir):
    """The daemon is killed once a batch of requests is committed, before any of their status files is
    written: the next start writes every one, each naming its request's only job, and leaves no temporary."""
    config = config_file(tmp_path, models_dir, log_level="warning", reconcile_seconds=3600.0)
    database = tmp_path / "state" / "hotshot.db"
    store = Store.open(database)
    store.set_flag(PAUSED, "1")   # the jobs stay queued: what is looked at is registration alone
    store.close()
    shot = tmp_path / "root" / "seq" / "sh010"
    shot.mkdir(parents=True)
    make_clip(shot / "plate.mp4", 8, size="64x32")
    requests = [write_json(shot / f"r{index:03d}.render.json", {**TINY, "prompt": f"take {index}"})
                for index in range(REQUESTS)]
    faults = Faults(tmp_path / "faults")
    faults.arm("ingest", 2, "kill", "self")   # 1: the clip, before its row; 2: the requests' batch, committed
    daemon = DaemonProcess(config, tmp_path / "daemon.log", faults)
    try:
        daemon.start()
        daemon.wait_dead(120)
        assert faults.fired() is not None
        registered = jobs_by_request(database)
        assert len(registered) == REQUESTS and all(len(ids) == 1 for ids in registered.values())
        assert [request for request in requests if status_of(request)] == []
        faults.disarm()
        daemon.start()
        wait_for(lambda: all(status_of(request) for request in requests), 120, "every status file")
        daemon.stop()
    finally:
        daemon.kill_session()
    assert jobs_by_request(database) == registered
    for request in requests:
        status = status_of(request)
        assert (status["state"], [status["job"]]) == ("queued", registered[str(request)])
    assert temporaries(shot) == []
