"""`render()`: one resolved job in, one MP4 and its Render Info out."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import structlog

from engine.backends import ChunkRequest
from engine.blend import segment_frames
from engine.checkpoint import WorkFolder
from engine.decode import FrameReader
from engine.devices import resolve_device
from engine.encode import encode_segment, mux_output
from engine.errors import FrameRangeError, Interrupted, MediaError
from engine.files import write_json_atomic
from engine.geometry import output_dims
from engine.job import ChunkRecord, Progress, RenderEvents, RenderJob, RenderResult, SilentEvents
from engine.manifest import build_manifest
from engine.models import ModelCache
from engine.plan import Chunk, ChunkPlan, plan_chunks
from engine.probe import probe

log = structlog.get_logger("hotshot.engine")


def render(job: RenderJob, events: RenderEvents | None = None, cache: ModelCache | None = None) -> RenderResult:
    """Render `job` chunk by chunk, resuming from its checkpoints, and publish the output."""
    events = events or SilentEvents()
    cache = cache or ModelCache()
    started = time.monotonic()
    warnings: list[str] = []

    # 1. Check inputs: the source is the file the job was resolved against, the range fits.
    check_source_unchanged(job)
    source = probe(job.source)
    first, last = job.frame_range
    if not 0 <= first <= last < source.frame_count:
        raise FrameRangeError(first, last, source.frame_count)

    # 2. Work out the output size and the chunk plan.
    width, height = output_dims(source.width, source.height, job.output_size, job.model.resolution_multiple)
    plan = plan_chunks(job.frame_count, job.context_size, job.context_overlap, job.model.constraint, job.seed)
    warnings += plan_warnings(job, plan)
    if not source.has_audio:
        warnings.append("the source has no audio; the output has none")

    # 3. Load the model (kept in the worker's cache between jobs).
    device = resolve_device(job.device)
    events.progress(Progress(0, len(plan.chunks), 0, job.steps, 0, plan.frame_count, phase="loading model"))
    backend = cache.get(job.model, device)

    # 4. Find the checkpoint to resume from.
    work = WorkFolder(job.work_dir)
    work.prepare()
    resume_at, previous_raw = work.resume_point(
        set(job.done_chunks), len(plan.chunks), lambda index: raw_shape(plan.chunks[index], height, width)
    )
    chunk_seconds = {index: job.done_chunks.get(index, 0.0) for index in range(resume_at)}
    if resume_at:
        log.info("resuming", chunks_done=resume_at, chunks=len(plan.chunks))

    # 5. Render chunk by chunk: decode, diffuse, checkpoint, encode the segment.
    if resume_at < len(plan.chunks):
        decode_from = plan.chunks[resume_at].start
        with FrameReader(job.source, first + decode_from, last, width, height) as reader:
            window = SourceWindow(iter(reader), decode_from)
            for chunk in plan.chunks[resume_at:]:
                reason = events.stop_requested()
                if reason:
                    raise Interrupted(reason, chunk.index)
                with structlog.contextvars.bound_contextvars(chunk=chunk.index):
                    previous = plan.chunks[chunk.index - 1] if chunk.index else None
                    chunk_started = time.monotonic()
                    conditioning = window.take(chunk.start, chunk.end)
                    raw = diffuse(backend, job, plan, chunk, conditioning, previous, previous_raw,
                                  width, height, events)
                    work.save_raw(chunk.index, raw)
                    events.progress(Progress(chunk.index + 1, len(plan.chunks), job.steps, job.steps,
                                             chunk.emit_start, plan.frame_count, resume_at, phase="encoding"))
                    encode_segment(segment_frames(chunk, raw, previous, previous_raw), width, height, source.fps,
                                   work.segment_path(chunk.index))
                    work.drop_old_raw(chunk.index)
                    seconds = time.monotonic() - chunk_started
                    chunk_seconds[chunk.index] = seconds
                    events.chunk_done(ChunkRecord(chunk.index, first + chunk.start, first + chunk.end - 1,
                                                  chunk.seed, seconds, str(work.raw_path(chunk.index)),
                                                  str(work.segment_path(chunk.index))))
                    log.info("chunk done", seconds=round(seconds, 3), frames=chunk.render_frames)
                    previous_raw = raw

    # 6. Join the segments with the source audio into the output MP4.
    check_source_unchanged(job)
    events.progress(Progress(len(plan.chunks), len(plan.chunks), job.steps, job.steps, plan.frame_count,
                             plan.frame_count, resume_at, phase="writing output"))
    mux_output([work.segment_path(chunk.index) for chunk in plan.chunks], source.fps, plan.frame_count,
               job.output, str(job.source) if source.has_audio else None, first, job.work_dir)

    # 7. Write the Render Info manifest beside it.
    output = probe(job.output)
    seconds = time.monotonic() - started
    manifest = build_manifest(job, source, output, plan, device, chunk_seconds, set(range(resume_at)),
                              seconds, warnings)
    write_json_atomic(job.manifest, manifest)
    return RenderResult(str(job.output), str(job.manifest), output.frame_count, width, height,
                        len(plan.chunks) - resume_at, resume_at, seconds, manifest)


def diffuse(backend, job: RenderJob, plan: ChunkPlan, chunk: Chunk, conditioning: list[np.ndarray],
            previous: Chunk | None, previous_raw: np.ndarray | None, width: int, height: int,
            events: RenderEvents) -> np.ndarray:
    """Diffuse one chunk; the frames it shares with the previous chunk are given as known."""
    frames = list(conditioning)
    if chunk.known:
        offset = chunk.start - previous.start
        frames[: chunk.known] = list(previous_raw[offset : offset + chunk.known])
    frames += [frames[-1]] * (chunk.render_frames - len(frames))

    def on_step(step: int, steps: int) -> None:
        events.progress(Progress(chunk.index + 1, len(plan.chunks), step, steps, chunk.emit_start,
                                 plan.frame_count))

    request = ChunkRequest(frames, chunk.known, width, height, job.prompt, job.negative_prompt, job.steps,
                           job.cfg, job.shift, chunk.seed, on_step)
    raw = backend.render_chunk(request)
    expected = raw_shape(chunk, height, width)
    if raw.shape != expected:
        raise RuntimeError(f"backend returned frames of shape {raw.shape}, expected {expected}")
    return raw


def raw_shape(chunk: Chunk, height: int, width: int) -> tuple[int, int, int, int]:
    return (chunk.render_frames, height, width, 3)


def check_source_unchanged(job: RenderJob) -> None:
    """Fail if the source is gone or is no longer the file the job was resolved against."""
    try:
        stat = Path(job.source).stat()
    except FileNotFoundError as exc:
        raise MediaError(str(job.source), "it was deleted before the render finished") from exc
    if stat.st_size != job.source_size or stat.st_mtime_ns != job.source_mtime_ns:
        raise MediaError(str(job.source), "it was replaced or modified after the render was queued; "
                                          "re-save the request to render the new file")


def plan_warnings(job: RenderJob, plan: ChunkPlan) -> list[str]:
    notes = []
    if plan.size != plan.size_requested and plan.frame_count > plan.size:
        notes.append(f"context size {plan.size_requested} snapped to {plan.size} ({plan.constraint} frames)")
    if plan.overlap != plan.overlap_requested:
        notes.append(f"context overlap {plan.overlap_requested} snapped to {plan.overlap} ({plan.constraint})")
    return notes


class SourceWindow:
    """Source frames read once, in order, kept only while a chunk may still need them."""

    def __init__(self, frames: Iterator[np.ndarray], first_index: int = 0) -> None:
        self._frames = frames
        self._held: deque[np.ndarray] = deque()
        self._held_from = first_index

    def take(self, start: int, end: int) -> list[np.ndarray]:
        while self._held_from < start:
            if self._held:
                self._held.popleft()
            else:
                next(self._frames)
            self._held_from += 1
        while self._held_from + len(self._held) < end:
            self._held.append(next(self._frames))
        return list(self._held)[start - self._held_from : end - self._held_from]
