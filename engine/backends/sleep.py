"""A test backend that only waits: it stands in for a GPU busy diffusing, using no CPU.

Each diffusion step sleeps the time the catalog's calibration gives for the window (seconds per
megapixel-frame-step on the device kind, as for every model), then the window comes back as the passthrough
backend returns it (kept frames as given, the others the source or control frames). With it, a render on a
CPU shows whether decoding and encoding run beside diffusion (tests/test_overlap.py, bench/overhead.py): the
time spent sleeping is time the CPU is free for the other stages.

It is not in config/models.toml: tests and benchmarks name it in a catalog of their own.
"""

from __future__ import annotations

import time

import numpy as np

from engine.backends import Asked, ChunkRequest, passthrough
from engine.catalog import ModelSpec


def check(spec: ModelSpec, asked: Asked) -> None:
    """It takes every setting, like the passthrough backend whose frames it returns."""


class SleepBackend:
    def __init__(self, spec: ModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        self._frames = passthrough.PassthroughBackend(spec, device)

    def step_seconds(self, request: ChunkRequest) -> float:
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        megapixel_frames = len(request.frames) * request.width * request.height / 1e6
        return self.spec.calibration.get(kind, 0.0) * megapixel_frames

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        seconds = self.step_seconds(request)
        for step in range(1, request.steps + 1):
            time.sleep(seconds)
            request.on_step(step, request.steps)
        return self._frames.render_chunk(
            ChunkRequest(request.frames, request.keep, request.width, request.height, request.prompt,
                         request.negative_prompt, request.steps, request.cfg, request.shift, request.seed,
                         controls=request.controls))


def load(spec: ModelSpec, device: str) -> SleepBackend:
    return SleepBackend(spec, device)


def build_tiny(spec: ModelSpec) -> None:
    """Nothing to build: it has no weights."""
