"""kill -9 of the daemon, and of a worker, at seeded points; a worker that hangs.

Each trial drops a shot with a request that is first saved to wait (far in the future) and then edited to
render now, and a second request while the first renders. An armed fault (engine/faults.py) fires at the
n-th time the chosen point is reached, n drawn from the trial's seed: the process at the point SIGKILLs the
daemon or the worker. After the restart (of the daemon, or of the worker by the daemon), each request must
be done exactly once, its render byte-identical to an uninterrupted one, the edited-away version cancelled,
no file visible half-written under its final name and no temporary file left anywhere.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from daemon.control import run_command
from daemon.store import Store
from engine.faults import ENV as FAULTS_ENV
from engine.faults import POINTS
from tests.harness import RunningDaemon, settings_for, status_of, wait_for, wait_for_state
from tests.reliability.support import (
    QUICK,
    RENDER_NAME,
    DaemonProcess,
    Faults,
    TornFileWatcher,
    config_file,
    copy_plate,
    report,
    sha,
    state_of,
    temporaries,
    write_json,
)

DAEMON_POINTS = ("ingest", "status")  # reached by the daemon; the others by the worker
# How many times a trial surely reaches each point after the fault is armed (n is drawn up to this).
HITS = {"ingest": 4, "chunk": 36, "after-chunks": 6, "manifest": 4, "status": 16}
TRIALS = int(os.environ.get("HOTSHOT_RELIABILITY_TRIALS", "20"))
LATER = "2099-01-01T00:00:00"
# The hung worker's stall limit. The injected hang lasts until the kill, so the limit only sets how long the test
# waits; a healthy worker's longest silence (starting, loading, muxing the output) was 2.0 s with two busy loops
# on the 2 cores, which the old 2 s limit took for a hang (a third attempt). Five times that leaves room for a
# loaded CI machine.
STALL = 10.0


class CrashTrials:
    """Trials of one kind (whose process dies, at which point) against one daemon, restarted as needed."""

    def __init__(self, root: Path, database: Path, work_dir: Path, media: Path, reference: str, faults: Faults,
                 target: str, point: str, daemon: DaemonProcess | None = None, worker_pid=None) -> None:
        self.root, self.database, self.work_dir, self.media = root, database, work_dir, media
        self.reference = reference
        self.faults = faults
        self.target, self.point = target, point
        self.daemon = daemon            # a daemon process (daemon kills), else an in-process daemon
        self.worker_pid = worker_pid or (lambda: daemon.worker_pid())
        self.problems: dict[int, list[str]] = {}
        self.lost = 0

    def _argument(self) -> str:
        if self.target == "daemon":
            return "self" if self.point in DAEMON_POINTS else str(self.daemon.pid)
        return str(self.worker_pid()) if self.point in DAEMON_POINTS else "self"

    def _stopped(self) -> bool:
        """The fault fired (or the daemon is gone): stop waiting for the render to get further."""
        return self.faults.fired() is not None or (self.daemon is not None and not self.daemon.alive())

    def _wait(self, condition, timeout: float, what: str) -> bool:
        try:
            wait_for(lambda: condition() or self._stopped(), timeout, what)
            return True
        except AssertionError:
            return False

    def run(self, seed: int, watcher: TornFileWatcher) -> list[str]:
        rng = random.Random(seed)
        shot = self.root / f"{self.point}-{seed:04d}"
        first, second = shot / "r1.render.json", shot / "r2.render.json"
        n = 1 if (self.target, self.point) == ("worker", "ingest") else rng.randint(1, HITS[self.point])
        if (self.target, self.point) != ("worker", "ingest"):
            self.faults.arm(self.point, n, "kill", self._argument())
        copy_plate(self.media, shot)
        write_json(first, {**QUICK, "prompt": "first version", "when": LATER})
        self._wait(lambda: state_of(first) == "waiting", 60, "the first version to wait")
        waiting_job = (status_of(first) or {}).get("job")
        write_json(first, {**QUICK, "prompt": "edited"})
        self._wait(lambda: (status := status_of(first)) and status["job"] != waiting_job
                   and status["state"] in ("running", "done"), 60, "the edit to render")
        time.sleep(rng.uniform(0.0, 1.0))  # the second request arrives at a random moment of the first's render
        if (self.target, self.point) == ("worker", "ingest"):
            self.faults.arm("ingest", 1, "kill", self._argument())
        write_json(second, QUICK)

        problems = []
        if self.daemon is not None and self.target == "daemon":
            try:
                self.daemon.wait_dead(120)
            except Exception:  # noqa: BLE001 - reported as the trial's failure
                problems.append("the daemon was not killed")
            watcher.scan()  # what the crash left under final names
            self.daemon.start()
        else:
            self._wait(lambda: False, 120, "the fault to fire")
        if self.faults.fired() is None:
            problems.append(f"the fault ({self.point} #{n}) never fired")
        self.faults.disarm()
        for request in (first, second):
            try:
                wait_for_state(request, ("done", "failed", "cancelled"), 180)
            except AssertionError:
                pass
        problems += self.verify(shot, first, second)
        return problems

    def verify(self, shot: Path, *requests: Path) -> list[str]:
        problems = []
        for request in requests:
            status = status_of(request) or {}
            if status.get("state") != "done":
                problems.append(f"{request.name} is {status.get('state')}: {status.get('error')}")
                self.lost += 1
        store = Store.open(self.database, read_only=True)
        try:
            for request in requests:
                jobs = [job for job in store.jobs() if job.request_path == str(request)]
                done = [job for job in jobs if job.state == "done"]
                if len(done) != 1 or done[0].id != jobs[-1].id:
                    problems.append(f"{request.name}: jobs {[(job.id, job.state) for job in jobs]}, "
                                    "expected only its newest version done")
                if any(job.state not in ("done", "cancelled") for job in jobs):
                    problems.append(f"{request.name}: a job is left {[job.state for job in jobs]}")
                for job in done:
                    finished = [event for event in store.events(job.id) if event["kind"] == "done"]
                    if len(finished) != 1:
                        problems.append(f"job {job.id} finished {len(finished)} times")
        finally:
            store.close()
        renders = sorted(path for path in shot.iterdir() if RENDER_NAME.search(path.name))
        if [path.name for path in renders] != ["plate_r001.mp4", "plate_r002.mp4"]:
            problems.append(f"renders in the shot: {[path.name for path in renders]}")
        for render in renders:
            if sha(render) != self.reference:
                problems.append(f"{render.name} differs from the uninterrupted render")
                self.lost += 1
            if not render.with_name(render.stem + ".render-info.json").is_file():
                problems.append(f"{render.name} has no Render Info")
        left = temporaries(shot)
        if left:
            problems.append(f"temporary files left: {[path.name for path in left]}")
        return problems


def finish(trials: CrashTrials, watcher: TornFileWatcher, scenario: str, count: int, command: str) -> None:
    problems = {seed: found for seed, found in trials.problems.items() if found}
    left = temporaries(trials.work_dir)
    stale = [path.name for path in trials.work_dir.glob("job-*")] if trials.work_dir.exists() else []
    if left or stale:
        problems[-1] = [f"left in the work folder: {[path.name for path in left]} {stale}"]
    if watcher.torn:
        problems[-2] = watcher.torn
    report(scenario, count, len(problems), trials.lost, command, files_checked=watcher.checked)
    assert not problems, problems


@pytest.mark.slow
@pytest.mark.parametrize("target", ["daemon", "worker"])
@pytest.mark.parametrize("point", POINTS)
def test_kill_at_seeded_points(tmp_path, media, models_dir, quick_reference, target, point):
    """kill -9 of the daemon or a worker at the n-th time a point is reached (n from the seed), 20 seeds."""
    faults = Faults(tmp_path / "faults")
    config = config_file(tmp_path, models_dir)
    daemon = DaemonProcess(config, tmp_path / "daemon.log", faults).start()
    trials = CrashTrials(tmp_path / "root", tmp_path / "state" / "hotshot.db", tmp_path / "state" / "work", media,
                         quick_reference, faults, target, point, daemon)
    try:
        with TornFileWatcher(tmp_path / "root", quick_reference) as watcher:
            for seed in range(1, TRIALS + 1):
                trials.problems[seed] = trials.run(seed, watcher)
            assert daemon.alive(), "the daemon died"
            for request in (tmp_path / "root").rglob("*.render.json"):
                assert state_of(request) == "done"
            daemon.stop()
    finally:
        daemon.kill_session()
    finish(trials, watcher, f"kill -9 of the {target} at '{point}'", TRIALS,
           f"make test-reliability K='test_kill_at_seeded_points and {target} and {point}'")


@pytest.mark.parametrize("point", [pytest.param("chunk", marks=pytest.mark.slow), "manifest"])
def test_worker_killed_at_a_point_in_process(tmp_path, media, models_dir, quick_reference, monkeypatch, point):
    """The fast subset: two seeded kill -9s of the worker of an in-process daemon, at a point of the render."""
    faults = Faults(tmp_path / "faults")
    monkeypatch.setenv(FAULTS_ENV, str(faults.path))
    monkeypatch.setattr("daemon.workers.RESTART_SECONDS", 0.5)
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    with RunningDaemon(settings) as daemon:
        trials = CrashTrials(settings.roots[0], settings.database, settings.work_dir, media, quick_reference, faults,
                             "worker", point, worker_pid=lambda: daemon.workers[0].pid)
        with TornFileWatcher(settings.roots[0], quick_reference) as watcher:
            for seed in (101, 102):
                trials.problems[seed] = trials.run(seed, watcher)
    finish(trials, watcher, f"kill -9 of the worker at '{point}' (in-process, fast subset)", 2,
           f"pytest tests/reliability/test_crashes.py -k 'in_process and {point}'")


def test_a_worker_killed_after_publishing_its_sequence_keeps_it(tmp_path, media, models_dir, monkeypatch):
    """kill -9 of the worker after the MP4 and the image sequence are published but before the Render Info:
    the job resumes with every chunk done and the sequence keeps all its frames."""
    faults = Faults(tmp_path / "faults")
    monkeypatch.setenv(FAULTS_ENV, str(faults.path))
    monkeypatch.setattr("daemon.workers.RESTART_SECONDS", 0.5)
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    faults.arm("after-chunks", 3)  # 1: before the join, 2: joined, not yet renamed, 3: published
    with RunningDaemon(settings):
        request = write_json(shot / "r.render.json", {**QUICK, "image_sequence": "png"})
        status = wait_for_state(request, ("done", "failed"), 120)
    assert faults.fired(), "the fault never fired"
    assert status["state"] == "done" and status["attempts"] == 2, status
    assert status["outputs"]["chunks_resumed"] == status["estimate"]["chunks"]
    assert len(list((shot / "plate_r001").glob("plate_r001.*.png"))) == 41
    assert not temporaries(shot, settings.work_dir)


def test_a_hung_worker_is_killed_and_its_job_retried(tmp_path, media, models_dir, quick_reference, monkeypatch):
    """A worker that stops reporting in the middle of a chunk is killed after `worker_stall_seconds`; its job
    is retried (a second attempt), resumes from its checkpoints and renders byte-identical output."""
    faults = Faults(tmp_path / "faults")
    monkeypatch.setenv(FAULTS_ENV, str(faults.path))
    monkeypatch.setattr("daemon.workers.RESTART_SECONDS", 0.5)
    settings = settings_for(tmp_path, models_dir, default_model="passthrough", worker_stall_seconds=STALL)
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    # A chunk reaches the point 6 times (engine/chunks.py); with the stages side by side, at most 14 other points
    # come before the second chunk's report, so the 16th is after it.
    faults.arm("chunk", 16, "hang")
    with RunningDaemon(settings):
        request = write_json(shot / "r.render.json", QUICK)
        status = wait_for_state(request, ("done", "failed"), 120)
    assert faults.fired(), "the fault never fired"
    assert status["state"] == "done" and status["attempts"] == 2, status
    assert status["outputs"]["chunks_resumed"] >= 2
    assert sha(shot / "plate_r001.mp4") == quick_reference
    store = Store.open(settings.database, read_only=True)
    retried = [event["message"] for event in store.events(status["job"]) if event["kind"] == "retry"]
    store.close()
    assert retried == [f"the worker was killed: it made no progress for {STALL:g} s (worker_stall_seconds)"]
    assert not temporaries(shot, settings.work_dir)


def test_the_loop_keeps_turning_while_a_dead_worker_waits_to_restart(tmp_path, media, models_dir, monkeypatch):
    """A worker that died right after starting is restarted only after RESTART_SECONDS, and meanwhile
    the daemon keeps registering requests (it used to sleep in its loop)."""
    monkeypatch.setattr("daemon.workers.RESTART_SECONDS", 30.0)
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    with RunningDaemon(settings) as daemon:
        handle = daemon.workers[0]
        wait_for(lambda: handle.alive, 60, "the worker")
        os.kill(handle.pid, 9)
        wait_for(lambda: not handle.alive, 10, "the worker to die")
        request = write_json(shot / "r.render.json", QUICK)
        wait_for(lambda: state_of(request) == "queued", 10, "the request to be queued")
        assert not handle.alive, "the worker was restarted before its time"


@pytest.mark.slow
def test_a_retry_whose_staged_frames_are_gone_renders_the_whole_sequence(tmp_path, media, models_dir,
                                                                         quick_reference, monkeypatch):
    """A job that failed for good loses its hidden staging folder (it may be what filled the share); a later
    `hotshot retry` notices the missing frames and renders from the first chunk: a complete sequence."""
    faults = Faults(tmp_path / "faults")
    monkeypatch.setenv(FAULTS_ENV, str(faults.path))
    settings = settings_for(tmp_path, models_dir, default_model="passthrough", max_attempts=1)
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    # Exactly three chunks reported: at most 20 other points come before the third's report, at least 23 before
    # the fourth's (a chunk reaches the point 6 times, engine/chunks.py).
    faults.arm("chunk", 22)
    with RunningDaemon(settings):
        request = write_json(shot / "r.render.json", {**QUICK, "image_sequence": "png"})
        failed = wait_for_state(request, ("done", "failed"), 120)
        assert failed["state"] == "failed" and not (shot / ".plate_r001.frames.part").exists()
        assert (settings.work_dir / "job-000001").is_dir()
        assert "resumes after 3 finished chunk(s)" in run_command(settings, "retry", str(request)).message
        wait_for(lambda: state_of(request) != "failed", 30, "the retry")
        status = wait_for_state(request, ("done", "failed"), 120)
    assert status["state"] == "done" and status["outputs"]["chunks_resumed"] == 0, status
    assert len(list((shot / "plate_r001").glob("*.png"))) == 41
    assert sha(shot / "plate_r001.mp4") == quick_reference
