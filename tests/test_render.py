"""engine.render() with the tiny Wan VACE pipeline: frames, determinism, resume, progress."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.decode import read_frames
from engine.errors import Interrupted, MediaError
from engine.models import ModelCache
from engine.probe import probe
from engine.render import render
from tests.harness import sha
from tests.helpers import Recorder, make_job

CACHE = ModelCache()


@pytest.fixture
def plate(tmp_path, media) -> Path:
    path = tmp_path / "plate.mp4"
    shutil.copyfile(media / "chaplin.mp4", path)
    return path


def test_render_writes_the_requested_frames_with_audio_and_manifest(tmp_path, tiny_spec, plate):
    """48 frames of a 25 fps clip come out as 48 frames at 25 fps, 64x32, with audio and a manifest."""
    events = Recorder()
    result = render(make_job(tmp_path, tiny_spec, plate), events, CACHE)
    info = probe(result.output)
    assert (info.frame_count, info.fps, info.width, info.height, info.has_audio) == (48, "25/1", 64, 32, True)
    assert abs(info.duration - 48 / 25) < 0.1
    manifest = json.loads(Path(result.manifest).read_text())
    chunks = manifest["chunk_plan"]["chunks"]
    assert [c["source_frames"] for c in chunks] == [[4, 20], [16, 32], [28, 44], [36, 52]]
    assert chunks[0]["output_frames"][0] == 5 and chunks[-1]["output_frames"][1] == 52
    assert len({c["seed"] for c in chunks}) == 4
    assert manifest["frames_rendered"] == 48 and manifest["frames_diffused"] == 68
    assert manifest["lineage"] == {"chain": ["plate.mp4"]}
    assert manifest["model"]["id"] == "tiny-wan-vace" and manifest["model"]["device"] == "cpu"
    assert {"torch", "diffusers", "hotshot", "ffmpeg"} <= set(manifest["versions"])
    assert [record.index for record in events.chunks] == [0, 1, 2, 3]
    steps = [(p.chunk, p.step) for p in events.progress_seen if p.phase == "diffusing"]
    assert (1, 1) in steps and (4, 2) in steps
    assert not list(tmp_path.glob(".*.part"))
    assert os.stat(result.output).st_mode & 0o777 == 0o644


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path, tiny_spec, plate):
    first = render(make_job(tmp_path, tiny_spec, plate, "a"), None, CACHE)
    second = render(make_job(tmp_path, tiny_spec, plate, "b"), None, CACHE)
    other = render(make_job(tmp_path, tiny_spec, plate, "c", seed=8), None, CACHE)
    assert sha(Path(first.output)) == sha(Path(second.output))
    frames_a = np.stack(list(read_frames(first.output, 0, 47, 64, 32))).astype(int)
    frames_c = np.stack(list(read_frames(other.output, 0, 47, 64, 32))).astype(int)
    assert np.abs(frames_a - frames_c).mean() > 1.0


def test_resume_from_checkpoint_gives_identical_output(tmp_path, tiny_spec, plate):
    """Stopped after 2 chunks and resumed, the output is byte-identical to an uninterrupted render."""
    whole = render(make_job(tmp_path, tiny_spec, plate, "whole"), None, CACHE)

    job = make_job(tmp_path, tiny_spec, plate, "resumed")
    stopper = Recorder(stop_after=2)
    with pytest.raises(Interrupted):
        render(job, stopper, CACHE)
    assert not job.output.exists()
    done = {record.index: record.seconds for record in stopper.chunks}
    finisher = Recorder()
    result = render(job.model_copy(update={"done_chunks": done}), finisher, CACHE)
    assert [record.index for record in finisher.chunks] == [2, 3]
    assert result.chunks_resumed == 2
    assert sha(job.output) == sha(Path(whole.output))
    manifest = json.loads(job.manifest.read_text())
    assert [c["resumed"] for c in manifest["chunk_plan"]["chunks"]] == [True, True, False, False]


def test_checkpoints_without_a_record_are_rendered_again(tmp_path, tiny_spec, plate):
    """Files in the work folder that the caller never recorded are not trusted."""
    job = make_job(tmp_path, tiny_spec, plate, "fresh")
    with pytest.raises(Interrupted):
        render(job, Recorder(stop_after=1), CACHE)
    again = Recorder()
    render(job, again, CACHE)
    assert [record.index for record in again.chunks] == [0, 1, 2, 3]


def test_a_source_replaced_after_queueing_is_refused(tmp_path, tiny_spec, plate):
    job = make_job(tmp_path, tiny_spec, plate)
    plate.write_bytes(plate.read_bytes() + b"\0")
    with pytest.raises(MediaError, match="replaced or modified"):
        render(job, None, CACHE)
