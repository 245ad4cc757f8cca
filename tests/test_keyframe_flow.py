"""Keyframe flow: painted keyframes carried through a clip by optical flow, through the whole engine.

A pan across a texture makes the motion known: the paint of frame 0 must travel with it. Outputs are
read back from PNG sequences, so "exactly" means to the pixel.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.catalog import load_catalog
from engine.decode import read_frames
from engine.errors import Interrupted, SettingsError
from engine.keyframes import KeyframeSpec
from engine.masks import MaskSource, MaskSpec
from engine.models import ModelCache
from engine.render import render
from engine.stills import StillSpec, fit
from tests.conftest import CATALOG
from tests.harness import drain, settings_for, sha, status_of, write_request
from tests.helpers import Recorder, make_job, make_pan_clip

CACHE = ModelCache()
WIDTH, HEIGHT = 128, 72


@pytest.fixture(scope="module")
def flow_spec(models_dir):
    return load_catalog([CATALOG], models_dir)["keyframe-flow"]


@pytest.fixture(scope="module")
def pan(tmp_path_factory) -> Path:
    return make_pan_clip(tmp_path_factory.mktemp("pan") / "plate.mp4", frames=40, size=(WIDTH, HEIGHT), speed=2)


def paint(frame: np.ndarray) -> np.ndarray:
    """A look no source frame has: channels swapped and inverted."""
    return np.ascontiguousarray(255 - frame[..., ::-1])


def write_png(path: Path, frame: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return path


def source(clip: Path, first: int, last: int) -> np.ndarray:
    return np.stack(list(read_frames(clip, first, last, WIDTH, HEIGHT)))


def png_frames(folder: Path) -> np.ndarray:
    return np.stack([cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in sorted(folder.glob("*.png"))])


def flow_job(tmp_path: Path, spec, clip: Path, name: str, **changes):
    values = dict(frame_range=(0, 39), output_size=WIDTH, context_size=16, context_overlap=1, start_frame_buffer=0,
                  image_sequence="png", steps=1, cfg=1.0, prompt="", negative_prompt="")
    values.update(changes)
    return make_job(tmp_path, spec, clip, name, **values)


def painted_stills(tmp_path: Path, clip: Path) -> tuple[StillSpec, list[KeyframeSpec], np.ndarray]:
    frames = source(clip, 0, 39)
    style = write_png(tmp_path / "paint-0.png", paint(frames[0]))
    later = write_png(tmp_path / "paint-27.png", paint(frames[27]))
    return StillSpec(path=style), [KeyframeSpec(frame=27, path=later)], frames


def test_keyframes_are_exact_on_their_frames_and_the_paint_follows_the_motion(tmp_path, flow_spec, pan):
    """The style frame and a keyframe come out exactly on their own frames; the frames between (over three
    context windows) look like the painted source, not like the source."""
    style, keyframes, frames = painted_stills(tmp_path, pan)
    result = render(flow_job(tmp_path, flow_spec, pan, "flow", style_frame=style, keyframes=keyframes), None, CACHE)
    out = png_frames(tmp_path / "flow")
    assert out.shape == (40, HEIGHT, WIDTH, 3) and result.chunks_rendered == 3
    assert np.array_equal(out[0], paint(frames[0])) and np.array_equal(out[27], paint(frames[27]))
    inner = (slice(None), slice(8, -8), slice(16, -16))  # away from the edge the pan uncovers
    painted = np.stack([paint(frame) for frame in frames]).astype(np.int16)
    error = np.abs(out.astype(np.int16) - painted)[inner].mean(axis=(1, 2, 3))
    look = np.abs(painted - frames.astype(np.int16))[inner].mean()  # how far the paint is from the source
    assert error.max() < 8 < look * 0.2, (error, look)
    entry = result.manifest_data["keyframes"]
    assert entry[0]["frame"] == 27 and entry[0]["from"] == "paint-27.png" and len(entry[0]["sha256"]) == 64


def test_second_keyframe_replaces_drift_with_its_own_paint(tmp_path, flow_spec, pan):
    """Frames near a keyframe take its paint: a keyframe painted differently pulls its neighbours to it."""
    style, _, frames = painted_stills(tmp_path, pan)
    grey = write_png(tmp_path / "grey.png", np.full_like(frames[30], 90))
    out = render(flow_job(tmp_path, flow_spec, pan, "grey", style_frame=style,
                          keyframes=[KeyframeSpec(frame=30, path=grey)], context_size=40), None, CACHE)
    frames_out = png_frames(tmp_path / "grey").astype(np.int16)
    assert np.array_equal(frames_out[30], np.full_like(frames[30], 90))
    distance_to_grey = [np.abs(frames_out[index] - 90).mean() for index in (5, 20, 29)]
    assert distance_to_grey[0] > distance_to_grey[1] > distance_to_grey[2] and distance_to_grey[2] < 10
    assert out.manifest_data["model"]["id"] == "keyframe-flow"


def test_same_output_every_time_and_resume_is_byte_identical(tmp_path, flow_spec, pan):
    """Two renders give the same bytes; one stopped after its first chunk and resumed gives them too."""
    style, keyframes, _ = painted_stills(tmp_path, pan)
    whole = render(flow_job(tmp_path, flow_spec, pan, "whole", style_frame=style, keyframes=keyframes), None, CACHE)
    again = render(flow_job(tmp_path, flow_spec, pan, "again", style_frame=style, keyframes=keyframes), None, CACHE)
    assert sha(Path(whole.output)) == sha(Path(again.output))
    job = flow_job(tmp_path, flow_spec, pan, "resumed", style_frame=style, keyframes=keyframes)
    stopper = Recorder(stop_after=1)
    with pytest.raises(Interrupted):
        render(job, stopper, CACHE)
    done = {record.index: record.seconds for record in stopper.chunks}
    resumed = render(job.model_copy(update={"done_chunks": done}), Recorder(), CACHE)
    assert resumed.chunks_resumed == 1
    assert sha(job.output) == sha(Path(whole.output))
    for name in sorted(path.name for path in (tmp_path / "whole").iterdir()):
        assert sha(tmp_path / "resumed" / name.replace("whole", "resumed")) == sha(tmp_path / "whole" / name)


def test_paint_only_inside_the_mask(tmp_path, flow_spec, pan):
    """With a mask, every pixel the mask leaves at zero is the source's exactly; inside, the paint shows."""
    style, _, frames = painted_stills(tmp_path, pan)
    matte = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    matte[:, WIDTH // 2:] = 255
    mask = MaskSpec(path=write_png(tmp_path / "matte.png", matte))
    render(flow_job(tmp_path, flow_spec, pan, "masked", style_frame=style, mask=mask), None, CACHE)
    out = png_frames(tmp_path / "masked").astype(np.int16)
    masks = MaskSource(mask, WIDTH, HEIGHT, WIDTH / HEIGHT)
    weight = masks.at(0)
    masks.close()
    outside, inside = weight == 0, weight > 0.99
    assert outside.mean() > 0.4 and inside.mean() > 0.4
    assert np.array_equal(out[:, outside], frames[:, outside].astype(np.int16))
    painted = np.stack([paint(frame) for frame in frames]).astype(np.int16)
    assert np.abs(out[:, inside] - painted[:, inside]).mean() < 10


def test_pinned_frames_stay_exact_with_colour_consistency_and_interpolation(tmp_path, flow_spec, pan):
    """Colour consistency moves the carried frames toward the style frame's colours but leaves the painted frames
    as they were painted; with interpolation a keyframe on a rendered frame is still exact."""
    style, _, frames = painted_stills(tmp_path, pan)
    grey = write_png(tmp_path / "grey.png", np.full_like(frames[26], 90))
    keyframes = [KeyframeSpec(frame=26, path=grey)]
    plain = render(flow_job(tmp_path, flow_spec, pan, "plain", style_frame=style, keyframes=keyframes,
                            interpolation=True), None, CACHE)
    matched = render(flow_job(tmp_path, flow_spec, pan, "matched", style_frame=style, keyframes=keyframes,
                              interpolation=True, color_consistency=1.0), None, CACHE)
    before, after = png_frames(tmp_path / "plain"), png_frames(tmp_path / "matched")
    for out in (before, after):
        assert np.array_equal(out[0], paint(frames[0])) and np.array_equal(out[26], np.full_like(frames[26], 90))
    assert np.abs(after[20].astype(np.int16) - before[20]).mean() > 2
    assert plain.manifest_data["timeline"]["frames_interpolated"] == 19
    assert matched.manifest_data["color_consistency"]["anchor_from"] == "style frame"


def test_a_window_without_paint_is_refused(tmp_path, flow_spec, pan):
    """Keyframe flow with nothing painted in its first window, or no overlap to hand the paint on, is refused
    before anything renders, naming the model and what to change."""
    _, keyframes, _ = painted_stills(tmp_path, pan)
    with pytest.raises(SettingsError, match="'keyframe-flow' carries painted frames and the first context window"):
        render(flow_job(tmp_path, flow_spec, pan, "late", keyframes=keyframes), None, CACHE)
    style, _, _ = painted_stills(tmp_path, pan)
    with pytest.raises(SettingsError, match="context.overlap of at least 1"):
        render(flow_job(tmp_path, flow_spec, pan, "gap", style_frame=style, context_overlap=0), None, CACHE)
    assert not (tmp_path / "late.mp4").exists() and not (tmp_path / "gap.mp4").exists()


def test_wan_vace_gets_keyframes_as_known_frames(tmp_path, tiny_spec, pan):
    """For Wan VACE a keyframe is a known frame of its chunk: given in the video with the mask black there."""
    _, keyframes, frames = painted_stills(tmp_path, pan)
    cache = ModelCache()
    backend = cache.get(tiny_spec, "cpu")
    seen = []

    class Recording:
        def render_chunk(self, request):
            seen.append(request)
            return backend.render_chunk(request)

    cache.add(tiny_spec, "cpu", Recording())
    job = make_job(tmp_path, tiny_spec, pan, "vace", frame_range=(24, 32), context_size=9, context_overlap=0,
                   start_frame_buffer=0, output_size=64, steps=1, keyframes=keyframes)
    result = render(job, None, cache)
    request = seen[0]
    assert request.keep == [index == 3 for index in range(9)]
    assert np.array_equal(request.frames[3], fit(paint(frames[27]), 64, 32))
    assert not np.array_equal(request.sources[3], request.frames[3])
    assert result.manifest_data["keyframes"][0]["frame"] == 27


@pytest.fixture(scope="module")
def daemon_run(tmp_path_factory, media, models_dir, pan):
    tmp = tmp_path_factory.mktemp("keyframe-daemon")
    settings = settings_for(tmp, models_dir)
    root = settings.roots[0]
    frames = source(pan, 0, 39)

    def shot(name: str) -> Path:
        folder = root / name
        folder.mkdir(parents=True)
        shutil.copyfile(pan, folder / "plate.mp4")
        write_png(folder / "look.png", paint(frames[0]))
        write_png(folder / "late.png", paint(frames[30]))
        return folder

    small = {"output_size": WIDTH, "frame_range": [0, 39]}
    keyframes = [{"frame": 30, "image": "late.png"}]
    write_request(shot("painted") / "r.render.json", model="keyframe-flow", style_frame="look.png",
                  keyframes=keyframes, image_sequence="png", **small)
    write_request(shot("prompted") / "r.render.json", model="keyframe-flow", style_frame="look.png",
                  prompt="oil painting", **small)
    write_request(shot("stepped") / "r.render.json", model="keyframe-flow", style_frame="look.png", steps=4, **small)
    write_request(shot("unpainted") / "r.render.json", model="keyframe-flow", **small)
    write_request(shot("v2v") / "r.render.json", model="tiny-wan-v2v", keyframes=keyframes, **small)
    write_request(shot("outside") / "r.render.json", model="keyframe-flow", style_frame="look.png",
                  keyframes=keyframes, output_size=WIDTH, frame_range=[0, 20])
    write_request(shot("interpolated") / "r.render.json", model="keyframe-flow", style_frame="look.png",
                  keyframes=[{"frame": 29, "image": "late.png"}], interpolation=True, **small)
    write_request(shot("not-image") / "r.render.json", model="keyframe-flow",
                  keyframes=[{"frame": 0, "image": "plate.mp4"}], **small)
    drain(settings)
    return root, frames


def test_keyframe_flow_through_the_daemon(daemon_run):
    """A request naming keyframe-flow with a style frame and keyframes renders; the Render Info records the
    keyframes with their hashes and the settings."""
    root, frames = daemon_run
    folder = root / "painted"
    status = status_of(folder / "r.render.json")
    assert status["state"] == "done", status
    out = png_frames(folder / "plate_r001")
    assert np.array_equal(out[0], paint(frames[0])) and np.array_equal(out[30], paint(frames[30]))
    manifest = json.loads((folder / "plate_r001.render-info.json").read_text())
    assert manifest["settings"]["keyframes"] == {"value": [{"frame": 30, "path": "late.png"}], "from": "request"}
    assert manifest["keyframes"][0]["sha256"] == hashlib.sha256((folder / "late.png").read_bytes()).hexdigest()


@pytest.mark.parametrize("case,message", [
    ("prompted", "model 'keyframe-flow' does not use prompt"),
    ("stepped", "model 'keyframe-flow' does not use steps"),
    ("unpainted", "model 'keyframe-flow' carries painted frames through the clip and the request gives none"),
    ("v2v", "model 'tiny-wan-v2v' does not support keyframes"),
    ("outside", "keyframes: frame 30 is outside the frame range [0, 20]"),
    ("interpolated", "keyframes: frame 29 is one that interpolation reconstructs"),
    ("not-image", "keyframes image for frame 0 'plate.mp4' is not an image"),
])
def test_settings_keyframe_flow_cannot_honour_are_refused(daemon_run, case, message):
    """Each refusal names the model or the keyframe and says what to do instead."""
    root, _ = daemon_run
    status = status_of(root / case / "r.render.json")
    assert status["state"] == "failed" and message in status["error"], status
