"""A trivial backend that diffuses nothing: it returns its conditioning frames.

Kept frames come back exactly as given, every other frame is the source frame,
or, for a Transform render, the control frame (the conditioning Wan VACE gets).
It makes the engine's data flow visible (which frame went where, what was
pinned, how chunks were joined) without a model, for tests and for dry runs
that check a request before spending GPU time on it.
"""

from __future__ import annotations

import numpy as np

from engine.backends import Asked, ChunkRequest
from engine.catalog import ModelSpec


def check(spec: ModelSpec, asked: Asked) -> None:
    """It takes every setting (and ignores what it cannot show: it diffuses nothing)."""


class PassthroughBackend:
    def __init__(self, spec: ModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        self.last: ChunkRequest | None = None

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        self.last = request
        for step in range(1, request.steps + 1):
            request.on_step(step, request.steps)
        frames = request.frames
        if request.controls:
            guide = request.controls[0].frames
            frames = [frame if keep else control for frame, control, keep in zip(frames, guide, request.keep,
                                                                                   strict=True)]
        return np.stack(frames).astype(np.uint8, copy=False)  # stacking made the copy


def load(spec: ModelSpec, device: str) -> PassthroughBackend:
    return PassthroughBackend(spec, device)


def build_tiny(spec: ModelSpec) -> None:
    """Nothing to build: the passthrough backend has no weights."""
