"""The render timeline: which source frame the model sees at each position.

The timeline starts with `start_frame_buffer` warm-up positions (the source
frames just before the range, or repeats of the clip's first frame where the
range starts too early) whose output is discarded, then the range itself. With
interpolation only every other frame of the range is diffused (plus the last,
so nothing is extrapolated) and warm-up frames are spaced the same way; the
frames in between are reconstructed from their diffused neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import SettingsError
from engine.plan import ChunkPlan, FrameConstraint, plan_chunks


def diffused_indices(frame_count: int, interpolation: bool = True) -> list[int]:
    """Range frames (0-based) that are diffused: all, or every other one plus the last."""
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    if not interpolation:
        return list(range(frame_count))
    indices = list(range(0, frame_count, 2))
    if indices[-1] != frame_count - 1:
        indices.append(frame_count - 1)
    return indices


@dataclass(frozen=True)
class Timeline:
    first: int
    frame_count: int
    buffer: int
    sources: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def positions(self) -> int:
        return len(self.sources)

    def output_index(self, position: int) -> int | None:
        """The range frame a timeline position renders, or None for a warm-up position."""
        return None if position < self.buffer else self.outputs[position - self.buffer]


def build_timeline(first: int, last: int, buffer: int, interpolation: bool) -> Timeline:
    count = last - first + 1
    outputs = diffused_indices(count, interpolation)
    spacing = 2 if interpolation else 1
    warm_up = [max(0, first - spacing * (buffer - i)) for i in range(buffer)]
    return Timeline(first, count, buffer, tuple(warm_up + [first + index for index in outputs]), tuple(outputs))


def plan_timeline(timeline: Timeline, size: int, overlap: int, constraint: FrameConstraint, seed: int) -> ChunkPlan:
    """The chunk plan over the timeline, refusing a warm-up that would leave the first chunk nothing to show."""
    plan = plan_chunks(timeline.positions, size, overlap, constraint, seed)
    first_chunk_output = plan.chunks[0].emit_end
    if timeline.buffer >= first_chunk_output:
        raise SettingsError(
            f"context.start_frame_buffer {timeline.buffer} is too large for a context of {plan.size} frames "
            f"with an overlap of {plan.overlap}; use at most {first_chunk_output - 1}"
        )
    return plan
