"""The chunk plan: how a long range is cut into windows the model can render.

Each chunk renders a window of `size` frames (snapped to the model's frame
constraint, e.g. 4k+1 for Wan). Consecutive windows share `overlap` frames:
the next chunk is given the previous chunk's output over the shared frames as
known frames, and the last `overlap` shared frames are crossfaded. The last
window is moved back so that it ends exactly at the last frame: it is never a
short, low-quality tail, it simply shares more frames with the one before.

Each chunk emits a contiguous run of final frames (its "segment"), so the
segments of all chunks cover every output frame exactly once.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

_CONSTRAINT = re.compile(r"^\s*(\d+)\s*k\s*\+\s*(\d+)\s*$")


@dataclass(frozen=True)
class FrameConstraint:
    """Frame counts the model accepts: `step * k + offset` (Wan: 4k+1)."""

    step: int = 1
    offset: int = 0

    @classmethod
    def parse(cls, text: str) -> FrameConstraint:
        match = _CONSTRAINT.match(text)
        if not match:
            raise ValueError(f"frame constraint {text!r} is not of the form 'Nk+M', e.g. '4k+1'")
        step, offset = int(match[1]), int(match[2])
        if step < 1:
            raise ValueError(f"frame constraint {text!r} needs a step of at least 1")
        return cls(step, offset)

    def snap_down(self, n: int) -> int:
        """The largest accepted count not above `n` (at least the smallest accepted)."""
        k = max(0, (n - self.offset) // self.step)
        return max(self.minimum, k * self.step + self.offset)

    def snap_up(self, n: int) -> int:
        """The smallest accepted count not below `n`."""
        k = max(0, -(-(n - self.offset) // self.step))
        return max(self.minimum, k * self.step + self.offset)

    @property
    def minimum(self) -> int:
        return max(1, self.offset)

    def __str__(self) -> str:
        return f"{self.step}k+{self.offset}"


@dataclass(frozen=True)
class Chunk:
    """One window of the plan; frame numbers count from the first frame of the range."""

    index: int
    start: int
    end: int
    render_frames: int
    known: int
    blend: int
    emit_start: int
    emit_end: int
    seed: int

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ChunkPlan:
    frame_count: int
    size_requested: int
    size: int
    overlap_requested: int
    overlap: int
    constraint: str
    chunks: tuple[Chunk, ...]

    @property
    def frames_to_diffuse(self) -> int:
        return sum(chunk.render_frames for chunk in self.chunks)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["chunks"] = [asdict(chunk) for chunk in self.chunks]
        return data


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk `index`, derived from the request seed alone."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def snap_overlap(overlap: int, constraint: FrameConstraint) -> int:
    return 0 if overlap <= 0 else constraint.snap_down(overlap)


def plan_chunks(frame_count: int, size: int, overlap: int, constraint: FrameConstraint, seed: int) -> ChunkPlan:
    """Cut `frame_count` frames into windows of `size` sharing `overlap` frames."""
    if frame_count < 1:
        raise ValueError(f"a chunk plan needs at least one frame, got {frame_count}")
    snapped_size = constraint.snap_down(size)
    snapped_overlap = snap_overlap(overlap, constraint)
    if snapped_overlap * 2 > snapped_size:
        raise ValueError(
            f"context overlap {overlap} (snapped to {snapped_overlap}) is more than half of the context size "
            f"{size} (snapped to {snapped_size}); use an overlap of at most {snapped_size // 2}"
        )

    if frame_count <= snapped_size:
        only = Chunk(0, 0, frame_count, constraint.snap_up(frame_count), 0, 0, 0, frame_count, chunk_seed(seed, 0))
        return ChunkPlan(frame_count, size, snapped_size, overlap, snapped_overlap, str(constraint), (only,))

    stride = snapped_size - snapped_overlap
    starts = [0]
    while starts[-1] + snapped_size < frame_count:
        starts.append(min(starts[-1] + stride, frame_count - snapped_size))

    chunks = []
    for index, start in enumerate(starts):
        end = start + snapped_size
        known = 0 if index == 0 else chunks[-1].end - start
        blend = 0 if index == 0 else snapped_overlap
        emit_start = 0 if index == 0 else chunks[-1].end - blend
        emit_end = frame_count if index == len(starts) - 1 else end - snapped_overlap
        chunks.append(Chunk(index, start, end, snapped_size, known, blend, emit_start, emit_end,
                            chunk_seed(seed, index)))
    return ChunkPlan(frame_count, size, snapped_size, overlap, snapped_overlap, str(constraint), tuple(chunks))


def plan_warnings(plan: ChunkPlan) -> list[str]:
    """What snapping to the frame constraint changed, for any model. A plan of one chunk uses neither the
    context size nor the overlap, so it has nothing to warn about."""
    if len(plan.chunks) < 2:
        return []
    notes = []
    if plan.size != plan.size_requested:
        notes.append(f"context size {plan.size_requested} snapped to {plan.size} ({plan.constraint} frames)")
    if plan.overlap != plan.overlap_requested:
        notes.append(f"context overlap {plan.overlap_requested} snapped to {plan.overlap} ({plan.constraint})")
    return notes
