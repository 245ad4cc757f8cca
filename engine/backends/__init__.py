"""Render backends, one self-contained module per model family.

`load_backend` imports the family's module only when a model of that family is
first loaded, so nothing here pulls in torch until a render needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.catalog import ModelSpec

FAMILIES = {
    "wan-vace": "engine.backends.wan_vace",
    "wan-v2v": "engine.backends.wan_v2v",
    "animatediff-v2v": "engine.backends.animatediff",
    "passthrough": "engine.backends.passthrough",
    "keyframe-flow": "engine.backends.keyframe_flow",
}


@dataclass(frozen=True)
class Accelerator:
    """A LoRA applied for low-step rendering (the catalog's accelerator profile)."""

    lora: str
    scale: float = 1.0


@dataclass
class ControlFrames:
    """A control video for one window (depth, pose, ...), one frame per rendered frame, and its strength.

    A combined type (depth+pose) carries the composite in `frames` and each part in `parts`, for
    backends with one ControlNet per part.
    """

    type: str
    frames: list[np.ndarray]
    strength: float = 1.0
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)


@dataclass
class ChunkRequest:
    """One window to diffuse.

    `frames` are the conditioning frames (HxWx3 uint8), as many as the model
    renders. Where `keep` is true the frame is one the model must keep as it is
    (the previous chunk's output over the overlap, or the pinned style frame).
    `reference` is an appearance reference for the whole window. `mask`, when
    given, holds one HxW float32 array per frame in [0, 1]: 1 = regenerate,
    0 = keep the conditioning frame (inpainting; kept frames are 0 throughout).
    `strength` is how far noise-and-denoise backends move away from the frames
    (0 = unchanged, 1 = fully regenerated). `controls` are control videos
    (depth, pose, ...) with their strengths. `sources` are the window's source frames, also where a kept
    frame replaced one in `frames` (what the motion of the shot is measured on).
    """

    frames: list[np.ndarray]
    keep: list[bool]
    width: int
    height: int
    prompt: str
    negative_prompt: str
    steps: int
    cfg: float
    shift: float
    seed: int
    reference: np.ndarray | None = None
    accelerator: Accelerator | None = None
    mask: list[np.ndarray] | None = None
    strength: float | None = None
    controls: list[ControlFrames] = field(default_factory=list)
    sources: list[np.ndarray] | None = None
    on_step: Callable[[int, int], None] = field(default=lambda step, steps: None)


class Backend(Protocol):
    spec: ModelSpec
    device: str

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        """Diffuse one window; return its frames as (N, H, W, 3) uint8."""
        ...


def load_backend(spec: ModelSpec, device: str) -> Backend:
    module = importlib.import_module(FAMILIES[spec.backend])
    return module.load(spec, device)


def build_tiny(spec: ModelSpec) -> None:
    """Write a random-initialised tiny model for `spec` to its local folder."""
    module = importlib.import_module(FAMILIES[spec.backend])
    module.build_tiny(spec)
