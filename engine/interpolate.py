"""Rebuild the frames between diffused frames by optical-flow interpolation, with no model weights.

With `interpolation: true` only every other frame (and the last) is diffused (engine/timeline.py). Each
frame in between is reconstructed from its two diffused neighbours:

1. DIS optical flow on greyscale, both ways (before -> after and after -> before).
2. A forward-backward check gives every pixel of each neighbour a confidence: its flow is trusted when the
   other direction's flow, read at its end point, brings it back.
3. Each neighbour's pixels are splatted forward to time t to learn where every output pixel comes from in
   that neighbour. Where two land on one output pixel the more consistent one wins (it is in front); output
   pixels that nothing lands on are ones that neighbour cannot see (a disocclusion).
4. Both neighbours are warped to time t with `cv2.remap` and blended by time and visibility, so where one
   side is inconsistent or blind the other side's warp is trusted more.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

# The forward-backward tolerance in squared pixels (Sundaram et al. 2010): a fixed slack for flow noise plus a
# share of the motion, since long vectors carry larger errors.
_CONSISTENCY_SLACK = 0.5
_CONSISTENCY_SHARE = 0.01
# Splatting ranks colliding pixels by confidence quantised to this many levels, then by source index, so the
# winner never depends on the order in which numpy visits them.
_RANK_LEVELS = 1024
# DIS needs both sides of a frame to hold at least one patch (12 pixels with the medium preset).
_SMALLEST_SIDE = 12
# A blind or inconsistent warp keeps this much weight, so a pixel neither side sees still gets a time blend.
_FLOOR = 1e-3

# OpenCV's thread count is process-wide; this lock keeps one call's single-threaded section from being undone
# by another call restoring the count early.
_OPENCV_THREADS = threading.Lock()


def interpolate_frame(before: np.ndarray, after: np.ndarray, t: float = 0.5) -> np.ndarray:
    """The frame at fraction `t` between two HxWx3 uint8 RGB frames, as a new HxWx3 uint8 array."""
    _check_frames(before, after, t)
    before = np.ascontiguousarray(before)
    after = np.ascontiguousarray(after)
    with _one_opencv_thread():
        grey_before = cv2.cvtColor(before, cv2.COLOR_RGB2GRAY)
        grey_after = cv2.cvtColor(after, cv2.COLOR_RGB2GRAY)
        forward = _flow(grey_before, grey_after)
        backward = _flow(grey_after, grey_before)
        map_before, seen_before = _source_map(forward, backward, t)
        map_after, seen_after = _source_map(backward, forward, 1.0 - t)
        warped_before = cv2.remap(before, map_before, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        warped_after = cv2.remap(after, map_after, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    weight_before = ((1.0 - t) * (seen_before + _FLOOR))[..., None]
    weight_after = (t * (seen_after + _FLOOR))[..., None]
    mixed = (warped_before * weight_before + warped_after * weight_after) / (weight_before + weight_after)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _check_frames(before: np.ndarray, after: np.ndarray, t: float) -> None:
    for name, frame in (("before", before), ("after", after)):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{name} frame must be HxWx3 uint8 RGB, got shape {frame.shape} of {frame.dtype}")
    if before.shape != after.shape:
        raise ValueError(f"frames must have the same shape, got {before.shape} and {after.shape}")
    if min(before.shape[:2]) < _SMALLEST_SIDE:
        raise ValueError(f"frames must be at least {_SMALLEST_SIDE} pixels on each side for optical flow, "
                         f"got {before.shape[1]}x{before.shape[0]}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be between 0 and 1, got {t}")


@contextmanager
def _one_opencv_thread() -> Iterator[None]:
    """Run OpenCV on one thread: its parallel loops do not promise bit-identical results from run to run."""
    with _OPENCV_THREADS:
        previous = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            yield
        finally:
            cv2.setNumThreads(previous)


def _flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense HxWx2 float32 flow: pixel (x, y) of `source` is seen at (x, y) + flow in `target`."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(source, target, None)


def _source_map(flow: np.ndarray, back: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel at time `s` (0 = this frame, 1 = the other) lies in this frame, and how far to trust it.

    Returns an HxWx2 float32 map for `cv2.remap` and an HxW float32 visibility in [0, 1].
    """
    height, width = flow.shape[:2]
    count = height * width
    grid = np.dstack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)))

    # Forward-backward consistency of each pixel of this frame.
    end = grid + flow
    back_at_end = cv2.remap(back, end, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    error = _squared_length(flow + back_at_end)
    tolerance = _CONSISTENCY_SLACK + _CONSISTENCY_SHARE * (_squared_length(flow) + _squared_length(back_at_end))
    confidence = (tolerance / (tolerance + error)).ravel()

    # Splat every pixel to time s; the most consistent one wins each output pixel (the smallest key).
    landing = np.rint(grid + s * flow).astype(np.int64)
    inside = ((landing[..., 0] >= 0) & (landing[..., 0] < width)
              & (landing[..., 1] >= 0) & (landing[..., 1] < height)).ravel()
    target = (landing[..., 1] * width + landing[..., 0]).ravel()[inside]
    rank = np.rint((1.0 - confidence) * (_RANK_LEVELS - 1)).astype(np.int64)
    key = (rank * count + np.arange(count, dtype=np.int64))[inside]
    winner = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(winner, target, key)
    covered = winner != np.iinfo(np.int64).max
    source = winner[covered] % count

    # The output pixel samples this frame at its own position minus the winner's motion up to time s.
    offset = (-s * flow).reshape(count, 2)
    offset[covered] = offset[source]
    visibility = np.zeros(count, dtype=np.float32)
    visibility[covered] = confidence[source]
    offset = offset.reshape(height, width, 2)
    visibility = visibility.reshape(height, width)
    covered = covered.reshape(height, width)

    # Nearest-pixel splatting leaves one-pixel cracks where the motion stretches; fill them from covered
    # neighbours, trusted by how many there are. Wider holes are disocclusions and keep visibility 0.
    weight = covered.astype(np.float32)
    neighbours = cv2.boxFilter(weight, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    crack = ~covered & (neighbours > 0)
    offset_sum = cv2.boxFilter(offset * weight[..., None], -1, (3, 3), normalize=False,
                               borderType=cv2.BORDER_CONSTANT)
    visibility_sum = cv2.boxFilter(visibility, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    offset[crack] = offset_sum[crack] / neighbours[crack][:, None]
    visibility[crack] = visibility_sum[crack] / 9.0
    return grid + offset, visibility


def _squared_length(vectors: np.ndarray) -> np.ndarray:
    """|v|^2 of an HxWx2 field (a channel sum over the last axis is several times slower)."""
    x, y = cv2.split(vectors)
    return x * x + y * y
