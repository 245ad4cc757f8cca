"""The contract between whoever schedules renders and the engine.

The caller hands `render()` one fully resolved `RenderJob` and a `RenderEvents`
sink; the engine reports progress and finished chunks through it and returns a
`RenderResult`. Everything here crosses a process boundary as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from engine.captions import CaptionerSpec
from engine.catalog import ControlType, ModelSpec
from engine.codecs import CodecName
from engine.controls.catalog import ControlCatalog
from engine.keyframes import KeyframeSpec
from engine.masks import MaskSpec
from engine.stills import StillSpec


class ControlSpec(BaseModel):
    """One control signal a Transform render follows, and how strongly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ControlType
    strength: float = Field(default=1.0, ge=0, le=2)


class RenderJob(BaseModel):
    """Everything one render needs, resolved: no defaults are looked up later."""

    model_config = ConfigDict(extra="forbid")

    job_id: int
    render_id: str
    source: Path
    source_size: int = Field(description="size in bytes when the job was resolved; a change fails the render")
    source_mtime_ns: int
    source_inode: int | None = Field(default=None, description="the file's inode then; None: not checked")
    source_ctime_ns: int | None = Field(default=None, description="its change time then (any write or rename "
                                                                    "moves it, whatever the modification time says)")
    frame_range: tuple[int, int]
    output_size: int
    model: ModelSpec
    prompt: str
    negative_prompt: str
    steps: int
    cfg: float
    seed: int
    shift: float
    context_size: int
    context_overlap: int
    start_frame_buffer: int = Field(default=1, ge=0)
    dynamic_reference: bool = True
    style_frame: StillSpec | None = None
    reference_frame: StillSpec | None = None
    keyframes: list[KeyframeSpec] = Field(default_factory=list, description="painted images pinned at their frames")
    mask: MaskSpec | None = None
    controls: list[ControlSpec] = Field(default_factory=list)
    control_catalog: ControlCatalog | None = None
    control_cache: Path | None = Field(default=None, description="where control videos are cached, per source")
    hash_cache: Path | None = Field(default=None, description="where file hashes are kept between renders")
    auto_prompt: bool = False
    captioner: CaptionerSpec | None = None
    negative_from_model: bool = Field(default=True, description="the negative prompt is the model's default, "
                                                                "which auto prompt may adapt to the scene")
    strength: float | None = Field(default=None, gt=0, le=1)
    interpolation: bool = False
    color_consistency: float = Field(default=0.0, ge=0.0, le=1.0)
    image_sequence: Literal["png", "exr"] | None = None
    first_frame_number: int = 1001
    output_codec: CodecName = "h264"
    accelerator_lora: str | None = None
    accelerator_lora_scale: float = 1.0
    output: Path
    manifest: Path
    work_dir: Path
    device: str = "auto"
    device_memory: int | None = Field(default=None, gt=0, description="bytes the job may use on its device, "
                                      "instead of what is detected (the device_memory_gb setting)")
    overlap: bool = Field(default=True, description="decode the next chunk and finish the last one beside the "
                                                    "diffusion of the current one; false: one stage at a time, "
                                                    "in the render's own thread (the same output, for debugging)")
    done_chunks: dict[int, float] = Field(
        default_factory=dict, description="chunks recorded as finished earlier, with their render seconds"
    )
    manifest_context: dict[str, Any] = Field(
        default_factory=dict, description="facts the caller wants in the Render Info (request, lineage, settings)"
    )

    @property
    def frame_count(self) -> int:
        return self.frame_range[1] - self.frame_range[0] + 1

    @property
    def sequence_folder(self) -> Path:
        """Where an image sequence is published: a folder named after the render, beside it."""
        return self.output.parent / self.render_id

    @property
    def sequence_staging(self) -> Path:
        return self.output.parent / f".{self.render_id}.frames.part"


@dataclass(frozen=True)
class Progress:
    """Where a render stands; `chunk` counts from 1."""

    chunk: int
    chunks: int
    step: int
    steps: int
    frames_done: int
    frames_total: int
    chunks_resumed: int = 0
    phase: str = "diffusing"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChunkRecord:
    """A finished, checkpointed chunk."""

    index: int
    start: int
    end: int
    seed: int
    seconds: float
    raw_path: str
    segment_path: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RenderResult:
    output: str
    manifest: str
    frames: int
    width: int
    height: int
    chunks_rendered: int
    chunks_resumed: int
    seconds: float
    manifest_data: dict = field(default_factory=dict)
    output_info: dict = field(default_factory=dict)  # the output's probe, taken before it was published

    def to_dict(self) -> dict:
        return asdict(self)


class RenderEvents(Protocol):
    """What the engine tells its caller while it works, and asks of it."""

    def progress(self, progress: Progress) -> None:
        """Where the render stands; called after every diffusion step.

        It may raise `Interrupted` to stop at once (a cancel): the unfinished
        chunk is dropped and earlier chunks stay checkpointed.
        """
        ...

    def chunk_done(self, record: ChunkRecord) -> None: ...

    def stop_requested(self) -> str | None:
        """A reason to stop after the current chunk, or None to go on."""
        ...


class SilentEvents:
    """Events sink for callers that only want the result."""

    def progress(self, progress: Progress) -> None:
        pass

    def chunk_done(self, record: ChunkRecord) -> None:
        pass

    def stop_requested(self) -> str | None:
        return None
