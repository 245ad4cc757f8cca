"""Every writer of frames (EXR, PNG, segments, checkpoints) keeps frames as the backends return them.

The diffusers pipelines hand back views of channel-first tensors, not C-contiguous arrays; a writer that reads
the buffer rather than the array scrambles them. Each backend's own output goes through each writer here, and
the written frames are compared with the values and with the MP4.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from engine.backends import ChunkRequest
from engine.catalog import load_catalog
from engine.checkpoint import WorkFolder
from engine.decode import read_frames
from engine.encode import encode_segment
from engine.models import ModelCache
from engine.render import render
from engine.sequence import linear_to_srgb8, read_exr, srgb_to_linear, write_frame
from tests.conftest import CATALOG
from tests.helpers import make_job

CACHE = ModelCache()
BACKENDS = ("tiny-wan-vace", "tiny-wan-v2v", "tiny-animatediff", "passthrough")
WIDTH, HEIGHT = 48, 32


def chunk_request(frames: list[np.ndarray]) -> ChunkRequest:
    return ChunkRequest(frames, [False] * len(frames), WIDTH, HEIGHT, "oil painting", "blurry", steps=1, cfg=1.0,
                        shift=3.0, seed=3)


@pytest.fixture(scope="module")
def outputs(media, models_dir) -> dict[str, np.ndarray]:
    """Five frames of the Chaplin clip diffused by each backend, exactly as `render_chunk` returns them."""
    catalog = load_catalog([CATALOG], models_dir)
    source = list(read_frames(media / "chaplin.mp4", 100, 104, WIDTH, HEIGHT))
    return {model: CACHE.get(catalog[model], "cpu").render_chunk(chunk_request(source)) for model in BACKENDS}


def test_backends_return_frames_the_writers_must_not_take_for_contiguous(outputs):
    """The Wan backends' frames are strided views of channel-first tensors (what scrambled the EXRs)."""
    assert not outputs["tiny-wan-vace"].flags.c_contiguous and not outputs["tiny-wan-v2v"].flags.c_contiguous
    assert all(frames.shape == (5, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8 for frames in outputs.values())


@pytest.mark.parametrize("model", BACKENDS)
def test_every_writer_keeps_each_backends_frames(tmp_path, outputs, model):
    """EXR (read back and encoded to sRGB), PNG and the checkpoints give back each frame as rendered, and the
    H.264 segment matches the EXR frames as closely as it matches the frames themselves."""
    frames = outputs[model]
    work = WorkFolder(tmp_path / "work")
    work.prepare()
    work.save_raw(0, frames)
    work.save_final(0, frames[-1])
    assert np.array_equal(work.load_raw(0, frames.shape), frames)
    assert np.array_equal(work.load_final(0, frames.shape[1:]), frames[-1])
    encode_segment(iter(frames), WIDTH, HEIGHT, "25", work.segment_path(0))
    video = np.stack(list(read_frames(work.segment_path(0), 0, 4, WIDTH, HEIGHT))).astype(int)
    for index, frame in enumerate(frames):
        png = write_frame(tmp_path, "out", index, frame, "png")
        with Image.open(png) as image:
            assert np.array_equal(np.asarray(image), frame)
        linear = read_exr(write_frame(tmp_path, "out", index, frame, "exr"))
        np.testing.assert_allclose(linear, srgb_to_linear(np.ascontiguousarray(frame)), rtol=2**-10, atol=2**-24)
        assert np.abs(linear_to_srgb8(linear).astype(int) - frame).max() <= 1
        # 4:2:0 chroma costs these noise-like frames several levels; a scrambled EXR adds tens more.
        from_exr = np.abs(linear_to_srgb8(linear).astype(int) - video[index]).mean()
        assert from_exr <= np.abs(frame.astype(int) - video[index]).mean() + 0.1


def test_exr_sequence_of_a_wan_vace_render_matches_its_mp4(tmp_path, media, tiny_spec):
    """A tiny Wan VACE render with interpolation: every EXR frame, diffused or interpolated, encodes back to its
    MP4 frame within compression error (they were scrambled, MAE 18/255, when frames came strided)."""
    plate = tmp_path / "plate.mp4"
    shutil.copyfile(media / "chaplin.mp4", plate)
    job = make_job(tmp_path, tiny_spec, plate, "plate_r001", frame_range=(60, 68), output_size=64, steps=1,
                   interpolation=True, image_sequence="exr", context_size=9, context_overlap=1)
    result = render(job, None, CACHE)
    video = np.stack(list(read_frames(result.output, 0, 8, 64, 32))).astype(int)
    files = sorted((tmp_path / "plate_r001").glob("*.exr"))
    assert len(files) == 9
    for index, path in enumerate(files):
        srgb = linear_to_srgb8(read_exr(path)).astype(int)
        assert np.abs(srgb - video[index]).mean() < 6, (index, path.name)
