"""Render backends, one self-contained module per model family, and the one list of them (`FAMILIES`).

Each family's module has `load` (a backend for a model on a device),
`build_tiny` (the tiny test weights) and `check` (the settings it refuses,
with why). Importing a family's module does not import torch: the daemon asks
`check_settings` while it resolves a request, before anything renders, and
the engine asks the same function again for each chunk.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from engine.catalog import ModelSpec


@dataclass(frozen=True)
class Family:
    """A backend family: its name in the catalog's `backend` field and the module that implements it."""

    name: str
    module: str
    weightless: bool = False  # it renders without weights (nothing to download or build)
    speed_ups: bool = False  # it honours the catalog's batched_cfg, fused_attention and compile settings
    shipped: bool = True  # offered in config/models.toml; False: named only by tests and benchmarks

    def implementation(self):
        return importlib.import_module(self.module)


FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("wan-vace", "engine.backends.wan_vace", speed_ups=True),
    Family("wan-v2v", "engine.backends.wan_v2v", speed_ups=True),
    Family("animatediff-v2v", "engine.backends.animatediff"),
    Family("passthrough", "engine.backends.passthrough", weightless=True),
    Family("keyframe-flow", "engine.backends.keyframe_flow", weightless=True),
    Family("sleep", "engine.backends.sleep", weightless=True, shipped=False),  # waits instead of diffusing
)}
BACKEND_NAMES: tuple[str, ...] = tuple(FAMILIES)


@dataclass(frozen=True)
class Asked:
    """What a render asks of its backend beyond prompts, sizes and steps: the settings some families refuse.

    The daemon fills it from a request (`shift` only when the request gives one); the engine from each chunk.
    """

    shift: bool = False
    mask: bool = False
    reference: bool = False
    accelerator: bool = False
    controls: tuple[str, ...] = ()

    @classmethod
    def of_chunk(cls, request: ChunkRequest) -> Asked:
        return cls(mask=request.mask is not None, reference=request.reference is not None,
                   accelerator=request.accelerator is not None,
                   controls=tuple(control.type for control in request.controls))


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
    return FAMILIES[spec.backend].implementation().load(spec, device)


def build_tiny(spec: ModelSpec) -> None:
    """Write a random-initialised tiny model for `spec` to its local folder."""
    FAMILIES[spec.backend].implementation().build_tiny(spec)


def check_settings(spec: ModelSpec, asked: Asked) -> None:
    """Raise `SettingsError` (naming the model and the setting) if `spec`'s backend cannot honour `asked`."""
    FAMILIES[spec.backend].implementation().check(spec, asked)
