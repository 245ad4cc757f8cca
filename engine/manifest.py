"""The Render Info manifest written beside every render."""

from __future__ import annotations

import functools
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata

from engine.codecs import segment_encoder
from engine.devices import device_kind
from engine.hashes import HashCache, weights_hashes
from engine.job import RenderJob
from engine.media_safety import OWN_GROUP
from engine.plan import ChunkPlan
from engine.probe import VideoInfo
from engine.timeline import Timeline

FORMAT_VERSION = 1


def build_manifest(job: RenderJob, source: VideoInfo, output: VideoInfo, plan: ChunkPlan, timeline: Timeline,
                   device: str, chunk_seconds: dict[int, float], resumed: set[int], seconds: float,
                   warnings: list[str], extra: dict) -> dict:
    context = job.manifest_context
    return {
        "render_info_version": FORMAT_VERSION,
        "render_id": job.render_id,
        "job": job.job_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "output": {
            "video": job.output.name,
            "codec": output.codec,
            "output_codec": job.output_codec,
            "container": job.output.suffix.lstrip("."),
            "width": output.width,
            "height": output.height,
            "frames": output.frame_count,
            "fps": output.fps,
            "audio": output.has_audio,
            "audio_codec": output.audio_codec,
            "timecode": output.timecode,
            "size_bytes": output.size_bytes,
        },
        "source": {
            "path": job.source.name,
            "size_bytes": source.size_bytes,
            "format": source.format_name,
            "codec": source.codec,
            "width": source.width,
            "height": source.height,
            "fps": source.fps,
            "frames": source.frame_count,
            "duration": source.duration,
            "audio": source.audio_codec,
            "timecode": source.timecode,
            "pixel_format": source.pixel_format,
            "alpha": source.alpha,
            "colour": source.colour.to_manifest() if source.colour else None,
        },
        "frame_range": list(job.frame_range),
        "lineage": context.get("lineage", {}),
        "request": context.get("request", {}),
        "settings": context.get("settings", {}),
        "model": {
            "id": job.model.id,
            "name": job.model.name,
            "backend": job.model.backend,
            "weights": job.model.weights,
            "dtype": job.model.dtype.get(device_kind(device)),
            "device": device,
        },
        "chunk_plan": {
            "context_size": {"requested": plan.size_requested, "used": plan.size},
            "context_overlap": {"requested": plan.overlap_requested, "used": plan.overlap},
            "frame_constraint": plan.constraint,
            "chunks": [
                {
                    "index": chunk.index,
                    "source_frames": [timeline.sources[chunk.start], timeline.sources[chunk.end - 1]],
                    "diffused_frames": chunk.render_frames,
                    "known_frames": chunk.known,
                    "crossfade_frames": chunk.blend,
                    "output_frames": _output_frames(chunk, timeline),
                    "seed": chunk.seed,
                    "seconds": round(chunk_seconds.get(chunk.index, 0.0), 3),
                    "resumed": chunk.index in resumed,
                    "rendered_by": _rendered_by(context, chunk.index, chunk.index in resumed),
                }
                for chunk in plan.chunks
            ],
        },
        "frames_rendered": timeline.frame_count,
        "frames_diffused": plan.frames_to_diffuse,
        **extra,
        "timing": {
            "seconds": round(seconds, 3),
            "estimate_seconds": context.get("estimate_seconds"),
        },
        "versions": versions(),
        "warnings": warnings,
    }


def _rendered_by(context: dict, index: int, resumed: bool) -> dict | None:
    """Where the caller says a chunk was rendered (node, worker): this attempt's worker, or for a chunk resumed
    from a checkpoint the one that rendered it then (None when the caller does not know)."""
    placement = context.get("rendered_by") or {}
    if resumed:
        return (placement.get("chunks") or {}).get(str(index))
    return placement.get("this_attempt")


def _output_frames(chunk, timeline: Timeline) -> list[int] | None:
    """Source frame numbers of the first and last output frame a chunk completed (None: warm-up only)."""
    indices = [timeline.output_index(p) for p in range(chunk.emit_start, chunk.emit_end)]
    indices = [index for index in indices if index is not None]
    if not indices:
        return None
    previous = timeline.output_index(chunk.emit_start - 1) if chunk.emit_start > timeline.buffer else None
    start = indices[0] if previous is None else previous + 1
    return [timeline.first + start, timeline.first + indices[-1]]


@functools.cache
def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "ffmpeg": _ffmpeg_version("ffmpeg"),
             "ffmpeg_segments": _ffmpeg_version(segment_encoder())}
    for package in ("hotshot", "torch", "diffusers", "transformers"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _ffmpeg_version(binary: str) -> str:
    try:
        first = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=10,
                               stdin=subprocess.DEVNULL, **OWN_GROUP).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = first.split()
    return words[2] if len(words) > 2 else "unknown"


def record_inputs(manifest: dict, job: RenderJob, written: dict | None) -> None:
    """Add what reproducing the render needs beyond its settings: the sha256 of the source, the mask and every
    set of weights, and, with Auto Prompt, the prompts it wrote in place of the request's in `settings`."""
    hashes = HashCache(job.hash_cache)
    manifest["source"]["sha256"] = hashes.file(job.source)
    if manifest.get("mask") and job.mask is not None:
        manifest["mask"]["sha256"] = hashes.describe(job.mask.path)["sha256"]
    manifest["weights"] = weights_hashes(job, hashes)
    manifest["model"]["sha256"] = manifest["weights"].get("model", {}).get("sha256")
    settings = manifest["settings"] = dict(manifest.get("settings") or {})
    for name in ("prompt", "negative_prompt") if written else ():
        given = settings.get(name) or {}
        if written[name] != given.get("value"):
            settings[name] = {"value": written[name], "from": "auto_prompt", "requested": given.get("value"),
                              "requested_from": given.get("from")}
