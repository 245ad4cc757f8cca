"""Inpainting: masks from a video, an image folder or one image; outside the mask the output is the source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.decode import read_frames
from engine.masks import MaskSource, MaskSpec
from engine.models import ModelCache
from engine.render import render
from tests.harness import drain, settings_for, sha, status_of, write_request
from tests.helpers import make_job

CACHE = ModelCache()


@pytest.fixture
def shot(tmp_path, media) -> Path:
    shutil.copyfile(media / "chaplin.mp4", tmp_path / "plate.mp4")
    shutil.copyfile(media / "mask-shape.mp4", tmp_path / "matte.mp4")
    return tmp_path


def png_frames(folder: Path) -> np.ndarray:
    return np.stack([cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in sorted(folder.glob("*.png"))])


def test_outside_the_feathered_mask_the_output_is_the_source(shot, tiny_spec):
    """With a moving-square mask video (another size than the clip), every pixel the feathered mask leaves
    at zero is exactly the source's; inside, the model's render shows."""
    mask = MaskSpec(path=shot / "matte.mp4", feather=3, grow=2)
    job = make_job(shot, tiny_spec, shot / "plate.mp4", "plate_r001", frame_range=(40, 63), output_size=128,
                   mask=mask, image_sequence="png")
    result = render(job, None, CACHE)
    out = png_frames(shot / "plate_r001").astype(np.int16)
    source = np.stack(list(read_frames(shot / "plate.mp4", 40, 63, 128, 64))).astype(np.int16)
    masks = MaskSource(mask, 128, 64, 640 / 360)
    weights = np.stack([masks.at(frame) for frame in range(40, 64)])
    masks.close()
    outside, inside = weights == 0, weights > 0.99
    assert outside.mean() > 0.5 and inside.mean() > 0.02
    assert np.array_equal(out[outside], source[outside])
    assert np.abs(out[inside] - source[inside]).mean() > 5
    assert result.manifest_data["mask"] == {"from": "matte.mp4", "kind": "video", "frames": 300, "feather": 3,
                                            "grow": 2, "sha256": sha(shot / "matte.mp4")}


def test_mask_follows_the_moving_shape(shot):
    """Mask frame N is source frame N: the white square moves with the mask video."""
    masks = MaskSource(MaskSpec(path=shot / "matte.mp4"), 64, 64, 1.0)
    early, late = masks.at(40), masks.at(200)
    masks.close()
    centre = [np.argwhere(m > 0.5).mean(axis=0) for m in (early, late)]
    assert np.abs(centre[0] - centre[1]).max() > 5


def test_grow_and_feather(shot):
    """Growing enlarges the regenerated area; feathering adds soft grey edges; without either the mask is hard."""
    plain = MaskSource(MaskSpec(path=shot / "matte.mp4"), 128, 128, 1.0).at(100)
    grown = MaskSource(MaskSpec(path=shot / "matte.mp4", grow=6), 128, 128, 1.0).at(100)
    soft = MaskSource(MaskSpec(path=shot / "matte.mp4", feather=6), 128, 128, 1.0).at(100)
    assert (grown > 0.5).sum() > (plain > 0.5).sum() * 1.2
    def partial(mask):
        return ((mask > 0.05) & (mask < 0.95)).sum()

    assert partial(soft) > partial(plain) * 3


def test_image_and_folder_masks(tmp_path):
    """A single image applies to every frame; a folder gives one mask per source frame, in name order."""
    image = np.zeros((90, 160, 3), np.uint8)
    image[20:60, 40:100] = 255
    cv2.imwrite(str(tmp_path / "matte.png"), image)
    single = MaskSource(MaskSpec(path=tmp_path / "matte.png"), 64, 32, 16 / 9)
    assert np.array_equal(single.at(0), single.at(500)) and single.at(0).max() == 1.0
    folder = tmp_path / "mattes"
    folder.mkdir()
    for index in range(3):
        frame = np.zeros((90, 160, 3), np.uint8)
        frame[:, index * 50:(index + 1) * 50] = 255
        cv2.imwrite(str(folder / f"m.{index:04d}.png"), frame)
    sequence = MaskSource(MaskSpec(path=folder), 64, 32, 16 / 9)
    columns = [np.argwhere(sequence.at(i) > 0.5)[:, 1].mean() for i in range(3)]
    assert columns[0] < columns[1] < columns[2]
    assert np.array_equal(sequence.at(2), sequence.at(7)) and sequence.warnings


def test_inpainting_preset_through_the_daemon(tmp_path, media, models_dir, tiny_spec):
    """The inpainting preset with a mask video in the shot renders (the mask video is not taken for the source).
    (A model without mask support refusing the mask is in test_backends_daemon.py.)"""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    shutil.copyfile(media / "mask-shape.mp4", shot / "matte.mp4")
    write_request(shot / "fix.render.json", preset="inpainting", model="tiny-wan-vace", mask="matte.mp4", steps=1,
                  frame_range=[0, 8], output_size=64, context={"size": 17, "overlap": 5})
    other = settings.roots[0] / "sh020"
    other.mkdir()
    shutil.copyfile(media / "chaplin.mp4", other / "plate.mp4")
    shutil.copyfile(media / "mask-shape.mp4", other / "matte.mp4")
    write_request(other / "r.render.json", model="passthrough", mask="matte.mp4", source="plate.mp4",
                  frame_range=[0, 8], output_size=64)
    write_request(other / "feather.render.json", model="passthrough", mask_feather=3, source="plate.mp4",
                  frame_range=[0, 8], output_size=64)
    drain(settings)
    status = status_of(shot / "fix.render.json")
    assert status["state"] == "done", status
    manifest = json.loads((shot / "plate_r001.render-info.json").read_text())
    assert manifest["settings"]["mask"] == {"value": "matte.mp4", "from": "request"}
    assert manifest["settings"]["mask_feather"] == {"value": 8, "from": "preset"}
    assert manifest["source"]["path"] == "plate.mp4"
    assert status_of(other / "r.render.json")["state"] == "done"
    assert "mask_feather and mask_grow need a mask" in status_of(other / "feather.render.json")["error"]


def test_a_compressed_matte_leaves_everything_outside_its_shape_exact(shot, tiny_spec):
    """An H.264 matte decodes to 1-3 where it was black and 252-253 where white; those values snap, so every pixel
    outside the square (found from the matte's hard shape, one pixel of margin) is exactly the source's."""
    from engine.decode import read_frames as decode
    from engine.masks import SNAP

    mask = MaskSpec(path=shot / "matte.mp4")
    raw = np.stack(list(decode(shot / "matte.mp4", 40, 55, 200, 200))).mean(axis=3)
    assert ((raw > 0) & (raw <= 255 * SNAP)).any() and ((raw < 255) & (raw >= 255 * (1 - SNAP))).any()
    job = make_job(shot, tiny_spec, shot / "plate.mp4", "plate_r001", frame_range=(40, 55), output_size=128,
                   mask=mask, image_sequence="png", steps=1)
    render(job, None, CACHE)
    out = png_frames(shot / "plate_r001").astype(np.int16)
    source = np.stack(list(read_frames(shot / "plate.mp4", 40, 55, 128, 64))).astype(np.int16)
    shape = np.stack([cv2.resize((frame > 127).astype(np.float32), (128, 64), interpolation=cv2.INTER_AREA)
                      for frame in raw])
    shape = np.stack([cv2.dilate((frame > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) for frame in shape])
    outside = np.broadcast_to(shape[..., None] == 0, out.shape)
    assert outside.mean() > 0.5
    assert np.abs(out[outside] - source[outside]).max() == 0
    inside = np.broadcast_to(shape[..., None] == 1, out.shape)
    assert np.abs(out[inside] - source[inside]).mean() > 5
