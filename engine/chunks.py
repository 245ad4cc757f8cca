"""One chunk through the render loop: decoded, diffused, blended, stored, sealed.

- decoded (a thread ahead): the window's source frames, its control videos and inpainting masks;
- diffused (the render's thread): known and pinned frames put in, the model, colour consistency;
- blended (a thread behind): crossfade, interpolation, compositing, the image sequence;
- stored (a thread behind): the segment's encoder started, the frames written into it from a thread of its own;
- sealed (a thread behind, in chunk order): the encoded segment put in place, the checkpoint, the chunk reported
  done, the caller asked whether to stop.

`run_chunks` joins them with the bounded hand-overs of engine/overlap.py. Each stage keeps to what it owns:
the decoder the source window, the render's thread the raw frames and the colour anchor, the blender the
final frames; what crosses from one to the next goes in the hand-over (and the last final frame, which a
dynamic reference needs, through `FinalFrames`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import structlog

from engine import faults
from engine.backends import Accelerator, ChunkRequest, ControlFrames
from engine.blend import segment_frames
from engine.checkpoint import WorkFolder
from engine.colour import ColourStats, colour_stats, match_colour
from engine.decode import SourceWindow
from engine.encode import SegmentEncoder
from engine.errors import Interrupted
from engine.guidance import Control, chunk_controls
from engine.job import ChunkRecord, Progress, RenderEvents, RenderJob
from engine.keyframes import Keyframe
from engine.masks import Compositor, MaskSource
from engine.overlap import Ahead, Behind, StageClock
from engine.plan import Chunk, ChunkPlan
from engine.sequence import SequenceWriter
from engine.stills import Still
from engine.timeline import Timeline

log = structlog.get_logger("hotshot.engine")
# How far the render's thread may run ahead of the last sealed chunk: chunk k is handed on once chunk k-2 is
# sealed, so two segments' encoders run side by side (one finishing while the next starts).
HANDED_OVER = 2


@dataclass
class Sinks:
    """Where finished frames go besides the MP4, and what they pass through first."""

    sequence: SequenceWriter | None = None
    compositor: Compositor | None = None
    masks: MaskSource | None = None


@dataclass
class Pinned:
    """Frames the request pins, by timeline position: shown exactly on their own frame."""

    style: Still | None = None
    keyframes: dict[int, Keyframe] = field(default_factory=dict)

    def in_chunk(self, chunk: Chunk, buffer: int) -> dict[int, np.ndarray]:
        """Position in the chunk's window -> the pinned frame there."""
        frames = {position - chunk.start: keyframe.still.frame for position, keyframe in self.keyframes.items()
                  if chunk.start <= position < chunk.end}
        if self.style is not None and chunk.index == 0:
            frames[buffer] = self.style.frame
        return frames


@dataclass
class RenderState:
    """What carries over from one chunk to the next (and is restored from checkpoints on resume).

    `previous_raw` and `anchor` belong to the diffusion stage, `last_final` and `frames_out` to the finishing
    stage (the diffusion stage reads `frames_out` for progress only)."""

    previous_raw: np.ndarray | None = None
    last_final: np.ndarray | None = None
    anchor: ColourStats | None = None
    frames_out: int = 0
    chunk_seconds: dict[int, float] = field(default_factory=dict)
    diffusion_seconds: float = 0.0  # time inside the model in this attempt (the rest of a chunk is frames work)


@dataclass
class Decoded:
    """A chunk's window as the decoder hands it over: source frames and what guides them."""

    chunk: Chunk
    sources: list[np.ndarray]
    keep: list[bool]
    pins: dict[int, np.ndarray]
    masks: list[np.ndarray] | None
    controls: list[ControlFrames]


@dataclass
class Blended:
    """A chunk's final frames (the output frames it completes), with what its checkpoint keeps."""

    chunk: Chunk
    raw: np.ndarray
    finals: list[np.ndarray]
    last_final: np.ndarray | None
    frames_out: int


@dataclass
class Diffused:
    """A chunk's raw frames as the model (and colour consistency) left them, with the previous chunk's."""

    chunk: Chunk
    raw: np.ndarray
    previous_raw: np.ndarray | None


class FinalFrames:
    """The last final frame after each finished chunk, handed from the finishing stage to the diffusion stage
    (a dynamic reference is the previous chunk's last output frame)."""

    def __init__(self, done_before: int, frame: np.ndarray | None) -> None:
        self._condition = threading.Condition()
        self._frames: dict[int, np.ndarray | None] = {done_before - 1: frame}
        self._failed = False

    def publish(self, index: int, frame: np.ndarray | None) -> None:
        with self._condition:
            self._frames = {index: frame}
            self._condition.notify_all()

    def fail(self) -> None:
        with self._condition:
            self._failed = True
            self._condition.notify_all()

    def after(self, index: int) -> np.ndarray | None:
        """The last final frame once chunk `index`'s frames are final; raises `StageFailed` if finishing failed."""
        with self._condition:
            self._condition.wait_for(lambda: index in self._frames or self._failed)
            if index not in self._frames:
                raise StageFailed
            return self._frames[index]


class StageFailed(Exception):
    """A finishing stage failed while the diffusion stage waited on it (its own error is raised instead)."""


class LockedEvents:
    """The caller's events, called from one stage at a time (a caller's sink need not be thread-safe)."""

    def __init__(self, events: RenderEvents) -> None:
        self._events = events
        self._lock = threading.Lock()

    def progress(self, progress: Progress) -> None:
        with self._lock:
            self._events.progress(progress)

    def chunk_done(self, record: ChunkRecord) -> None:
        with self._lock:
            self._events.chunk_done(record)

    def stop_requested(self) -> str | None:
        with self._lock:
            return self._events.stop_requested()


@dataclass
class ChunkLoop:
    """Everything the stages of one render share, read-only, and the state they hand on."""

    job: RenderJob
    plan: ChunkPlan
    timeline: Timeline
    backend: object
    pinned: Pinned
    reference: Still | None
    state: RenderState
    work: WorkFolder
    sinks: Sinks
    controls: list[Control]
    width: int
    height: int
    fps: str
    resume_at: int
    events: RenderEvents
    clock: StageClock = field(default_factory=StageClock)

    def __post_init__(self) -> None:
        self.finals = FinalFrames(self.resume_at, self.state.last_final)
        self._finished_at = time.monotonic()
        self._stored = threading.Condition()
        self._stored_up_to = self.resume_at - 1
        self._failed = False
        self._stop: tuple[int, str] | None = None

    def wait_stored(self, index: int) -> None:
        """Wait until chunk `index` is stored (raises `StageFailed` if a finishing stage failed first)."""
        with self._stored:
            self._stored.wait_for(lambda: self._stored_up_to >= index or self._failed)
            if self._stored_up_to < index:
                raise StageFailed

    def stopped(self) -> tuple[int, str] | None:
        """The chunk after which the render stops and why, once its caller asked (None: go on).

        A render stops between chunks when its caller asks: one stage at a time it asks after each chunk is
        stored, and so does the last stage with the overlap, in chunk order; the chunks after that one, already
        diffused, blended or being encoded meanwhile, are dropped (no segment, no checkpoint, not reported), so a
        render stops after the same chunk with or without the overlap."""
        with self._stored:
            return self._stop

    def _dropped(self, chunk: Chunk) -> bool:
        with self._stored:
            return self._stop is not None and chunk.index > self._stop[0]

    def _stage_failed(self) -> None:
        """A finishing stage failed: nothing after it is stored, so nobody may wait for it."""
        self.finals.fail()
        with self._stored:
            self._failed = True
            self._stored.notify_all()

    # 1. decoded
    def decoded(self, window: SourceWindow) -> Iterator[Decoded]:
        for chunk in self.plan.chunks[self.resume_at:]:
            with self.clock.stage("decode", chunk.index):
                sources = window.take(chunk.start, chunk.end)
                sources += [sources[-1]] * (chunk.render_frames - len(sources))
                keep = [index < chunk.known for index in range(chunk.render_frames)]
                pins = self.pinned.in_chunk(chunk, self.timeline.buffer)
                for place in pins:
                    keep[place] = True
                masks = chunk_masks(chunk, self.timeline, keep, self.sinks.masks) if self.sinks.masks else None
                controls = chunk_controls(self.controls, chunk, self.timeline)
            yield Decoded(chunk, sources, keep, pins, masks, controls)

    # 2. diffused
    def diffuse(self, decoded: Decoded) -> Diffused:
        job, chunk, state = self.job, decoded.chunk, self.state
        frames = list(decoded.sources)
        if chunk.known:
            offset = chunk.start - self.plan.chunks[chunk.index - 1].start
            frames[: chunk.known] = list(state.previous_raw[offset : offset + chunk.known])
        for place, frame in decoded.pins.items():
            frames[place] = frame

        def on_step(step: int, steps: int) -> None:
            self.events.progress(Progress(chunk.index + 1, len(self.plan.chunks), step, steps, state.frames_out,
                                          self.timeline.frame_count, self.resume_at))

        request = ChunkRequest(
            frames, decoded.keep, self.width, self.height, job.prompt, job.negative_prompt, job.steps, job.cfg,
            job.shift, chunk.seed,
            reference=self.chunk_reference(chunk),
            accelerator=Accelerator(job.accelerator_lora, job.accelerator_lora_scale) if job.accelerator_lora
            else None,
            mask=decoded.masks,
            strength=job.strength,
            controls=decoded.controls,
            sources=decoded.sources,
            on_step=on_step,
        )
        with self.clock.stage("diffuse", chunk.index):
            diffusing = time.monotonic()
            raw = self.backend.render_chunk(request)
            state.diffusion_seconds += time.monotonic() - diffusing
            faults.reached("chunk")
            expected = raw_shape(chunk, self.height, self.width)
            if raw.shape != expected:
                raise RuntimeError(f"backend returned frames of shape {raw.shape}, expected {expected}")

            # Colour consistency pulls every frame toward the anchor (the style frame, else the first chunk).
            if job.color_consistency > 0:
                if state.anchor is None:
                    state.anchor = colour_stats(raw[self.timeline.buffer :])
                    self.work.save_anchor(state.anchor.to_dict())
                matched = np.stack([match_colour(frame, state.anchor, job.color_consistency) for frame in raw])
                for place in decoded.pins:  # the frames the request pinned are shown as the model rendered them
                    matched[place] = raw[place]
                raw = matched
        diffused = Diffused(chunk, raw, state.previous_raw)
        state.previous_raw = raw
        return diffused

    def chunk_reference(self, chunk: Chunk) -> np.ndarray | None:
        """The appearance reference: the reference (else style) frame, or with a dynamic reference,
        after the first chunk, the previous chunk's last output frame."""
        if not self.job.model.capabilities.reference_frame:
            return None
        if chunk.index > 0 and self.job.dynamic_reference:
            return self.finals.after(chunk.index - 1)
        base = self.reference or self.pinned.style
        return base.frame if base is not None else None

    # 3. finished: blended (final frames, the image sequence), then stored (checkpoint, encoded segment)
    def blend(self, diffused: Diffused) -> Blended:
        chunk = diffused.chunk
        previous = self.plan.chunks[chunk.index - 1] if chunk.index else None
        with structlog.contextvars.bound_contextvars(chunk=chunk.index), self.clock.stage("blend", chunk.index):
            try:
                finals = list(output_frames(chunk, segment_frames(chunk, diffused.raw, previous,
                                                                  diffused.previous_raw),
                                            self.timeline, self.state, self.sinks))
            except BaseException:
                self._stage_failed()
                raise
        self.finals.publish(chunk.index, self.state.last_final)
        return Blended(chunk, diffused.raw, finals, self.state.last_final, self.state.frames_out)

    def store(self, blended: Blended) -> Encoding | None:
        """Start encoding the chunk's segment (the frames are written from a thread of the encoder's own); None
        if the chunk is dropped (the render stops after an earlier one)."""
        if self._dropped(blended.chunk):
            return None
        try:
            began = self.clock.now()
            chunk = blended.chunk
            encoder = SegmentEncoder(self.width, self.height, self.fps, self.work.segment_path(chunk.index),
                                     fault_point="chunk", codec=self.job.output_codec,
                                     last=chunk.index == self.plan.chunks[-1].index)
            encoder.feed_behind(blended.finals)
        except BaseException:
            self._stage_failed()
            raise
        return Encoding(blended, encoder, began)

    def seal(self, encoding: Encoding) -> None:
        """Once the chunk's segment is encoded: put it in place with the checkpoint, report the chunk done and
        ask the caller whether to stop."""
        if self._dropped(encoding.blended.chunk):
            encoding.encoder.abort()
            return
        try:
            self._seal(encoding)
        except BaseException:
            self._stage_failed()
            raise

    def _seal(self, encoding: Encoding) -> None:
        blended, work = encoding.blended, self.work
        chunk = blended.chunk
        with structlog.contextvars.bound_contextvars(chunk=chunk.index):
            count = encoding.encoder.finish()
            self.clock.add("encode", chunk.index, encoding.began)
            with self.clock.stage("checkpoint", chunk.index):
                work.save_raw(chunk.index, blended.raw, raw_needed_from(self.plan, chunk))
                work.save_final(chunk.index, blended.last_final)
                work.drop_old_raw(chunk.index)
            now = time.monotonic()
            seconds, self._finished_at = now - self._finished_at, now
            self.state.chunk_seconds[chunk.index] = seconds
            faults.reached("chunk")
            self.events.chunk_done(ChunkRecord(chunk.index, self.timeline.sources[chunk.start],
                                               self.timeline.sources[chunk.end - 1], chunk.seed, seconds,
                                               str(work.raw_path(chunk.index)), str(work.segment_path(chunk.index))))
            log.info("chunk done", seconds=round(seconds, 3), diffused=chunk.render_frames, output_frames=count,
                     first_output=self.job.frame_range[0] + blended.frames_out - count if count else None)
        reason = self.events.stop_requested()
        with self._stored:
            if reason and chunk.index < self.plan.chunks[-1].index:
                self._stop = (chunk.index, reason)
            self._stored_up_to = chunk.index
            self._stored.notify_all()


@dataclass
class Encoding:
    """A chunk whose segment is being encoded, on its way to be sealed."""

    blended: Blended
    encoder: SegmentEncoder
    began: float

    def abort(self) -> None:
        self.encoder.abort()


def raw_needed_from(plan: ChunkPlan, chunk: Chunk) -> int:
    """The first frame of `chunk`'s raw output the next chunk reads (its known frames and crossfade): the
    checkpoint keeps only the frames from there on."""
    if chunk.index + 1 >= len(plan.chunks):
        return chunk.render_frames
    return plan.chunks[chunk.index + 1].start - chunk.start


def run_chunks(loop: ChunkLoop, window: SourceWindow, overlap: bool, stop_decoding: Callable[[], None]) -> None:
    """Render the chunks from `loop.resume_at` on, the stages side by side when `overlap` (engine/overlap.py).

    The first error of any stage is raised here as it was raised there; before this returns or raises, the
    chunks already diffused are finished (checkpointed and reported) or, after a stop, dropped, and the decoder
    is stopped."""
    ahead = Ahead(lambda: loop.decoded(window), overlap, "hotshot-decode")
    sealing = Behind(loop.seal, overlap, "hotshot-seal", drop=Encoding.abort)
    storing = Behind(lambda blended: _hand_on(loop.store(blended), sealing), overlap, "hotshot-store")
    blending = Behind(lambda diffused: storing.put(loop.blend(diffused)), overlap, "hotshot-blend")
    stages = (blending, storing, sealing)
    try:
        for decoded in ahead:
            blending.check()
            index = decoded.chunk.index
            stop = loop.stopped()
            reason = stop[1] if stop else loop.events.stop_requested()
            if reason:
                _finish(stages)  # the chunks handed over are finished (or dropped after a stop) before it stops
                raise Interrupted(*_stopped_at(loop, index, reason))
            with structlog.contextvars.bound_contextvars(chunk=index):
                try:
                    diffused = loop.diffuse(decoded)
                    if index - HANDED_OVER >= loop.resume_at:
                        loop.wait_stored(index - HANDED_OVER)
                except StageFailed:
                    _finish(stages)  # raises the error of the stage that failed
                    raise
            stop = loop.stopped()
            if stop is not None:
                _finish(stages)
                raise Interrupted(*_stopped_at(loop, index, stop[1]))
            blending.put(diffused)
        _finish(stages)
        stop = loop.stopped()
        if stop is not None:  # the chunks after the one it stopped after were dropped
            raise Interrupted(*_stopped_at(loop, len(loop.plan.chunks), stop[1]))
    finally:
        for stage in stages:
            stage.abandon()
        ahead.close(stop_decoding)


def _hand_on(encoding: Encoding | None, sealing: Behind) -> None:
    if encoding is None:
        return
    try:
        sealing.put(encoding)
    except BaseException:
        encoding.abort()
        raise


def _stopped_at(loop: ChunkLoop, next_index: int, reason: str) -> tuple[str, int]:
    """Why the render stops and how many chunks are done: up to the one the stop came after, else every
    chunk before `next_index` (all those handed over were finished)."""
    stop = loop.stopped()
    return (stop[1], stop[0] + 1) if stop is not None else (reason, next_index)


def _finish(stages: tuple[Behind, ...]) -> None:
    """Wait until every chunk handed over is through every stage; raise the first error of any."""
    error: BaseException | None = None
    for stage in stages:
        try:
            stage.finish()
        except BaseException as exc:  # noqa: BLE001  the later stages are still waited for, then it is raised
            error = error or exc
    if error is not None:
        raise error


def output_frames(chunk: Chunk, finals: Iterator[np.ndarray], timeline: Timeline, state: RenderState,
                  sinks: Sinks) -> Iterator[np.ndarray]:
    """The output frames a chunk completes: warm-up frames dropped, interpolated frames filled in,
    the source composited back outside an inpainting mask."""
    from engine.interpolate import interpolate_frame

    for position, frame in zip(range(chunk.emit_start, chunk.emit_end), finals, strict=True):
        index = timeline.output_index(position)
        if index is None:
            continue
        previous_index = timeline.output_index(position - 1) if position > timeline.buffer else None
        if previous_index is not None:
            gap = index - previous_index
            for between in range(previous_index + 1, index):
                middle = interpolate_frame(state.last_final, frame, (between - previous_index) / gap)
                yield _emit(between, middle, timeline.first, state, sinks)
        state.last_final = _emit(index, frame, timeline.first, state, sinks)
        yield state.last_final


def _emit(index: int, frame: np.ndarray, first: int, state: RenderState, sinks: Sinks) -> np.ndarray:
    if sinks.compositor is not None:
        frame = sinks.compositor.apply(index, frame)
    if sinks.sequence is not None:
        sinks.sequence.write(first + index, frame)
    state.frames_out = index + 1
    return frame


def chunk_masks(chunk: Chunk, timeline: Timeline, keep: list[bool], masks: MaskSource) -> list[np.ndarray]:
    """The inpainting mask of each frame of the window (kept frames: nothing to regenerate, nothing read, so the
    mask is read forward only, each frame once)."""
    positions = list(range(chunk.start, chunk.end))
    positions += [positions[-1]] * (chunk.render_frames - len(positions))
    blank = np.zeros((masks.height, masks.width), np.float32)
    return [blank if kept else masks.at(timeline.sources[position])
            for position, kept in zip(positions, keep, strict=True)]


def raw_shape(chunk: Chunk, height: int, width: int) -> tuple[int, int, int, int]:
    return (chunk.render_frames, height, width, 3)
