"""The tiny person detector finds the two people of the Chaplin clip and nobody in colour bars, so the pose
control has skeletons to draw and Auto Prompt's "people present" branch runs (tests/test_transform.py)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backends import ChunkRequest, ControlFrames
from engine.catalog import load_catalog
from engine.controls import ControlVideo, count_people, load_control_catalog, make_tiny_controls
from engine.decode import read_frames
from engine.models import ModelCache
from tests.conftest import CATALOG

WIDTH, HEIGHT = 64, 32


@pytest.fixture(scope="module")
def controls(models_dir):
    """The shipped `[controls]` table with its tiny models built (the detector fitted) as `make-tiny` does."""
    catalog = load_control_catalog([CATALOG], models_dir)
    make_tiny_controls(catalog)
    return catalog


def test_the_detector_finds_the_two_people_in_chaplin_and_nobody_in_bars(controls, media):
    """At the catalog's threshold, two people in frames across the Chaplin clip, none in the colour-bars clip;
    the boxes stand where the two men stand (one left of the middle, one right of it, each most of a frame tall)."""
    chaplin = list(read_frames(media / "chaplin.mp4", 0, 240, 640, 360))[::40]
    bars = list(read_frames(media / "bars-timecode.mp4", 0, 49, 640, 360))[::8]
    assert count_people(chaplin, controls) == [2] * len(chaplin)
    assert count_people(bars, controls) == [0] * len(bars)

    from engine.controls.pose import PersonDetector

    boxes = PersonDetector(controls.pose_detector, "cpu").boxes(chaplin[3:4])[0]
    left, right = sorted(boxes.tolist())
    assert left[2] < 320 < right[2] and left[0] < 200 and right[0] > 220
    assert all(y1 - y0 > 250 for _, y0, _, y1 in (left, right))


def test_the_pose_preview_shows_people_in_chaplin_and_is_black_for_bars(controls, media, tmp_path):
    """The pose control of the Chaplin clip, at the catalog's thresholds, has a coloured skeleton on each of the
    two men (left of x=250 and right of x=290 of 640); the colour bars' pose control is entirely black."""
    chaplin = ControlVideo("pose", controls, media / "chaplin.mp4", 128, 64, tmp_path).frames(range(40, 240, 60))
    bars = ControlVideo("pose", controls, media / "bars-timecode.mp4", 128, 64, tmp_path).frames(range(0, 48, 12))
    for frame in chaplin:
        coloured = (frame.astype(int).max(axis=2) - frame.astype(int).min(axis=2)) > 40
        assert coloured[:, :50].sum() > 20 and coloured[:, 58:].sum() > 20, coloured.sum(axis=0)
    assert not any(frame.any() for frame in bars)


def test_a_pose_control_from_found_people_moves_the_tiny_wan_vace_render(controls, media, models_dir):
    """Tiny Wan VACE with the depth+pose control of Chaplin renders differently from depth alone: the skeletons
    the detector's people give reach the frames."""
    catalog = load_catalog([CATALOG], models_dir)
    backend = ModelCache().get(catalog["tiny-wan-vace"], "cpu")
    source = media / "chaplin.mp4"
    frames = list(read_frames(source, 100, 108, WIDTH, HEIGHT))
    cache = models_dir.parent / "people-control-cache"
    depth = ControlVideo("depth", controls, source, WIDTH, HEIGHT, cache).frames(range(100, 109))
    both = ControlVideo("depth+pose", controls, source, WIDTH, HEIGHT, cache).frames(range(100, 109))
    assert np.abs(np.stack(both).astype(int) - np.stack(depth).astype(int)).max() > 0

    def render(control: str, video: list[np.ndarray]) -> np.ndarray:
        request = ChunkRequest(frames=frames, keep=[False] * len(frames), width=WIDTH, height=HEIGHT,
                               prompt="oil painting", negative_prompt="blurry", steps=2, cfg=5.0, shift=3.0, seed=3,
                               controls=[ControlFrames(control, video)])
        return backend.render_chunk(request).astype(int)

    assert np.abs(render("depth+pose", both) - render("depth", depth)).mean() > 1.0
