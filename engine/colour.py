"""Colour consistency across a long render: pull each frame's colour statistics toward an anchor's.

Chunks of a long render are diffused separately, and their colour can drift
from one to the next. `color_consistency` moves every frame's per-channel mean
and standard deviation in CIE LAB, a space where equal steps look about equally
large, part of the way (or all the way, at 1) to those of an anchor, such as
the first chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engine.errors import SettingsError

# Below this LAB standard deviation a channel counts as flat, so it is moved, not stretched from nothing.
STD_EPS = 1e-3


@dataclass(frozen=True)
class ColourStats:
    """Per-channel mean and standard deviation of L, a and b."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> ColourStats:
        mean, std = tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"])
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"colour stats need three means and three deviations, got {data!r}")
        return cls(mean=mean, std=std)


def colour_stats(frames: np.ndarray | Sequence[np.ndarray]) -> ColourStats:
    """The LAB statistics of one HxWx3 uint8 frame, or of many frames pooled together."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = [frames]
    count = 0
    total = np.zeros(3, dtype=np.float64)
    squares = np.zeros(3, dtype=np.float64)
    for frame in frames:
        lab = _to_lab(frame).reshape(-1, 3).astype(np.float64)
        count += lab.shape[0]
        total += lab.sum(axis=0)
        squares += np.square(lab).sum(axis=0)
    if count == 0:
        raise ValueError("colour stats need at least one frame")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return ColourStats(mean=_triple(mean), std=_triple(std))


def match_colour(frame: np.ndarray, anchor: ColourStats, strength: float) -> np.ndarray:
    """`frame` with its LAB statistics moved toward `anchor`'s by `strength` (0 to 1).

    At strength 0 the frame itself is returned, untouched and uncopied.
    """
    if not 0.0 <= strength <= 1.0:
        raise SettingsError(f"color_consistency {strength} is outside 0 to 1")
    _check_frame(frame)
    if strength == 0.0:
        return frame
    lab = _to_lab(frame)
    pixels = lab.reshape(-1, 3).astype(np.float64)
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    target_mean = mean + strength * (np.array(anchor.mean) - mean)
    target_std = std + strength * (np.array(anchor.std) - std)
    scale = target_std / np.maximum(std, STD_EPS)
    matched = ((lab - mean) * scale + target_mean).astype(np.float32)
    rgb = cv2.cvtColor(matched, cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _to_lab(frame: np.ndarray) -> np.ndarray:
    """HxWx3 float32 LAB (L in 0..100) of an RGB uint8 frame."""
    _check_frame(frame)
    return cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {frame.dtype} of shape {frame.shape}")


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])
