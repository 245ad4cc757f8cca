"""Turn raw chunk outputs into final frames: crossfade over the overlap, then the rest."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from engine.plan import Chunk


def crossfade_weights(length: int) -> np.ndarray:
    """Weight of the newer chunk at each crossfade frame; the older one gets 1 minus it."""
    return (np.arange(length, dtype=np.float32) + 1.0) / (length + 1.0)


def segment_frames(chunk: Chunk, raw: np.ndarray, previous: Chunk | None,
                   previous_raw: np.ndarray | None) -> Iterator[np.ndarray]:
    """The final frames `chunk.emit_start .. chunk.emit_end - 1`, in order."""
    weights = crossfade_weights(chunk.blend)
    for offset in range(chunk.emit_end - chunk.emit_start):
        frame = chunk.emit_start + offset
        current = raw[frame - chunk.start]
        if offset < chunk.blend:
            older = previous_raw[frame - previous.start].astype(np.float32)
            weight = weights[offset]
            mixed = older * (1.0 - weight) + current.astype(np.float32) * weight
            yield np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        else:
            yield current
