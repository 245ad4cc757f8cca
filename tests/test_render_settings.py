"""Every Render Video setting changes the output: style and reference frames, warm-up buffer,
dynamic reference, crossfade, interpolation, image sequences, colour consistency, shift, low-step LoRA.

The passthrough backend (output = conditioning frames) makes the data flow exact; the tiny Wan VACE
pipeline shows each setting reaches the model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest

from engine.catalog import load_catalog
from engine.colour import colour_stats
from engine.decode import read_frames
from engine.errors import WeightsMissingError
from engine.models import ModelCache
from engine.probe import probe
from engine.render import render
from engine.sequence import linear_to_srgb8, read_exr
from engine.stills import StillSpec, fit
from tests.conftest import CATALOG
from tests.helpers import make_clip, make_job, make_pan_clip

CACHE = ModelCache()


@pytest.fixture(scope="module")
def passthrough(models_dir):
    return load_catalog([CATALOG], models_dir)["passthrough"]


@pytest.fixture
def plate(tmp_path, media) -> Path:
    path = tmp_path / "plate.mp4"
    shutil.copyfile(media / "chaplin.mp4", path)
    return path


def frames_of(path, count, width=64, height=32) -> np.ndarray:
    return np.stack(list(read_frames(path, 0, count - 1, width, height))).astype(np.int16)


def source_frames(path, first, last, width=64, height=32) -> np.ndarray:
    return np.stack(list(read_frames(path, first, last, width, height))).astype(np.int16)


def mean_difference(a, b) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


def style_image(tmp_path) -> Path:
    """A 300x200 picture unlike any frame of the clip: a red-blue gradient."""
    image = np.zeros((200, 300, 3), np.uint8)
    image[:, :, 2] = np.linspace(0, 255, 300, dtype=np.uint8)[None, :]
    image[:, :, 0] = 220
    path = tmp_path / "style.png"
    cv2.imwrite(str(path), image)
    return path


def test_style_frame_is_pinned_as_the_first_output_frame(tmp_path, passthrough, plate):
    """The style image, fitted to the output size, is the first output frame; the rest follow the source."""
    style = style_image(tmp_path)
    job = make_job(tmp_path, passthrough, plate, "styled", style_frame=StillSpec(path=style))
    result = render(job, None, CACHE)
    out = frames_of(result.output, 48)
    fitted = fit(cv2.cvtColor(cv2.imread(str(style)), cv2.COLOR_BGR2RGB), 64, 32)
    assert mean_difference(out[0], fitted) < 4
    assert mean_difference(out[1:], source_frames(plate, 6, 52)) < 4
    manifest = json.loads(job.manifest.read_text())
    assert manifest["style_frame"] == {"from": "style.png", "sha256": hashlib.sha256(style.read_bytes()).hexdigest()}


def test_style_keyframe_takes_a_frame_of_the_source(tmp_path, passthrough, plate):
    job = make_job(tmp_path, passthrough, plate, "keyed", style_frame=StillSpec(keyframe=200))
    out = frames_of(render(job, None, CACHE).output, 48)
    assert mean_difference(out[0], source_frames(plate, 200, 200)[0]) < 4
    assert mean_difference(out[0], source_frames(plate, 5, 5)[0]) > 10


def test_style_and_reference_frames_reach_the_model(tmp_path, tiny_spec, plate):
    """With the tiny Wan VACE, a different style or reference image gives a different render."""
    style = style_image(tmp_path)
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((64, 64, 3), 128, np.uint8))
    short = {"frame_range": (5, 20)}
    plain = render(make_job(tmp_path, tiny_spec, plate, "plain", **short), None, CACHE)
    styled = render(make_job(tmp_path, tiny_spec, plate, "styled", style_frame=StillSpec(path=style), **short),
                    None, CACHE)
    referenced = render(make_job(tmp_path, tiny_spec, plate, "ref", reference_frame=StillSpec(path=grey), **short),
                        None, CACHE)
    base = frames_of(plain.output, 16)
    assert mean_difference(frames_of(styled.output, 16), base) > 1
    assert mean_difference(frames_of(referenced.output, 16), base) > 0.3
    assert referenced.manifest_data["reference_frame"]["sha256"] == hashlib.sha256(grey.read_bytes()).hexdigest()


def test_style_keyframe_reaches_the_model_and_which_keyframe_matters(tmp_path, tiny_spec, plate):
    """With the tiny Wan VACE, `style_frame: {"keyframe": N}` changes the render against no style frame, and
    keyframe 200 gives other frames than keyframe 60."""
    short = {"frame_range": (5, 13)}
    plain = frames_of(render(make_job(tmp_path, tiny_spec, plate, "plain", **short), None, CACHE).output, 9)
    keyed = {number: frames_of(render(make_job(tmp_path, tiny_spec, plate, f"key{number}", **short,
                                               style_frame=StillSpec(keyframe=number)), None, CACHE).output, 9)
             for number in (60, 200)}
    assert mean_difference(keyed[200], plain) > 1
    assert mean_difference(keyed[60], plain) > 1
    assert mean_difference(keyed[200][1:], keyed[60][1:]) > 1


class Recording:
    """Wraps a backend and keeps what each chunk was given."""

    def __init__(self, backend):
        self.backend = backend
        self.requests = []

    def render_chunk(self, request):
        self.requests.append(request)
        return self.backend.render_chunk(request)


def test_dynamic_reference_uses_the_previous_chunks_last_frame(tmp_path, passthrough, plate):
    """On: each chunk after the first gets the previous chunk's last output frame as reference.
    Off: the style frame serves every chunk."""
    style = StillSpec(path=style_image(tmp_path))
    for dynamic in (True, False):
        cache = ModelCache()
        recording = Recording(cache.get(passthrough, "cpu"))
        cache.add(passthrough, "cpu", recording)
        job = make_job(tmp_path, passthrough, plate, f"dyn{dynamic}", style_frame=style, dynamic_reference=dynamic)
        render(job, None, cache)
        references = [request.reference for request in recording.requests]
        assert len(references) == 4
        fitted = recording.requests[0].frames[1]
        assert np.array_equal(references[0], fitted)
        if dynamic:
            # passthrough output = source frames, so chunk 0's last output frame is source frame 5 + 11 - 1.
            expected = source_frames(plate, 15, 15)[0]
            assert mean_difference(references[1], expected) == 0
            assert not np.array_equal(references[1], references[2])
        else:
            assert all(np.array_equal(reference, fitted) for reference in references)


def test_start_frame_buffer_warms_up_on_the_frames_before_the_range(tmp_path, passthrough, plate, tiny_spec):
    """Warm-up frames are the source frames just before the range (repeats of frame 0 where there are none);
    they are rendered and discarded: the output is still exactly the range."""
    job = make_job(tmp_path, passthrough, plate, "buffered", frame_range=(10, 41), start_frame_buffer=4)
    result = render(job, None, CACHE)
    assert result.manifest_data["timeline"]["warm_up_source_frames"] == [6, 7, 8, 9]
    assert mean_difference(frames_of(result.output, 32), source_frames(plate, 10, 41)) < 4
    early = render(make_job(tmp_path, passthrough, plate, "early", frame_range=(2, 33), start_frame_buffer=4),
                   None, CACHE)
    assert early.manifest_data["timeline"]["warm_up_source_frames"] == [0, 0, 0, 1]
    assert probe(early.output).frame_count == 32
    none = render(make_job(tmp_path, tiny_spec, plate, "b0", start_frame_buffer=0, frame_range=(5, 20)), None, CACHE)
    four = render(make_job(tmp_path, tiny_spec, plate, "b4", start_frame_buffer=4, frame_range=(5, 20)), None, CACHE)
    assert mean_difference(frames_of(none.output, 16), frames_of(four.output, 16)) > 1


class FlatChunks:
    """A backend whose every chunk is one flat grey, 40 levels brighter than the chunk before."""

    def __init__(self):
        self.chunks = 0

    def render_chunk(self, request):
        for step in range(1, request.steps + 1):
            request.on_step(step, request.steps)
        level = 60 + 40 * self.chunks
        self.chunks += 1
        return np.full((len(request.frames), request.height, request.width, 3), level, np.uint8)


def test_overlap_crossfade_has_no_step_in_brightness(tmp_path, passthrough):
    """On a static shot whose chunks come out at different brightness, the crossfade weights sum to 1:
    brightness ramps across each overlap instead of jumping."""
    clip = make_clip(tmp_path / "static.mp4", frames=60, size="128x64", source="color=c=gray")
    cache = ModelCache()
    cache.add(passthrough, "cpu", FlatChunks())
    job = make_job(tmp_path, passthrough, clip, "flat", frame_range=(0, 59), start_frame_buffer=0,
                   context_size=17, context_overlap=5)
    result = render(job, None, cache)
    brightness = frames_of(result.output, 60).mean(axis=(1, 2, 3))
    steps = np.abs(np.diff(brightness))
    assert brightness[-1] - brightness[0] > 100
    assert steps.max() < 40 / 6 + 2, steps.max()
    assert np.all(np.diff(brightness) > -1)


def test_interpolation_diffuses_half_and_keeps_count_and_timing(tmp_path, passthrough, tiny_spec, media):
    """Every other frame is diffused, the rest reconstructed by optical flow: same frame count and timing,
    and for a smoothly moving clip the reconstructed frames match the real ones closely."""
    clip = make_pan_clip(tmp_path / "pan.mp4", frames=48)
    plain = render(make_job(tmp_path, passthrough, clip, "full", frame_range=(0, 47), output_size=128), None, CACHE)
    halved = render(make_job(tmp_path, passthrough, clip, "half", frame_range=(0, 47), interpolation=True,
                             output_size=128), None, CACHE)
    a, b = probe(plain.output), probe(halved.output)
    assert (a.frame_count, a.fps, a.duration) == (b.frame_count, b.fps, b.duration) == (48, "25/1", a.duration)
    timeline = halved.manifest_data["timeline"]
    assert timeline["frames_diffused_in_range"] == 25 and timeline["frames_interpolated"] == 23
    original = frames_of(plain.output, 48, 128, 64)
    out = frames_of(halved.output, 48, 128, 64)
    assert mean_difference(out[0::2], original[0::2]) < 3
    blend = (original[0:46:2] + original[2:48:2]) / 2
    assert mean_difference(out[1:47:2], original[1:47:2]) < 0.3 * mean_difference(blend, original[1:47:2])
    wan = render(make_job(tmp_path, tiny_spec, media / "chaplin.mp4", "wanhalf", interpolation=True), None, CACHE)
    assert probe(wan.output).frame_count == 48
    assert wan.manifest_data["frames_diffused"] == 34  # 2 windows of 17; 4 without interpolation


def test_exr_sequence_matches_the_mp4(tmp_path, passthrough, plate):
    """Every frame is written as a half-float linear EXR numbered by source frame + 1001; read back with
    OpenEXR and converted to sRGB it matches the MP4's frames."""
    job = make_job(tmp_path, passthrough, plate, "plate_r001", frame_range=(101, 124), image_sequence="exr",
                   output_size=128)
    result = render(job, None, CACHE)
    folder = tmp_path / "plate_r001"
    names = sorted(path.name for path in folder.iterdir())
    assert names[0] == "plate_r001.1102.exr" and names[-1] == "plate_r001.1125.exr" and len(names) == 24
    assert not (tmp_path / ".plate_r001.frames.part").exists()
    video = frames_of(result.output, 24, 128, 64)
    for offset in (0, 11, 23):
        linear = read_exr(folder / names[offset])
        assert linear.dtype == np.float32 and linear.shape == (64, 128, 3)
        assert mean_difference(linear_to_srgb8(linear), video[offset]) < 5
    with OpenEXR.File(str(folder / names[0])) as exr:
        header = exr.header()
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        assert tuple(round(v, 4) for v in header["chromaticities"]) == (0.64, 0.33, 0.3, 0.6, 0.15, 0.06, 0.3127, 0.329)
    assert result.manifest_data["image_sequence"]["first_file"] == "plate_r001.1102.exr"


def test_png_sequence(tmp_path, passthrough, plate):
    job = make_job(tmp_path, passthrough, plate, "plate_r002", frame_range=(0, 9), image_sequence="png",
                   first_frame_number=0)
    result = render(job, None, CACHE)
    first = cv2.cvtColor(cv2.imread(str(tmp_path / "plate_r002" / "plate_r002.0000.png")), cv2.COLOR_BGR2RGB)
    assert mean_difference(first, frames_of(result.output, 10)[0]) < 4
    assert len(list((tmp_path / "plate_r002").glob("*.png"))) == 10


def test_colour_consistency_pulls_drifting_chunks_back(tmp_path, passthrough):
    """A clip whose colour drifts over time: the later chunks' colour moves back toward the first chunk's,
    more with a higher strength; 0 changes nothing."""
    clip = tmp_path / "drift.mp4"
    import subprocess

    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=128x64:rate=25", "-vf", "hue=h=t*60:s=1+t/3", "-frames:v", "72",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    drift = {}
    for strength in (0.0, 0.5, 1.0):
        job = make_job(tmp_path, passthrough, clip, f"cc{strength}", frame_range=(0, 71), start_frame_buffer=0,
                       context_size=17, context_overlap=5, color_consistency=strength)
        out = frames_of(render(job, None, CACHE).output, 72).astype(np.uint8)
        first, last = colour_stats(out[:12]), colour_stats(out[-12:])
        drift[strength] = float(np.abs(np.subtract(first.mean, last.mean)).sum())
    assert drift[1.0] < drift[0.5] < drift[0.0]
    assert drift[1.0] < drift[0.0] / 2
    untouched = render(make_job(tmp_path, passthrough, clip, "cc-none", frame_range=(0, 71), start_frame_buffer=0,
                                context_size=17, context_overlap=5), None, CACHE)
    assert Path(untouched.output).read_bytes() == (tmp_path / "cc0.0.mp4").read_bytes()


def test_shift_changes_the_render(tmp_path, tiny_spec, plate):
    low = render(make_job(tmp_path, tiny_spec, plate, "s1", shift=1.0, frame_range=(5, 20)), None, CACHE)
    high = render(make_job(tmp_path, tiny_spec, plate, "s8", shift=8.0, frame_range=(5, 20)), None, CACHE)
    assert mean_difference(frames_of(low.output, 16), frames_of(high.output, 16)) > 1


def test_accelerator_lora_changes_the_render_and_a_missing_one_is_an_error(tmp_path, tiny_spec, plate):
    lora = tiny_spec.accelerator.lora
    without = render(make_job(tmp_path, tiny_spec, plate, "nolora", steps=2, cfg=1.0), None, CACHE)
    with_lora = render(make_job(tmp_path, tiny_spec, plate, "lora", steps=2, cfg=1.0, accelerator_lora=lora),
                       None, CACHE)
    assert mean_difference(frames_of(without.output, 48), frames_of(with_lora.output, 48)) > 0.5
    assert with_lora.manifest_data["accelerator"] == {"lora": lora, "scale": 1.0}
    again = render(make_job(tmp_path, tiny_spec, plate, "nolora2", steps=2, cfg=1.0), None, CACHE)
    assert hashlib.sha256(Path(again.output).read_bytes()).digest() == \
        hashlib.sha256(Path(without.output).read_bytes()).digest()
    with pytest.raises(WeightsMissingError, match="accelerator LoRA"):
        render(make_job(tmp_path, tiny_spec, plate, "gone", accelerator_lora=str(tmp_path / "missing.safetensors")),
               None, CACHE)
