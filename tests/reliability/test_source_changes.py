"""A source replaced or deleted while it is being rendered: the job fails clearly and never mixes two files;
`hotshot retry` then renders the new file from the start.

The render is paused at a chunk (the fault seam's `pause`) while the test changes the source.
"""

from __future__ import annotations

import os
import shutil

import pytest

from daemon.control import run_command
from engine.faults import ENV as FAULTS_ENV
from tests.harness import RunningDaemon, drain, settings_for, status_of, wait_for, wait_for_state, write_request
from tests.reliability.support import QUICK, Faults, copy_plate, report, sha, state_of, temporaries, write_json

PAUSED_AT = ("chunk", 8)  # in the second chunk


def start_paused(tmp_path, models_dir, media, monkeypatch):
    faults = Faults(tmp_path / "faults")
    monkeypatch.setenv(FAULTS_ENV, str(faults.path))
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    faults.arm(*PAUSED_AT, "pause", "3")
    return faults, settings, shot


def reference_of(tmp_path, models_dir, media, clip: str) -> str:
    (tmp_path / f"reference-{clip}").mkdir()
    settings = settings_for(tmp_path / f"reference-{clip}", models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot, clip)
    write_request(shot / "r.render.json", **QUICK)
    drain(settings)
    return sha(shot / "plate_r001.mp4")


@pytest.mark.slow
def test_a_source_deleted_mid_render_fails_the_job_clearly(tmp_path, media, models_dir, monkeypatch):
    """The source is deleted while chunk 2 renders: the job fails saying so, nothing is published."""
    faults, settings, shot = start_paused(tmp_path, models_dir, media, monkeypatch)
    with RunningDaemon(settings):
        request = write_json(shot / "r.render.json", QUICK)
        wait_for(faults.fired, 60, "the render to pause")
        (shot / "plate.mp4").unlink()
        status = wait_for_state(request, ("done", "failed"), 60)
    assert status["state"] == "failed"
    assert status["error"].endswith("plate.mp4 is not a readable video: it was deleted before the render finished")
    assert not list(shot.glob("plate_r*")) and not temporaries(shot)


@pytest.mark.slow
def test_a_source_replaced_mid_render_never_mixes_and_retry_renders_the_new_file(tmp_path, media, models_dir,
                                                                                  monkeypatch):
    """Another clip is renamed over the source while chunk 2 renders: the job fails (its first chunks came from
    the old file); `hotshot retry` renders the new file from its first chunk, byte-identical to a render of
    the new file alone."""
    new_reference = reference_of(tmp_path, models_dir, media, "bars-timecode.mp4")
    faults, settings, shot = start_paused(tmp_path, models_dir, media, monkeypatch)
    with RunningDaemon(settings):
        request = write_json(shot / "r.render.json", QUICK)
        wait_for(faults.fired, 60, "the render to pause")
        shutil.copyfile(media / "bars-timecode.mp4", shot / ".incoming")
        os.replace(shot / ".incoming", shot / "plate.mp4")
        failed = wait_for_state(request, ("done", "failed"), 60)
        assert failed["state"] == "failed", failed
        assert "plate.mp4 is not a readable video: it was replaced or modified after the render was queued; " \
               "`hotshot retry` renders the new file from the start" in failed["error"]
        assert not list(shot.glob("plate_r*.mp4"))
        retried = run_command(settings, "retry", str(request)).message
        wait_for(lambda: state_of(request) != "failed", 30, "the retry")
        status = wait_for_state(request, ("done", "failed"), 60)
    assert "checked again" in retried, retried
    assert status["state"] == "done", status
    assert status["outputs"]["chunks_resumed"] == 0
    assert sha(shot / status["outputs"]["video"]) == new_reference
    report("source replaced or deleted mid-render", 2, 0, 0, "pytest tests/reliability/test_source_changes.py")


def test_a_source_rewritten_in_place_with_its_size_and_time_kept_is_noticed(tmp_path, media, models_dir,
                                                                              monkeypatch):
    """Bytes of the source are rewritten in place while it renders, and its size and modification time are
    put back (as a sync tool keeping times does): the job still notices and fails rather than mix them."""
    faults, settings, shot = start_paused(tmp_path, models_dir, media, monkeypatch)
    plate = shot / "plate.mp4"
    with RunningDaemon(settings):
        request = write_json(shot / "r.render.json", QUICK)
        wait_for(faults.fired, 60, "the render to pause")
        stat = plate.stat()
        with open(plate, "r+b") as handle:
            handle.seek(stat.st_size // 2)
            handle.write(bytes(4096))
        os.utime(plate, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        status = wait_for_state(request, ("done", "failed"), 60)
    assert status["state"] == "failed", status
    assert "it was replaced or modified after the render was queued" in status["error"]
    assert not list(shot.glob("plate_r*.mp4"))
    assert status_of(request)["state"] == "failed"
