"""The daemon end to end: files dropped into a shot become renders beside the source."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from daemon.store import Store
from engine.decode import read_frames
from engine.probe import probe
from tests.harness import RunningDaemon, drain, settings_for, status_of, wait_for, wait_for_state, write_request
from tests.helpers import make_clip

pytestmark = pytest.mark.usefixtures("worker_kind")  # each test over thread and process workers


def test_dropped_clip_and_request_become_a_render(tmp_path, media, models_dir, tiny_spec):
    """A running daemon sees a clip and a request dropped into a shot (real watchdog events) and
    writes plate_r001.mp4 with the requested frames, rate, size and audio, its Render Info, and status files."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "show" / "sh010"
    seen_states = []
    with RunningDaemon(settings):
        shot.mkdir(parents=True)
        shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
        request = write_request(shot / "restyle.render.json", model="tiny-wan-vace", prompt="oil painting",
                                frame_range=[10, 45], output_size=64, steps=2, seed=3,
                                context={"size": 17, "overlap": 5})

        def record():
            status = status_of(request)
            if status and (not seen_states or seen_states[-1] != status["state"]):
                seen_states.append(status["state"])
            return status and status["state"] in ("done", "failed")

        wait_for(record, 120, "the render to finish")
    status = status_of(request)
    assert status["state"] == "done", status
    assert "queued" in seen_states or "running" in seen_states
    assert status["outputs"]["video"] == "plate_r001.mp4"
    assert status["estimate"]["frames"] == 36 and status["estimate"]["seconds"] > 0

    output = probe(shot / "plate_r001.mp4")
    assert (output.frame_count, output.fps, output.width, output.height) == (36, "25/1", 64, 32)
    assert output.has_audio and abs(output.duration - 36 / 25) < 0.1
    manifest = json.loads((shot / "plate_r001.render-info.json").read_text())
    assert manifest["render_id"] == "plate_r001" and manifest["frame_range"] == [10, 45]
    assert manifest["source"]["path"] == "plate.mp4"
    assert manifest["lineage"]["chain"] == ["plate.mp4", "plate_r001.mp4"]
    assert manifest["request"]["as_written"]["prompt"] == "oil painting"
    assert manifest["settings"]["steps"] == {"value": 2, "from": "request"}
    assert manifest["settings"]["shift"] == {"value": tiny_spec.shift, "from": "model"}
    assert manifest["settings"]["context.size"] == {"value": 17, "from": "request"}
    assert manifest["timing"]["estimate_seconds"] == status["estimate"]["seconds"]
    assert not [p.name for p in shot.iterdir() if p.name.startswith(".")]
    assert not any((settings.work_dir).glob("job-*"))


def test_second_pass_from_a_render_and_status_lineage(tmp_path, media, models_dir, tiny_spec, capsys):
    """A request naming plate_r001.mp4 as its source renders plate_r002.mp4 with the lineage recorded,
    and `hotshot status` stacks both renders under the original."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh020"
    shot.mkdir()
    shutil.copyfile(media / "bbb-short.webm", shot / "plate.webm")
    write_request(shot / "a.render.json", prompt="watercolor", output_size=64, steps=1, seed=1)
    drain(settings)
    assert status_of(shot / "a.render.json")["state"] == "done"

    write_request(shot / "b.render.json", source="plate_r001.mp4", prompt="ink drawing", output_size=64, steps=1)
    drain(settings)
    status = status_of(shot / "b.render.json")
    assert status["state"] == "done", status
    assert status["source"] == "plate_r001.mp4" and status["outputs"]["video"] == "plate_r002.mp4"
    manifest = json.loads((shot / "plate_r002.render-info.json").read_text())
    assert manifest["lineage"] == {"root_source": "plate.webm", "parent_render": "plate_r001.mp4",
                                   "chain": ["plate.webm", "plate_r001.mp4", "plate_r002.mp4"]}
    assert probe(shot / "plate_r002.mp4").frame_count == 24

    store = Store.open(settings.database, read_only=True)
    kinds = {row["name"]: (row["kind"], row["parent_id"]) for row in store.media_in_shot(1)}
    store.close()
    assert kinds["plate.webm"][0] == "original"
    assert kinds["plate_r001.mp4"][0] == kinds["plate_r002.mp4"][0] == "render"

    from daemon.cli import main

    assert main(["status", "--state", str(settings.state_dir)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    original = next(i for i, line in enumerate(lines) if "plate.webm" in line)
    first = next(i for i, line in enumerate(lines) if "plate_r001.mp4" in line and "└─" in line)
    second = next(i for i, line in enumerate(lines) if "plate_r002.mp4" in line and "└─" in line)
    assert original < first < second
    assert len(lines[second]) - len(lines[second].lstrip()) > len(lines[first]) - len(lines[first].lstrip())


def test_a_slowly_copied_clip_is_not_ingested_early(tmp_path, media, models_dir, tiny_spec):
    """A clip written in pieces with pauses shorter than stable_seconds is probed only once complete;
    meanwhile its request waits."""
    settings = settings_for(tmp_path, models_dir, stable_seconds=1.0)
    shot = settings.roots[0] / "sh030"
    shot.mkdir()
    data = (media / "chaplin.mp4").read_bytes()
    request = write_request(shot / "r.render.json", frame_range=[0, 8], output_size=64, steps=1, seed=2)

    def slow_copy():
        with open(shot / "plate.mp4", "wb") as out:
            for start in range(0, len(data), len(data) // 8):
                out.write(data[start:start + len(data) // 8])
                out.flush()
                time.sleep(0.6)

    with RunningDaemon(settings):
        writer = threading.Thread(target=slow_copy)
        writer.start()
        waiting = wait_for_state(request, ("waiting",), 30)
        writer.join()
        assert "plate.mp4" in waiting["message"] or "source" in waiting["message"]
        done = wait_for_state(request, ("done", "failed"), 120)
        store = Store.open(settings.database, read_only=True)
        media_rows = store.media_in_shot(store.shots()[0]["id"])
        store.close()
    assert done["state"] == "done", done
    plate = next(row for row in media_rows if row["name"] == "plate.mp4")
    assert plate["size"] == len(data) and plate["state"] == "ready"


def test_editing_a_request_makes_a_new_job_and_touching_it_does_not(tmp_path, media, models_dir, tiny_spec):
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh040"
    shot.mkdir()
    make_clip(shot / "plate.mov", frames=12, size="96x64")
    request = write_request(shot / "r.render.json", output_size=64, steps=1, seed=5)
    drain(settings)
    request.touch()
    same = request.read_text()
    request.write_text(same)
    drain(settings)
    store = Store.open(settings.database, read_only=True)
    assert len(store.jobs()) == 1
    store.close()
    write_request(request, output_size=64, steps=1, seed=6)
    drain(settings)
    store = Store.open(settings.database, read_only=True)
    jobs = store.jobs()
    store.close()
    assert [job.state for job in jobs] == ["done", "done"]
    assert status_of(request)["outputs"]["video"] == "plate_r002.mp4"
    frames = list(read_frames(shot / "plate_r002.mp4", 0, 11, 64, 48))
    assert len(frames) == 12


def test_stale_temporary_files_of_a_crashed_process_are_removed(tmp_path, models_dir, tiny_spec):
    """A half-written `.name.<pid>.part` left by a dead process is deleted at start-up, never published;
    one whose writer is alive is left alone."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh050"
    shot.mkdir()
    stale = shot / ".plate_r001.mp4.999999999.part"
    stale.write_bytes(b"half")
    live = shot / f".plate_r002.mp4.{os.getpid()}.part"
    live.write_bytes(b"in progress")
    drain(settings)
    assert not stale.exists() and live.exists()
    assert not (shot / "plate_r001.mp4").exists()


def test_polling_observer_for_network_shares(tmp_path, media, models_dir, tiny_spec):
    """With observer = "polling" (no kernel events), a dropped clip and request are still found and rendered."""
    settings = settings_for(tmp_path, models_dir, observer="polling", poll_seconds=0.2, reconcile_seconds=600)
    shot = settings.roots[0] / "share" / "sh060"
    with RunningDaemon(settings):
        time.sleep(0.5)
        shot.mkdir(parents=True)
        shutil.copyfile(media / "bars-timecode.mp4", shot / "plate.mp4")
        request = write_request(shot / "r.render.json", frame_range=[0, 4], output_size=64, steps=1, seed=4)
        status = wait_for_state(request, ("done", "failed"), 120)
    assert status["state"] == "done", status
    assert probe(shot / "plate_r001.mp4").frame_count == 5
