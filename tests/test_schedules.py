"""Render windows, start times and the full-clip policy, driven by an injected clock (real renders, no sleeps)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest

from daemon.service import Daemon
from tests.harness import (
    FakeClock,
    RunningDaemon,
    chunks_done,
    settings_for,
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

OVERNIGHT = {"overnight": {"start": "20:00", "end": "06:00", "days": "mon-fri", "timezone": "Europe/London"}}
QUICK = {"output_size": 64, "steps": 1, "seed": 3}
FRIDAY_NOON = datetime(2026, 1, 16, 12, 0, tzinfo=UTC)  # winter: London time is UTC


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def shot_with_clip(settings, name: str, media=None, frames: int = 12):
    shot = settings.roots[0] / name
    shot.mkdir(parents=True)
    if media is not None:
        shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    else:
        make_clip(shot / "plate.mp4", frames=frames, size="96x64")
    return shot


def test_a_request_for_a_window_waits_with_its_start_time_then_renders_when_it_opens(
        tmp_path, models_dir, tiny_spec):
    """when = "overnight" on a Friday noon: the status says waiting, with the window and its opening at 20:00;
    once the clock reaches 20:00 the job renders."""
    clock = FakeClock(FRIDAY_NOON)
    settings = settings_for(tmp_path, models_dir, windows=OVERNIGHT)
    shot = shot_with_clip(settings, "sh010")
    request = write_request(shot / "r.render.json", when="overnight", frame_range=[0, 4], **QUICK)
    with RunningDaemon(settings, clock) as daemon:
        waiting = wait_for_state(request, ("waiting",), 30)
        assert waiting["window"] == "overnight"
        assert waiting["starts_at"] == "2026-01-16T20:00:00+00:00"
        assert waiting["message"] == "waiting for render window 'overnight' (opens Fri 2026-01-16 20:00 GMT)"
        assert waiting["estimate"]["frames"] == 5
        opens = daemon.scheduler.get_job("window overnight opens").trigger
        assert str(opens.timezone) == "Europe/London" and "hour='20'" in str(opens)
        clock.set(utc(2026, 1, 16, 20, 0, 5))
        done = wait_for_state(request, ("done", "failed"), 120)
    assert done["state"] == "done", done
    assert (shot / "plate_r001.mp4").exists()


def test_a_daemon_started_mid_window_runs_what_was_waiting(tmp_path, models_dir, tiny_spec):
    """No trigger fires while the daemon is down: started at 23:30 inside the window, it renders the job
    that waited since noon (window state comes from the clock, not from a missed trigger)."""
    settings = settings_for(tmp_path, models_dir, windows=OVERNIGHT)
    shot = shot_with_clip(settings, "sh020")
    request = write_request(shot / "r.render.json", when="overnight", frame_range=[0, 4], **QUICK)
    assert Daemon(settings, FakeClock(FRIDAY_NOON)).run(drain=True) == 0
    assert status_of(request)["state"] == "waiting"

    assert Daemon(settings, FakeClock(utc(2026, 1, 16, 23, 30))).run(drain=True) == 0
    assert status_of(request)["state"] == "done"


def test_a_window_that_was_missed_waits_for_the_next_opening(tmp_path, models_dir):
    """A job for Friday night's window, with the daemon first back on Saturday, waits for Monday 20:00."""
    settings = settings_for(tmp_path, models_dir, windows=OVERNIGHT)
    shot = shot_with_clip(settings, "sh030")
    request = write_request(shot / "r.render.json", when="overnight", frame_range=[0, 4], **QUICK)
    clock = FakeClock(FRIDAY_NOON)
    with ticked_daemon(settings, clock) as daemon:
        tick_until(daemon, lambda: state_of(request) == "waiting")
        clock.set(utc(2026, 1, 17, 9, 0))
        monday = "2026-01-19T20:00:00+00:00"
        tick_until(daemon, lambda: status_of(request).get("starts_at") == monday, what="the next opening")
    assert "opens Mon 2026-01-19 20:00 GMT" in status_of(request)["message"]


def test_a_closing_window_pauses_the_render_which_resumes_at_the_next_opening_across_dst(
        tmp_path, media, models_dir, tiny_spec):
    """A window with at_close = "pause", on the night London springs forward: the render checkpoints and
    waits when the window closes at 06:00 BST (05:00 UTC), and resumes from its last chunk at 20:00 BST
    (19:00 UTC) the next evening."""
    windows = {"nightly": {"start": "20:00", "end": "06:00", "timezone": "Europe/London", "at_close": "pause"}}
    clock = FakeClock(utc(2026, 3, 29, 4, 55))  # 05:55 BST, the window opened 20:00 GMT on the 28th
    settings = settings_for(tmp_path, models_dir, windows=windows)
    shot = shot_with_clip(settings, "sh040", media)
    request = write_request(shot / "r.render.json", when="nightly", frame_range=[0, 99], output_size=64, steps=2,
                            seed=11, context={"size": 17, "overlap": 5})
    with RunningDaemon(settings, clock):
        wait_for(lambda: chunks_done(settings.database) >= 1, 120, "a finished chunk")
        clock.set(utc(2026, 3, 29, 5, 0, 30))
        paused = wait_for_state(request, ("waiting", "done", "failed"), 120)
        assert paused["state"] == "waiting", paused
        assert paused["starts_at"] == "2026-03-29T19:00:00+00:00"
        assert paused["message"].startswith("paused when render window 'nightly' closed; resumes from its last chunk")
        assert "Sun 2026-03-29 20:00 BST" in paused["message"]
        assert not (shot / "plate_r001.mp4").exists()
        clock.set(utc(2026, 3, 29, 19, 0, 5))
        done = wait_for_state(request, ("done", "failed"), 180)
    assert done["state"] == "done", done
    assert done["outputs"]["chunks_resumed"] >= 1 and done["attempts"] == 1
    assert not any(settings.work_dir.glob("job-*"))


def test_long_full_clips_go_to_the_window_by_default(tmp_path, models_dir, tiny_spec):
    """With defer_full_clips, a full clip over the limit waits for the window; a range, a short clip and a
    request saying when = "now" render at once."""
    settings = settings_for(tmp_path, models_dir, windows=OVERNIGHT,
                            defer_full_clips={"window": "overnight", "longer_than_frames": 10})
    long_full = write_request(shot_with_clip(settings, "long") / "r.render.json", **QUICK)
    forced = write_request(shot_with_clip(settings, "forced") / "r.render.json", when="now", **QUICK)
    ranged = write_request(shot_with_clip(settings, "range") / "r.render.json", frame_range=[0, 4], **QUICK)
    short = write_request(shot_with_clip(settings, "short", frames=9) / "r.render.json", **QUICK)
    assert Daemon(settings, FakeClock(FRIDAY_NOON)).run(drain=True) == 0
    waiting = status_of(long_full)
    assert waiting["state"] == "waiting" and waiting["window"] == "overnight", waiting
    assert waiting["starts_at"] == "2026-01-16T20:00:00+00:00"
    assert [status_of(request)["state"] for request in (forced, ranged, short)] == ["done"] * 3


def test_when_a_date_time_waits_until_then_and_unknown_whens_fail(tmp_path, models_dir, tiny_spec):
    """when = an ISO date-time waits until that time and then renders; a `when` that names no window
    fails at once, listing the windows there are."""
    settings = settings_for(tmp_path, models_dir, windows=OVERNIGHT)
    timed = write_request(shot_with_clip(settings, "timed") / "r.render.json", when="2026-01-16T15:30+01:00",
                          frame_range=[0, 4], **QUICK)
    wrong = write_request(shot_with_clip(settings, "wrong") / "r.render.json", when="tonight", **QUICK)
    assert Daemon(settings, FakeClock(FRIDAY_NOON)).run(drain=True) == 0
    assert status_of(timed)["state"] == "waiting"
    assert status_of(timed)["starts_at"] == "2026-01-16T14:30:00+00:00"
    failed = status_of(wrong)
    assert failed["state"] == "failed"
    assert "when 'tonight' is not understood" in failed["error"] and '"overnight"' in failed["error"]

    assert Daemon(settings, FakeClock(utc(2026, 1, 16, 14, 31))).run(drain=True) == 0
    assert status_of(timed)["state"] == "done"


def test_a_queued_job_whose_window_closes_before_it_starts_waits_again(tmp_path, models_dir):
    """A window job still queued (no worker was free) when its window closes goes back to waiting."""
    settings = settings_for(tmp_path, models_dir, windows=OVERNIGHT)
    request = write_request(shot_with_clip(settings, "sh050") / "r.render.json", when="overnight",
                            frame_range=[0, 4], **QUICK)
    clock = FakeClock(utc(2026, 1, 16, 22, 0))
    with ticked_daemon(settings, clock) as daemon:
        tick_until(daemon, lambda: state_of(request) == "queued")
        clock.set(utc(2026, 1, 17, 6, 0, 1))
        tick_until(daemon, lambda: status_of(request)["state"] == "waiting")
    assert status_of(request)["starts_at"] == "2026-01-19T20:00:00+00:00"
