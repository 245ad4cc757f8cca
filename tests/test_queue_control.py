"""Steering the queue: cancel (command, deleted request, "cancel": true), retry, pause and resume, priorities."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from daemon.cli import main
from daemon.control import run_command
from daemon.errors import CommandRefused
from daemon.store import Store, utc_now
from daemon.worker import WorkerControl, _PipeEvents
from engine.errors import Interrupted
from engine.job import Progress, RenderJob
from engine.models import ModelCache
from engine.render import render
from tests.conftest import PROJECT
from tests.harness import (
    FakeClock,
    RunningDaemon,
    chunks_done,
    drain,
    kill_worker,
    settings_for,
    sha,
    state_of,
    status_of,
    tick_until,
    ticked_daemon,
    wait_for,
    wait_for_state,
    write_request,
)
from tests.helpers import make_clip

pytestmark = pytest.mark.usefixtures("worker_kind")  # each test over thread and process workers

QUICK = {"output_size": 64, "steps": 1, "seed": 3}
SLOW = {"output_size": 64, "steps": 30, "seed": 5, "frame_range": [0, 40], "context": {"size": 17, "overlap": 5}}


def cli(settings, *args: str) -> int:
    return main([*args, "--state", str(settings.state_dir)])


def hotshot(settings, *args: str) -> subprocess.CompletedProcess:
    """The real command line, in a process of its own, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args, "--state", str(settings.state_dir)],
                          capture_output=True, text=True, timeout=120, cwd=PROJECT)


def command(settings, name: str, target: str | None = None) -> str:
    return run_command(settings, name, target).message


def chaplin_shot(settings, media, name="sh010"):
    shot = settings.roots[0] / name
    shot.mkdir(parents=True)
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    return shot


def rendering(request):
    status = status_of(request)
    return status and status["state"] == "running" and (status.get("progress") or {}).get("step", 0) >= 1


def test_cancel_stops_a_running_render_and_never_touches_earlier_renders(tmp_path, media, models_dir, tiny_spec):
    """`hotshot cancel <request>` while it renders: the worker drops it at the next diffusion step, its work
    folder and hidden temporaries go, its status says cancelled, and the shot's earlier render is untouched."""
    settings = settings_for(tmp_path, models_dir)
    shot = chaplin_shot(settings, media)
    shutil.copyfile(media / "bars-timecode.mp4", shot / "plate_r001.mp4")  # an earlier render, as far as it shows
    (shot / "plate_r001.render-info.json").write_text(json.dumps({"render_id": "plate_r001"}))
    earlier = sha(shot / "plate_r001.mp4"), sha(shot / "plate_r001.render-info.json")

    request = write_request(shot / "b.render.json", source="plate.mp4", **SLOW)
    with RunningDaemon(settings):
        wait_for(lambda: rendering(request), 120, "the render to be diffusing")
        temporaries = [shot / f".plate_r002.mp4.{os.getpid()}.part", shot / ".plate_r002.frames.part"]
        temporaries[0].write_bytes(b"half an mp4")
        temporaries[1].mkdir()
        (temporaries[1] / "plate_r002.1001.png").write_bytes(b"half a frame")
        done = hotshot(settings, "cancel", str(request))
        status = wait_for_state(request, ("cancelled", "done", "failed"), 60)
    assert done.returncode == 0, done.stderr
    assert "job 1 stopping at the next diffusion step" in done.stdout and "job 1 cancelled" in done.stdout
    assert status["state"] == "cancelled" and status["error"] == "cancelled with `hotshot cancel`"
    assert not any(path.exists() for path in temporaries)
    assert not (settings.work_dir / "job-000001").exists()
    assert not (shot / "plate_r002.mp4").exists()
    assert (sha(shot / "plate_r001.mp4"), sha(shot / "plate_r001.render-info.json")) == earlier


def test_a_cancel_raises_between_diffusion_steps():
    """The worker's progress sink raises Interrupted at the first step after a cancel for its own job;
    a cancel for another job, or a stop, does not cut a chunk short."""
    sent = []

    class Sender:
        def send(self, message):
            sent.append(message)

    control = WorkerControl()
    control.begin(7)
    events = _PipeEvents(7, Sender(), control)
    step = Progress(chunk=2, chunks=5, step=3, steps=30, frames_done=10, frames_total=40)
    control.cancel("someone else's", 8)
    control.stop("shutting down", None)
    events.progress(step)
    assert events.stop_requested() == "shutting down" and sent
    control.cancel("cancelled with `hotshot cancel`", 7)
    with pytest.raises(Interrupted) as caught:
        events.progress(step)
    assert caught.value.reason == "cancelled with `hotshot cancel`" and caught.value.chunks_done == 1


def test_the_engine_stops_mid_chunk_when_progress_raises(tmp_path, media, tiny_spec):
    """Interrupted raised from the step callback ends render() inside the first chunk: nothing of it is
    checkpointed and no output or temporary file is written."""
    source = tmp_path / "plate.mp4"
    shutil.copyfile(media / "chaplin.mp4", source)
    steps_seen = []

    class CancelAtStepTwo:
        def progress(self, progress):
            steps_seen.append((progress.chunk, progress.step))
            if progress.step == 2:
                raise Interrupted("cancelled", progress.chunk - 1)

        def chunk_done(self, record):
            raise AssertionError("no chunk may finish")

        def stop_requested(self):
            return None

    stat = source.stat()
    job = RenderJob(job_id=1, render_id="plate_r001", source=source, source_size=stat.st_size,
                    source_mtime_ns=stat.st_mtime_ns, frame_range=(0, 40), output_size=64, model=tiny_spec,
                    prompt="", negative_prompt="", steps=30, cfg=5.0, seed=1, shift=3.0, context_size=17,
                    context_overlap=5, output=tmp_path / "plate_r001.mp4",
                    manifest=tmp_path / "plate_r001.render-info.json", work_dir=tmp_path / "work")
    with pytest.raises(Interrupted):
        render(job, CancelAtStepTwo(), ModelCache())
    assert steps_seen[-1] == (1, 2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plate.mp4", "work"]
    assert list((tmp_path / "work").iterdir()) == []


def test_deleting_the_request_cancels_its_running_job(tmp_path, media, models_dir, tiny_spec):
    """Deleting a request file while its job renders cancels the job; its status file says so."""
    settings = settings_for(tmp_path, models_dir)
    request = write_request(chaplin_shot(settings, media) / "r.render.json", **SLOW)
    with RunningDaemon(settings):
        wait_for(lambda: rendering(request), 120, "the render to be diffusing")
        request.unlink()
        status = wait_for_state(request, ("cancelled", "done", "failed"), 60)
    assert status["state"] == "cancelled" and status["error"] == "the request file was deleted"
    assert not any(settings.work_dir.glob("job-*"))


def test_cancel_true_in_an_edited_request_cancels_it_and_renders_nothing(tmp_path, models_dir):
    """Saving a queued request with "cancel": true cancels its job and makes no new render."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh020"
    shot.mkdir()
    make_clip(shot / "plate.mov", frames=12, size="96x64")
    request = write_request(shot / "r.render.json", **QUICK)
    with ticked_daemon(settings) as daemon:
        tick_until(daemon, lambda: state_of(request) == "queued")
        write_request(request, cancel=True, **QUICK)
        tick_until(daemon, lambda: status_of(request)["job"] == 2)
        jobs = daemon.store.jobs()
    status = status_of(request)
    assert status["state"] == "cancelled" and status["error"] == 'cancelled by "cancel": true in the request'
    assert [(job.id, job.state) for job in jobs] == [(1, "cancelled"), (2, "cancelled")]
    assert jobs[0].error == 'cancelled by "cancel": true in the request'


def test_retry_resumes_a_failed_job_from_its_checkpoints_with_no_daemon_running(tmp_path, media, models_dir,
                                                                                  tiny_spec):
    """A job that failed after two chunks keeps its checkpoints; `hotshot retry` (no daemon running: on the
    database) queues it again and the next run resumes after those chunks."""
    settings = settings_for(tmp_path, models_dir, max_attempts=1)
    request = write_request(chaplin_shot(settings, media) / "r.render.json",
                            **{**SLOW, "steps": 2, "frame_range": [0, 99]})
    with RunningDaemon(settings) as daemon:
        wait_for(lambda: chunks_done(settings.database) >= 2, 120, "two finished chunks")
        kill_worker(daemon)
        failed = wait_for_state(request, ("failed", "done"), 60)
    assert failed["state"] == "failed" and "gave up after 1 attempts" in failed["error"]
    assert (settings.work_dir / "job-000001").is_dir()

    assert command(settings, "retry", "1").startswith("job 1 is queued again; it resumes after")
    assert status_of(request)["state"] == "queued" and status_of(request)["attempts"] == 0
    drain(settings)
    done = status_of(request)
    assert done["state"] == "done", done
    assert done["outputs"]["chunks_resumed"] >= 2


def test_retry_refuses_what_it_cannot_do_and_restarts_a_cancelled_job(tmp_path, models_dir):
    """Retry refuses active and done jobs with a reason; a cancelled job is queued again from its first chunk."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh030"
    shot.mkdir()
    make_clip(shot / "plate.mov", frames=12, size="96x64")
    request = write_request(shot / "r.render.json", **QUICK)
    with ticked_daemon(settings) as daemon:
        tick_until(daemon, lambda: state_of(request) == "queued")
    refused = hotshot(settings, "retry", "1")
    assert refused.returncode == 2 and "hotshot: job 1 is already queued" in refused.stderr
    with pytest.raises(CommandRefused, match="there is no job 9"):
        command(settings, "retry", "9")
    cancelled = hotshot(settings, "cancel", "1")
    assert (cancelled.returncode, cancelled.stdout) == (0, "cancelled job 1\n")
    assert status_of(request)["state"] == "cancelled"
    with pytest.raises(CommandRefused, match="job 1 is cancelled, not waiting, queued or running"):
        command(settings, "cancel", "1")
    assert command(settings, "retry", str(request)) == "job 1 is queued again; it starts at the first chunk"
    assert status_of(request)["state"] == "queued"


def test_pause_and_resume_claiming(tmp_path, models_dir, tiny_spec, capsys):
    """`hotshot pause` with no daemon running is kept: a daemon started later claims nothing and says it is
    paused; `hotshot resume`, through the running daemon, lets the queued job render."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh040"
    shot.mkdir()
    make_clip(shot / "plate.mov", frames=12, size="96x64")
    assert command(settings, "pause").startswith("paused: no new job starts")
    request = write_request(shot / "r.render.json", **QUICK)
    with RunningDaemon(settings) as daemon:
        assert daemon.paused
        wait_for_state(request, ("queued",), 30)
        time.sleep(1.0)  # a worker is free all this time; a paused daemon still claims nothing
        assert status_of(request)["state"] == "queued"
        capsys.readouterr()
        cli(settings, "status")
        assert "claiming PAUSED" in capsys.readouterr().out
        assert command(settings, "resume") == "resumed: queued jobs start as workers become free"
        done = wait_for_state(request, ("done", "failed"), 120)
    assert done["state"] == "done"
    assert not daemon.paused


def test_status_lists_the_queue_in_claim_order(tmp_path, models_dir, capsys):
    """The queue is shown in the order jobs start: higher priority first, range renders before full clips,
    then age; jobs waiting for a window come last."""
    windows = {"later": {"start": "00:00", "end": "00:01", "timezone": "UTC"}}
    settings = settings_for(tmp_path, models_dir, windows=windows)
    requests = {"old-full": {}, "range": {"frame_range": [0, 3]}, "urgent-full": {"priority": 5},
                "windowed": {"when": "later", "priority": 9}}
    with ticked_daemon(settings, FakeClock(datetime(2027, 1, 15, 9, 0, tzinfo=UTC))) as daemon:
        for count, (name, fields) in enumerate(requests.items(), start=1):
            shot = settings.roots[0] / name
            shot.mkdir()
            make_clip(shot / "plate.mov", frames=8, size="96x64")
            write_request(shot / "r.render.json", **QUICK, **fields)
            tick_until(daemon, lambda count=count: len(daemon.store.jobs(("queued", "waiting"))) == count)
    capsys.readouterr()
    cli(settings, "status", "--json")
    queue = json.loads(capsys.readouterr().out)["queue"]
    order = [(job["request"].split("/")[-2], job["state"]) for job in queue]
    assert order == [("urgent-full", "queued"), ("range", "queued"), ("old-full", "queued"), ("windowed", "waiting")]
    assert queue[-1]["window"] == "later" and queue[-1]["starts_at"] == "2027-01-16T00:00:00+00:00"


def test_checkpoints_of_failed_jobs_are_kept_for_a_retry_then_removed(tmp_path, models_dir):
    """A failed job's work folder survives until keep_failed_checkpoints_hours have passed; a cancelled or
    unknown job's folder goes at the next rescan."""
    for hours, kept in ((72.0, True), (0.0, False)):
        (tmp_path / str(hours)).mkdir()
        settings = settings_for(tmp_path / str(hours), models_dir, keep_failed_checkpoints_hours=hours)
        store = Store.open(settings.database)
        for name, state in (("failed", "failed"), ("cancelled", "cancelled")):
            store.enqueue(
                {"shot_id": None, "path": f"/r/{name}.render.json", "content_hash": name, "size": 1, "mtime_ns": 1,
                 "raw": "{}"},
                {"request_path": f"/r/{name}.render.json", "state": state, "finished_at": utc_now()})
        store.close()
        for job_id in (1, 2, 3):
            (settings.work_dir / f"job-{job_id:06d}").mkdir(parents=True)
        with ticked_daemon(settings):
            pass
        assert sorted(path.name for path in settings.work_dir.iterdir()) == (["job-000001"] if kept else [])
