"""Frame interpolation: which frames are diffused, and how the ones in between are rebuilt."""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np
import pytest

from engine.interpolate import interpolate_frame
from engine.timeline import diffused_indices

HEIGHT, WIDTH, SIDE = 192, 256, 48
START = np.array([64, 48])  # the square's top-left corner (x, y) in frame A
MOTION = np.array([10, 6])  # how far it moves from frame A to frame C


def _texture() -> np.ndarray:
    """A smooth random RGB texture (enlarged noise), so optical flow has something to follow."""
    coarse = np.random.default_rng(7).random((7, 7, 3)).astype(np.float32) * 255
    return np.rint(cv2.resize(coarse, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)).astype(np.uint8)


def _background() -> np.ndarray:
    ramp = np.linspace(40, 200, WIDTH)[None, :] + np.linspace(0, 60, HEIGHT)[:, None]
    return np.clip(np.dstack([ramp, ramp * 0.8, 255 - ramp]), 0, 255).astype(np.uint8)


def _scene(corner: np.ndarray) -> np.ndarray:
    """The background with the textured square's top-left corner at `corner` (x, y)."""
    frame = _background()
    x, y = corner
    frame[y:y + SIDE, x:x + SIDE] = _texture()
    return frame


def _error(frame: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(frame.astype(np.float64) - truth)))


def _centroid(frame: np.ndarray) -> np.ndarray:
    """Mean (x, y) of the pixels that differ clearly from the background."""
    ys, xs = np.nonzero(np.abs(frame.astype(np.int16) - _background()).sum(axis=2) > 30)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("frame_count", [1, 2, 3, 5, 6, 48, 49])
def test_diffused_indices_take_every_other_frame_and_the_last(frame_count):
    """About half the frames are diffused, first and last included, in order, never two skipped in a row."""
    indices = diffused_indices(frame_count)
    assert indices[0] == 0 and indices[-1] == frame_count - 1
    assert len(indices) == frame_count // 2 + 1
    assert all(1 <= later - earlier <= 2 for earlier, later in pairwise(indices))


def test_diffused_indices_examples():
    """The documented examples hold, and an empty range is refused with its length in the message."""
    assert diffused_indices(5) == [0, 2, 4]
    assert diffused_indices(6) == [0, 2, 4, 5]
    assert diffused_indices(1) == [0]
    assert diffused_indices(2) == [0, 1]
    with pytest.raises(ValueError, match="got 0"):
        diffused_indices(0)


def test_moving_square_lands_in_the_middle():
    """The middle frame puts a moving square halfway along, far closer to the truth than a 50/50 average."""
    first, middle, last = _scene(START), _scene(START + MOTION // 2), _scene(START + MOTION)
    interpolated = interpolate_frame(first, last)
    average = (first.astype(np.float64) + last) / 2
    assert _error(interpolated, middle) < 0.5 * _error(average, middle)
    # Flow smears a little into the background the square uncovers, so allow a pixel and a half.
    assert np.abs(_centroid(interpolated) - _centroid(middle)).max() < 1.5


def test_quarter_is_nearer_the_first_frame_than_three_quarters():
    """At t=0.25 the square is a quarter of the way along, at t=0.75 three quarters."""
    first, last = _scene(START), _scene(START + MOTION)
    quarter, three_quarters = interpolate_frame(first, last, 0.25), interpolate_frame(first, last, 0.75)
    assert _error(quarter, first) < _error(three_quarters, first)
    assert np.abs(_centroid(quarter) - (_centroid(first) + 0.25 * MOTION)).max() < 1.5
    assert np.abs(_centroid(three_quarters) - (_centroid(first) + 0.75 * MOTION)).max() < 1.5


def test_identical_frames_give_the_same_frame():
    """Interpolating between a frame and itself returns that frame, within one level."""
    frame = _scene(START)
    result = interpolate_frame(frame, frame.copy(), 0.3)
    assert result.dtype == np.uint8 and result.shape == frame.shape
    assert np.abs(result.astype(np.int16) - frame).max() <= 1


def test_small_non_contiguous_frames_are_read_not_written():
    """A 64x32 pair given as strided views comes back as a 32x64x3 uint8 frame; the inputs are unchanged."""
    big_first, big_last = _scene(START), _scene(START + MOTION)
    first, last = big_first[40:104:2, 40:168:2], big_last[40:104:2, 40:168:2]
    assert not first.flags.c_contiguous
    kept_first, kept_last = first.copy(), last.copy()
    result = interpolate_frame(first, last)
    assert result.dtype == np.uint8 and result.shape == (32, 64, 3)
    assert np.array_equal(first, kept_first) and np.array_equal(last, kept_last)


def test_same_inputs_give_bit_identical_frames():
    """Two calls with the same frames and t return exactly the same bytes."""
    first, last = _scene(START), _scene(START + MOTION)
    assert np.array_equal(interpolate_frame(first, last, 0.4), interpolate_frame(first, last, 0.4))


def test_mismatched_frames_and_bad_t_are_refused():
    """Frames of different shapes, non-RGB or tiny frames, and t outside [0, 1] raise with the bad value."""
    frame = _scene(START)
    with pytest.raises(ValueError, match=r"\(96, 128, 3\)"):
        interpolate_frame(frame, frame[::2, ::2])
    with pytest.raises(ValueError, match="float64"):
        interpolate_frame(frame.astype(np.float64), frame)
    with pytest.raises(ValueError, match="1.5"):
        interpolate_frame(frame, frame, 1.5)
    with pytest.raises(ValueError, match="got 20x8"):
        interpolate_frame(frame[:8, :20], frame[:8, :20])
