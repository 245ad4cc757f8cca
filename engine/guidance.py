"""What guides a render besides the source: control videos (Transform) and the written prompt (Auto Prompt).

Both are prepared before the diffusion model loads. Control videos are
computed once for the whole timeline into their on-disk cache (a resumed or
repeated render reuses them) in one pass over the source; the render then
releases the preprocessors' models, and each chunk reads its frames from the
cache. The written prompt
is kept in the job's work folder, so a resumed render uses the same words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import structlog

from engine.backends import ControlFrames
from engine.checkpoint import WorkFolder
from engine.controls import ControlVideo, count_people
from engine.files import write_json_atomic
from engine.job import ControlSpec, RenderJob
from engine.models import ModelCache
from engine.plan import Chunk
from engine.timeline import Timeline

log = structlog.get_logger("hotshot.engine")


@dataclass
class Control:
    spec: ControlSpec
    video: ControlVideo
    computed: int = 0  # control frames computed for this render (the rest came from the cache)


def prepare_controls(job: RenderJob, timeline: Timeline, width: int, height: int, device: str) -> list[Control]:
    """The job's control videos, computed (or found) in the cache for every frame the timeline uses."""
    if not job.controls:
        return []
    controls = [Control(spec, ControlVideo(spec.type, job.control_catalog, job.source, width, height,
                                           job.control_cache, device)) for spec in job.controls]
    numbers = sorted(set(timeline.sources) | set(range(timeline.first, timeline.first + timeline.frame_count)))
    for control in controls:
        control.computed = control.video.ensure(numbers)
        log.info("control video ready", control=control.spec.type, cache=control.video.cache_key,
                 computed=control.computed)
    return controls


def chunk_controls(controls: list[Control], chunk: Chunk, timeline: Timeline) -> list[ControlFrames]:
    """Each control's frames for a chunk's window, padded like the window."""
    numbers = [timeline.sources[position] for position in range(chunk.start, chunk.end)]
    numbers += [numbers[-1]] * (chunk.render_frames - len(numbers))
    frames = []
    for control in controls:
        parts = control.video.parts(numbers)
        composite = control.video.composite(parts) if len(parts) > 1 else next(iter(parts.values()))
        frames.append(ControlFrames(control.spec.type, composite, control.spec.strength,
                                    parts if len(parts) > 1 else {}))
    return frames


def write_previews(controls: list[Control], job: RenderJob, fps: str) -> list[dict]:
    """A viewable MP4 of every control beside the render, and what the Render Info says of each control."""
    first, last = job.frame_range
    entries = []
    for control in controls:
        path = job.output.parent / f"{job.render_id}.control-{control.spec.type}.mp4"
        control.video.write_preview(range(first, last + 1), fps, path)
        entries.append({"type": control.spec.type, "strength": control.spec.strength,
                        "cache_key": control.video.cache_key, "preview": path.name, **control.video.method})
    return entries


def write_prompt(job: RenderJob, work: WorkFolder, cache: ModelCache, device: str) -> dict | None:
    """The prompt written from captions of the source (and style or reference image), combined with the
    user's; None without auto prompt. The same words are reused when the render resumes."""
    if not job.auto_prompt:
        return None
    saved = work.root / "prompt.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    from engine.captions import Captioner
    from engine.prompt_writing import suggest_prompt

    captioner = cache.helper(job.captioner.id, job.captioner.weights, device,
                             lambda: Captioner.load(job.captioner, device))
    catalog = job.control_catalog
    counter = None
    if catalog is not None and catalog.pose_detector is not None:
        def counter(frames):
            return count_people(frames, catalog, device)
    reference = next((still.path for still in (job.reference_frame, job.style_frame)
                      if still is not None and still.path is not None), None)
    first, last = job.frame_range
    composed = suggest_prompt(job.source, first, last, captioner, reference=Path(reference) if reference else None,
                              people_counter=counter, user_prompt=job.prompt, negative_prompt=job.negative_prompt)
    written = {
        "prompt": composed.prompt,
        "negative_prompt": composed.negative_prompt if job.negative_from_model else job.negative_prompt,
        "manifest": composed.to_manifest(),
    }
    write_json_atomic(saved, written)
    log.info("prompt written", prompt=composed.prompt, people=composed.people)
    return written
