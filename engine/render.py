"""`render()`: one resolved job in, one MP4 (and optionally an image sequence) and its Render Info out."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from engine import faults
from engine.checkpoint import WorkFolder
from engine.chunks import (
    ChunkLoop,
    LockedEvents,
    Pinned,
    RenderState,
    Sinks,
    raw_needed_from,
    raw_shape,
    run_chunks,
)
from engine.codecs import output_codec
from engine.colour import ColourStats, colour_stats
from engine.controls import unload_models
from engine.decode import FrameReader, SourceWindow, timeline_frames
from engine.devices import resolve_device
from engine.encode import AudioCut, AudioEncoder, carries_audio, mux_output
from engine.errors import FrameRangeError, MediaError, SettingsError
from engine.estimate import render_work
from engine.files import write_json_atomic
from engine.geometry import output_dims
from engine.guidance import prepare_controls, write_previews, write_prompt
from engine.job import Progress, RenderEvents, RenderJob, RenderResult, SilentEvents
from engine.keyframes import check_keyframes, check_painted_windows, keyframe_positions, load_keyframes
from engine.manifest import build_manifest, record_inputs
from engine.masks import Compositor, MaskSource
from engine.memory import Shape as MemoryShape
from engine.memory import apply as apply_memory_plan
from engine.memory import plan as plan_memory
from engine.models import ModelCache
from engine.overlap import StageClock
from engine.plan import Chunk, ChunkPlan, plan_warnings
from engine.probe import probe
from engine.sequence import SequenceWriter
from engine.source_file import check_name_unchanged, opened_source
from engine.stills import Still, load_still
from engine.timecode import parse as parse_timecode
from engine.timeline import Timeline, build_timeline, plan_timeline
from engine.timing import frame_times, source_timing, timing_warnings

log = structlog.get_logger("hotshot.engine")


def render(job: RenderJob, events: RenderEvents | None = None, cache: ModelCache | None = None) -> RenderResult:
    """Render `job` chunk by chunk, resuming from its checkpoints, and publish the outputs.

    The source is opened once, checked to be the file the job was queued with, and read through that open
    file for the whole render (engine/source_file.py)."""
    with opened_source(job.source, job.source_size, job.source_mtime_ns, job.source_inode,
                       job.source_ctime_ns) as reading:
        try:
            return _render(job, reading, events or SilentEvents(), cache or ModelCache())
        except MediaError as exc:
            if exc.path != str(reading):
                raise
            raise MediaError(str(job.source), exc.reason) from exc  # the user's name, not /proc/<pid>/fd/<n>


def _render(job: RenderJob, reading: Path, events: RenderEvents, cache: ModelCache) -> RenderResult:
    started, cpu_started = time.monotonic(), time.process_time()
    warnings: list[str] = []
    named = job
    job = job.model_copy(update={"source": reading})  # what reads frames reads the checked file

    # 1. Check inputs: the source was checked when it was opened; the range fits.
    with ThreadPoolExecutor(1, thread_name_prefix="hotshot-probe") as beside:  # two ffprobes side by side
        reading_times = beside.submit(frame_times, str(job.source), 120.0)
        source = probe(job.source)
    first, last = job.frame_range
    if not 0 <= first <= last < source.frame_count:
        raise FrameRangeError(first, last, source.frame_count)

    # 2. Work out the output size, rate and timecode, the timeline and the chunk plan.
    width, height = output_dims(source.width, source.height, job.output_size, job.model.resolution_multiple)
    codec = output_codec(job.output_codec)
    codec.check_size(width, height)
    timing = source_timing(source, first, last, read=reading_times.result())
    warnings += timing_warnings(source, timing)
    start_timecode = parse_timecode(source.timecode, source.fps) if source.timecode else None
    if source.timecode and start_timecode is None:
        warnings.append(f"the source's timecode {source.timecode!r} is not a timecode at {source.fps} fps; "
                        "the output has none")
    timeline = build_timeline(first, last, job.start_frame_buffer, job.interpolation)
    plan = plan_timeline(timeline, job.context_size, job.context_overlap, job.model.constraint, job.seed)
    warnings += plan_warnings(plan)
    if job.keyframes and not job.model.capabilities.keyframes:
        raise SettingsError(f"model {job.model.id!r} does not support keyframes; choose a model that does")
    check_keyframes([keyframe.frame for keyframe in job.keyframes], timeline, job.style_frame is not None)
    positions = keyframe_positions([keyframe.frame for keyframe in job.keyframes], timeline)
    if job.model.capabilities.needs_paint:
        painted = set(positions) | ({timeline.buffer} if job.style_frame else set())
        check_painted_windows(plan, painted, job.model.id)
    if not source.has_audio:
        warnings.append("the source has no audio; the output has none")
    warnings += source.colour.warnings()
    if source.alpha:
        warnings.append(f"the source has an alpha channel ({source.codec}, {source.pixel_format}); it is not carried "
                        "through: the output is opaque, showing the colour stored under transparent areas")

    # 3. Load the stills: the style frame pinned as the first output frame, the appearance reference.
    style = load_still(job.style_frame, job.source, width, height, source.colour) if job.style_frame else None
    reference = load_still(job.reference_frame, job.source, width, height, source.colour) \
        if job.reference_frame else None
    keyframes = load_keyframes(job.keyframes, job.source, width, height)
    pinned = Pinned(style, {position: keyframes[index] for position, index in positions.items()})
    aspect = source.width / source.height
    sinks = Sinks(masks=MaskSource(job.mask, width, height, aspect) if job.mask else None)

    # 4. Prepare what guides the render: control videos (cached) and the written prompt.
    device = resolve_device(job.device)
    work = WorkFolder(job.work_dir, codec.suffix)
    work.prepare()
    events.progress(Progress(0, len(plan.chunks), 0, job.steps, 0, timeline.frame_count, phase="preparing"))
    parts = Stopwatch()
    with parts.part("controls"):
        controls = prepare_controls(job, timeline, width, height, device)
    with parts.part("auto_prompt"):
        written = write_prompt(job, work, cache, device)
    if controls or job.auto_prompt:  # the control and people-counting models, before the diffusion model loads
        unload_models()
    if written:
        job = job.model_copy(update={"prompt": written["prompt"], "negative_prompt": written["negative_prompt"]})

    # 5. Plan the memory (VAE tiling or CPU offload when the chunk would not fit, or refuse), then load the model
    #    (kept in the worker's cache between jobs).
    shape = memory_shape(plan, width, height, job.cfg, (reference or style) is not None)
    memory = plan_memory(job.model, device, shape, job.device_memory, cache.resident_bytes(job.model, device))
    model_load = job.model.id not in cache
    events.progress(Progress(0, len(plan.chunks), 0, job.steps, 0, timeline.frame_count,
                             phase="loading model" if model_load else "starting"))
    with parts.part("load"):
        backend = cache.get(job.model.model_copy(update={"offload": memory.offload or job.model.offload}), device)
        apply_memory_plan(backend, memory, device)

    # 6. Find the checkpoint to resume from.
    resume_at, previous_raw, last_final = work.resume_point(
        set(job.done_chunks), len(plan.chunks), lambda index: raw_shape(plan.chunks[index], height, width),
        (height, width, 3), lambda index: raw_needed_from(plan, plan.chunks[index]),
    )
    state = RenderState(previous_raw, last_final)
    state.chunk_seconds = {index: job.done_chunks.get(index, 0.0) for index in range(resume_at)}
    state.anchor = colour_anchor(job, style, work)
    if resume_at:
        # Every chunk may be done already: the render stopped while writing the output or its Render Info.
        state.frames_out = output_frames_before(plan.chunks[resume_at], timeline) \
            if resume_at < len(plan.chunks) else timeline.frame_count
        log.info("resuming", chunks_done=resume_at, chunks=len(plan.chunks))
    if job.image_sequence:
        sinks.sequence = SequenceWriter(job.sequence_staging, job.sequence_folder, job.render_id,
                                        job.image_sequence, job.first_frame_number, start_timecode, timing.output_fps)
        if resume_at and not sinks.sequence.holds(first, state.frames_out):
            log.warning("the image sequence's earlier frames are gone; rendering from the first chunk")
            resume_at, state = 0, RenderState(anchor=state.anchor)

    # 7. Render chunk by chunk: decode the next chunk's window, diffuse, correct colour; then, beside the next
    #    chunk's diffusion, blend, checkpoint and encode the segment (engine/chunks.py).
    clock = StageClock()
    # The source's whole audio stream in a codec the output takes is copied as it is at the join; any other is
    # encoded beside the chunks, so that the join at the end only copies it (engine/encode.py).
    cut = AudioCut(str(job.source), timing.audio_start, timing.audio_duration,
                   carries_audio(source, timing.audio_start, timing.audio_duration, timing.output_fps, codec.name))
    audio = AudioEncoder(cut, job.work_dir, codec.name) if source.has_audio and not cut.carried else None
    try:
        if resume_at < len(plan.chunks):
            from_position = plan.chunks[resume_at].start
            decode_from = timeline.sources[from_position]
            if job.mask:
                sinks.compositor = Compositor(MaskSource(job.mask, width, height, aspect), job.source, first, last,
                                              state.frames_out, source.colour)
            loop = ChunkLoop(job, plan, timeline, backend, pinned, reference, state, work, sinks, controls, width,
                             height, timing.output_fps, resume_at, LockedEvents(events), clock)
            try:
                with FrameReader(job.source, decode_from, last, width, height, colour=source.colour) as reader:
                    window = SourceWindow(timeline_frames(iter(reader), decode_from, timeline, from_position),
                                          from_position)
                    run_chunks(loop, window, job.overlap, reader.stop)
            finally:
                if sinks.compositor:
                    sinks.compositor.close()
        if sinks.masks:
            sinks.masks.close()
            warnings += sinks.masks.warnings

        # 8. Join the segments with the source audio into the output MP4; publish the image sequence and the
        #    control previews.
        faults.reached("after-chunks")
        check_name_unchanged(named.source, job.source_size, job.source_mtime_ns, job.source_inode, job.source_ctime_ns)
        events.progress(Progress(len(plan.chunks), len(plan.chunks), job.steps, job.steps, timeline.frame_count,
                                 timeline.frame_count, resume_at, phase="writing output"))
        output = mux_output([work.segment_path(chunk.index) for chunk in plan.chunks], timing.output_fps,
                            timeline.frame_count, job.output,
                            audio.finish() if audio else (cut if cut.carried else None), job.work_dir,
                            codec=codec.name,
                            timecode=str(start_timecode.plus(first)) if start_timecode else None,
                            segment_frames=segment_frame_counts(plan.chunks, timeline))
    finally:
        if audio is not None:
            audio.abort()
    if sinks.sequence is not None:
        sinks.sequence.publish()
    control_entries = write_previews(controls, job, timing.output_fps)

    # 9. Write the Render Info manifest beside it.
    faults.reached("after-chunks")
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    extra = {
        "timeline": {
            "start_frame_buffer": timeline.buffer,
            "warm_up_source_frames": list(timeline.sources[: timeline.buffer]),
            "interpolation": job.interpolation,
            "frames_diffused_in_range": len(timeline.outputs),
            "frames_interpolated": timeline.frame_count - len(timeline.outputs),
        },
        "frame_rate": timing.to_manifest(source),
        "style_frame": style.to_manifest() if style else None,
        "reference_frame": reference.to_manifest() if reference else None,
        "keyframes": [keyframe.to_manifest() for keyframe in keyframes],
        "dynamic_reference": job.dynamic_reference,
        "color_consistency": {"strength": job.color_consistency,
                              "anchor": state.anchor.to_dict() if state.anchor else None,
                              "anchor_from": "style frame" if style and state.anchor else
                              ("first chunk" if state.anchor else None)},
        "accelerator": {"lora": job.accelerator_lora, "scale": job.accelerator_lora_scale}
        if job.accelerator_lora else None,
        "speed_ups": backend.speed_ups(job.cfg) if hasattr(backend, "speed_ups") else None,
        "image_sequence": sequence_manifest(job, timeline) if sinks.sequence else None,
        "mask": sinks.masks.describe() if sinks.masks else None,
        "strength": job.strength,
        "controls": control_entries,
        "memory": memory.to_manifest(),
        "auto_prompt": {**written["manifest"], "prompt": written["prompt"],
                        "negative_prompt": written["negative_prompt"]} if written else None,
    }
    manifest = build_manifest(job.model_copy(update={"source": named.source}), source, output, plan, timeline,
                              device, state.chunk_seconds, set(range(resume_at)), seconds, warnings, extra)
    # How the source's audio came into the output: "copied" as it is (the whole stream) or "encoded" (a cut).
    manifest["output"]["audio_from_source"] = ("copied" if cut.carried else "encoded") if source.has_audio else None
    record_inputs(manifest, job, written)
    rendered = sum(state.chunk_seconds.get(chunk.index, 0.0) for chunk in plan.chunks[resume_at:])
    parts.seconds.update(diffusion=state.diffusion_seconds, frames=max(rendered - state.diffusion_seconds, 0.0))
    parts.seconds["output"] = max(seconds - sum(parts.seconds.values()), 0.0)
    manifest["timing"].update(
        cpu_seconds=round(cpu_seconds, 3),  # all threads of this process: how much of the CPU it had
        stages={"overlap": job.overlap, "seconds": {name: round(value, 3) for name, value in clock.totals().items()},
                "spans": [span.to_dict() for span in clock.spans]},
        parts={name: round(value, 3) for name, value in parts.seconds.items()},
        work=render_work(plan, timeline.frame_count, width, height, job.steps, job.cfg,
                         sum(control.computed for control in controls), written is not None, model_load),
    )
    write_json_atomic(job.manifest, manifest, fault_point="manifest")
    return RenderResult(str(job.output), str(job.manifest), output.frame_count, width, height,
                        len(plan.chunks) - resume_at, resume_at, seconds, manifest, output.to_dict())


def colour_anchor(job: RenderJob, style: Still | None, work: WorkFolder) -> ColourStats | None:
    if job.color_consistency <= 0:
        return None
    if style is not None:
        return colour_stats(style.frame)
    saved = work.load_anchor()
    return ColourStats.from_dict(saved) if saved else None


def segment_frame_counts(chunks: list[Chunk], timeline: Timeline) -> list[int]:
    """How many output frames each chunk's segment holds (what its encoding counted; the output's own frame
    count is checked once it is joined)."""
    ends = [output_frames_before(chunk, timeline) for chunk in chunks[1:]] + [timeline.frame_count]
    return [end - start for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def output_frames_before(chunk: Chunk, timeline: Timeline) -> int:
    """How many output frames the chunks before `chunk` completed."""
    last_position = chunk.emit_start - 1
    index = timeline.output_index(last_position) if last_position >= 0 else None
    return 0 if index is None else index + 1


def sequence_manifest(job: RenderJob, timeline: Timeline) -> dict:
    from engine.sequence import frame_name

    first, last = job.frame_range
    return {
        "format": job.image_sequence,
        "folder": job.sequence_folder.name,
        "first_file": frame_name(job.render_id, first, job.first_frame_number, job.image_sequence),
        "last_file": frame_name(job.render_id, last, job.first_frame_number, job.image_sequence),
        "frames": timeline.frame_count,
        "first_frame_number": job.first_frame_number,
        "colour": "sRGB 8-bit" if job.image_sequence == "png" else "scene-linear (from sRGB), half float, Rec.709 "
                                                                    "primaries, D65, ZIP compression",
    }


def memory_shape(plan: ChunkPlan, width: int, height: int, cfg: float, reference: bool) -> MemoryShape:
    """What the largest chunk asks of the device (a CFG above 1 runs a conditional and an unconditional pass)."""
    frames = max(chunk.render_frames for chunk in plan.chunks)
    return MemoryShape(frames, width, height, 2 if cfg > 1 else 1, reference)


class Stopwatch:
    """Seconds spent in each named part of a render (the cost estimates are fitted from them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started
