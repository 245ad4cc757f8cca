"""Painted keyframes: images a render must show at given frames of the range.

Each keyframe is pinned where its source frame falls in the timeline: the
model gets it as a frame to keep (Wan VACE: a known frame, mask black there;
keyframe-flow: an anchor whose paint it carries along the motion), and the
output shows it unchanged on its own frame. Its content hash goes into the
Render Info, like the style frame's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import SettingsError
from engine.plan import ChunkPlan
from engine.stills import Still, StillSpec, load_still
from engine.timeline import Timeline


class KeyframeSpec(BaseModel):
    """A painted image for source frame `frame`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame: int = Field(ge=0)
    path: Path


@dataclass(frozen=True)
class Keyframe:
    frame: int
    still: Still

    def to_manifest(self) -> dict:
        return {"frame": self.frame, **self.still.to_manifest()}


def check_keyframes(frames: list[int], timeline: Timeline, style_frame: bool) -> None:
    """Refuse keyframes the render could not show on their own frame."""
    first, last = timeline.first, timeline.first + timeline.frame_count - 1
    seen: set[int] = set()
    for frame in frames:
        if frame in seen:
            raise SettingsError(f"keyframes: frame {frame} is given twice; give one image per frame")
        seen.add(frame)
        if not first <= frame <= last:
            raise SettingsError(f"keyframes: frame {frame} is outside the frame range [{first}, {last}]; "
                                "give keyframes inside the range")
        if style_frame and frame == first:
            raise SettingsError(f"keyframes: frame {frame} is the first frame of the range, where the style_frame "
                                "is shown; give that image as the style_frame or drop one of them")
        if frame - first not in timeline.outputs:
            raise SettingsError(f"keyframes: frame {frame} is one that interpolation reconstructs rather than "
                                f"renders; with interpolation, use frames an even number of frames after {first} "
                                f"(or the last, {last}), or turn interpolation off")


def keyframe_positions(frames: list[int], timeline: Timeline) -> dict[int, int]:
    """Timeline position -> the keyframe (index into `frames`) pinned there."""
    wanted = {frame - timeline.first: index for index, frame in enumerate(frames)}
    return {timeline.buffer + place: wanted[output] for place, output in enumerate(timeline.outputs)
            if output in wanted}


def check_painted_windows(plan: ChunkPlan, pinned: set[int], model_id: str) -> None:
    """For a model that only carries paint: every window must hold a painted frame (a pinned position, or the
    previous window's output over the overlap)."""
    for chunk in plan.chunks:
        if chunk.known or any(chunk.start <= position < chunk.end for position in pinned):
            continue
        if chunk.index == 0:
            raise SettingsError(f"model {model_id!r} carries painted frames and the first context window (timeline "
                                f"positions {chunk.start}-{chunk.end - 1}) holds none; give a style_frame, a "
                                "keyframe in that window, or a larger context.size")
        raise SettingsError(f"model {model_id!r} carries painted frames from one context window to the next over "
                            "their overlap; give a context.overlap of at least 1")


def load_keyframes(specs: list[KeyframeSpec], source: Path, width: int, height: int) -> list[Keyframe]:
    return [Keyframe(spec.frame, load_still(StillSpec(path=spec.path), source, width, height)) for spec in specs]
