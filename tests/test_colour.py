"""Colour consistency: LAB statistics and pulling a frame's colour toward an anchor."""

from __future__ import annotations

import numpy as np
import pytest

from engine.colour import ColourStats, colour_stats, match_colour
from engine.errors import SettingsError


def _frame(seed: int = 0, height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth colour gradient with some noise, clear of the ends of the 8-bit range."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([60 + 120 * x / width, 70 + 110 * y / height, 150 - 60 * x / width], axis=-1)
    noisy = base + rng.normal(0.0, 12.0, size=base.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _tinted(frame: np.ndarray, red: int = 45, blue: int = -25) -> np.ndarray:
    shifted = frame.astype(np.int16) + np.array([red, 0, blue], dtype=np.int16)
    return np.clip(shifted, 0, 255).astype(np.uint8)


def _mean_distance(a: ColourStats, b: ColourStats) -> float:
    return float(np.linalg.norm(np.subtract(a.mean, b.mean)))


def test_strength_zero_is_identity():
    """Strength 0 returns the frame bit-identical."""
    frame = _frame()
    out = match_colour(frame, colour_stats(_frame(1)), 0.0)
    assert out.dtype == np.uint8
    assert np.array_equal(out, frame)


def test_strength_one_reaches_the_anchor():
    """Strength 1 gives the frame the anchor's LAB means within 1 unit and deviations within 1.5."""
    anchor = colour_stats(_frame(1))
    out = match_colour(_tinted(_frame(2)), anchor, 1.0)
    stats = colour_stats(out)
    np.testing.assert_allclose(stats.mean, anchor.mean, atol=1.0)
    np.testing.assert_allclose(stats.std, anchor.std, atol=1.5)


def test_strength_moves_part_way_monotonically():
    """Higher strength brings the frame's LAB means steadily closer to the anchor's."""
    anchor = colour_stats(_frame(1))
    drifted = _tinted(_frame(2))
    distances = [_mean_distance(colour_stats(match_colour(drifted, anchor, s)), anchor)
                 for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert distances == sorted(distances, reverse=True)
    assert distances[2] == pytest.approx(distances[0] / 2, rel=0.15)


def test_drifted_tint_moves_back_toward_the_anchor_hue():
    """A frame with a reddish tint added is pulled back toward the untinted anchor's a* and b*."""
    frame = _frame()
    anchor = colour_stats(frame)
    drifted = _tinted(frame)
    before = colour_stats(drifted)
    after = colour_stats(match_colour(drifted, anchor, 1.0))
    assert before.mean[1] > anchor.mean[1] + 5
    for channel in (1, 2):
        assert abs(after.mean[channel] - anchor.mean[channel]) < 0.2 * abs(before.mean[channel] - anchor.mean[channel])
    restored = match_colour(drifted, anchor, 1.0).astype(int)
    assert np.abs(restored - frame).mean() < 0.5 * np.abs(drifted.astype(int) - frame).mean()


def test_output_shape_and_dtype_on_small_frames():
    """The result is an RGB uint8 frame of the input's shape, even for tiny frames."""
    for shape in ((1, 1, 3), (2, 3, 3), (24, 32, 3)):
        frame = _frame(3)[: shape[0], : shape[1]]
        out = match_colour(frame, colour_stats(_frame(4)), 0.6)
        assert out.shape == shape
        assert out.dtype == np.uint8


def test_inputs_are_unchanged_and_results_deterministic():
    """Matching leaves the input frame untouched and gives the same output every time."""
    frame = _frame()
    copy = frame.copy()
    anchor = colour_stats(_frame(1))
    first = match_colour(frame, anchor, 0.7)
    assert np.array_equal(frame, copy)
    assert np.array_equal(first, match_colour(frame, anchor, 0.7))


def test_pooled_stats_of_many_frames():
    """Stats of several frames pool every pixel, as if the frames were one image."""
    frames = [_frame(5), _frame(6)]
    pooled = colour_stats(frames)
    joined = colour_stats(np.concatenate(frames, axis=0))
    np.testing.assert_allclose(pooled.mean, joined.mean, atol=1e-6)
    np.testing.assert_allclose(pooled.std, joined.std, atol=1e-6)
    np.testing.assert_allclose(colour_stats(np.stack(frames)).mean, joined.mean, atol=1e-6)


def test_stats_dict_round_trip():
    """ColourStats survives to_dict and from_dict unchanged."""
    stats = colour_stats(_frame())
    assert ColourStats.from_dict(stats.to_dict()) == stats
    assert all(isinstance(v, float) for v in stats.mean + stats.std)


def test_strength_outside_range_is_refused():
    """A strength outside 0 to 1 is refused with the value in the message."""
    with pytest.raises(SettingsError, match="1.5"):
        match_colour(_frame(), colour_stats(_frame()), 1.5)
