"""From a request to a job: choose the source, resolve every setting, estimate the cost.

`resolve()` decides whether a request can be queued now, must wait (its
source is not there or not complete yet), or fails (the request itself is at
fault). `render_job()` turns a claimed job into the engine's `RenderJob`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from daemon.conventions import VIDEO_EXTENSIONS, kind_of, manifest_path, render_stem, resolve_in_shot
from daemon.errors import RequestError, SourceChoiceError
from daemon.request import RenderRequest
from daemon.store import Store
from engine.catalog import ModelSpec
from engine.errors import FrameRangeError, UnknownModelError
from engine.estimate import estimate_cost
from engine.geometry import output_dims
from engine.job import RenderJob
from engine.plan import plan_chunks
from engine.probe import VideoInfo


@dataclass
class Resolution:
    state: str                       # queued | waiting
    settings: dict = field(default_factory=dict)
    source_media_id: int | None = None
    estimate: dict | None = None
    wait_reason: str | None = None
    full_clip: bool = False


@dataclass
class ShotFacts:
    """What the resolver needs to know about a shot."""

    folder: Path
    root: Path
    media: list[dict]
    files_on_disk: list[Path]
    output_paths: set[str]


def resolve(request: RenderRequest, shot: ShotFacts, catalog: dict[str, ModelSpec], default_model: str,
            device_kind: str, seed: int | None = None) -> Resolution:
    """Resolve a valid request against its shot; raise `RequestError` if it cannot ever work."""
    # 1. The model.
    model_id = request.model or default_model
    if model_id not in catalog:
        raise RequestError(str(UnknownModelError(model_id, sorted(catalog))))
    model = catalog[model_id]

    # 2. The source: named, or the shot's only original.
    source_path, waiting = choose_source(request, shot)
    if waiting:
        return Resolution("waiting", wait_reason=waiting)
    media = next((m for m in shot.media if m["path"] == str(source_path)), None)
    if media is None:
        return Resolution("waiting", wait_reason=f"waiting for {source_path.name} to finish copying")
    if media["state"] != "ready":
        return Resolution("waiting", wait_reason=f"waiting for {source_path.name} to become readable: {media['error']}")
    info = VideoInfo.from_dict(media["probe"])

    # 3. The frame range.
    if request.frame_range is None:
        first, last = 0, info.frame_count - 1
    else:
        first, last = request.frame_range
        if last >= info.frame_count:
            raise RequestError(str(FrameRangeError(first, last, info.frame_count)))

    # 4. Every setting, with where its value came from.
    settings = resolve_settings(request, model, seed)
    if settings["context.size"]["value"] > model.context_max:
        raise RequestError(
            f"context.size {settings['context.size']['value']} is over the maximum of {model.context_max} "
            f"frames for model {model.id!r}"
        )
    settings["frame_range"] = {"value": [first, last], "from": "request" if request.frame_range else "default"}
    settings["source"] = {"value": source_path.name, "from": "request" if request.source else "only source"}

    # 5. The chunk plan and the cost estimate.
    width, height = output_dims(info.width, info.height, request.output_size, model.resolution_multiple)
    try:
        plan = plan_chunks(last - first + 1, settings["context.size"]["value"], settings["context.overlap"]["value"],
                           model.constraint, settings["seed"]["value"])
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    estimate = estimate_cost(plan, width, height, settings["steps"]["value"], settings["cfg"]["value"],
                             model.calibration_for(device_kind))
    return Resolution("queued", settings, media["id"], estimate, full_clip=request.frame_range is None)


def choose_source(request: RenderRequest, shot: ShotFacts) -> tuple[Path | None, str | None]:
    """The source path, or a reason to wait; raises when the choice is impossible."""
    if request.source is not None:
        path = resolve_in_shot(shot.folder, shot.root, request.source, "source")
        if kind_of(path) != "video":
            raise RequestError(
                f"source {request.source!r} is not a video; use one of: {', '.join(sorted(VIDEO_EXTENSIONS))}"
            )
        if not path.exists():
            return None, f"waiting for source {request.source} to appear in the shot"
        return path, None
    originals = sorted({
        Path(m["path"]) for m in shot.media if m["kind"] == "original" and m["state"] != "missing"
    } | {
        path for path in shot.files_on_disk
        if kind_of(path) == "video" and str(path) not in shot.output_paths
        and not any(m["path"] == str(path) for m in shot.media)
        and not manifest_path(path).exists()
    })
    if len(originals) > 1:
        raise SourceChoiceError([path.name for path in originals])
    if not originals:
        return None, "waiting for a source video to arrive in the shot"
    return originals[0], None


def resolve_settings(request: RenderRequest, model: ModelSpec, seed: int | None = None) -> dict:
    """Each setting's value and origin: request, model (catalog default) or default."""
    given = request.model_fields_set
    context_given = request.context.model_fields_set

    def pick(name: str, value, fallback, origin: str) -> dict:
        return {"value": value, "from": "request"} if name in given and value is not None else \
            {"value": fallback, "from": origin}

    chosen_seed = request.seed if request.seed is not None else (seed if seed is not None else secrets.randbelow(2**32))
    return {
        "model": {"value": model.id, "from": "request" if "model" in given else "default"},
        "prompt": pick("prompt", request.prompt, "", "default"),
        "negative_prompt": pick("negative_prompt", request.negative_prompt, model.negative_prompt, "model"),
        "output_size": pick("output_size", request.output_size, request.output_size, "default"),
        "steps": pick("steps", request.steps, model.steps, "model"),
        "cfg": pick("cfg", request.cfg, model.cfg, "model"),
        "shift": pick("shift", request.shift, model.shift, "model"),
        "seed": {"value": chosen_seed, "from": "request" if request.seed is not None else "random"},
        "context.size": {"value": request.context.size, "from": "request"} if "size" in context_given
        else {"value": model.context_default, "from": "model"},
        "context.overlap": {"value": request.context.overlap,
                            "from": "request" if "overlap" in context_given else "default"},
    }


def render_job(job: dict, store: Store, catalog: dict[str, ModelSpec], work_root: Path) -> RenderJob:
    """The engine job for a claimed job row; the first claim fixes its render number and names."""
    if job.get("spec"):
        spec = dict(job["spec"])
        spec["done_chunks"] = {row["idx"]: row["seconds"] for row in store.chunks(job["id"])}
        return RenderJob.model_validate(spec)

    settings = {name: entry["value"] for name, entry in job["settings"].items()}
    source = store.media(job["source_media_id"])
    shot = store.shot(job["shot_id"])
    folder = Path(shot["path"])
    original = store.media(source["root_id"]) if source["root_id"] else source
    stem = Path(original["name"]).stem
    number = store.next_render_number(job["shot_id"])
    while (folder / f"{render_stem(stem, number)}.mp4").exists():
        number += 1
    output = folder / f"{render_stem(stem, number)}.mp4"
    model = catalog[settings["model"]]
    request_row = store.request(job["request_id"])
    return RenderJob(
        job_id=job["id"],
        render_id=render_stem(stem, number),
        source=Path(source["path"]),
        source_size=source["size"],
        source_mtime_ns=source["mtime_ns"],
        frame_range=tuple(settings["frame_range"]),
        output_size=settings["output_size"],
        model=model,
        prompt=settings["prompt"],
        negative_prompt=settings["negative_prompt"],
        steps=settings["steps"],
        cfg=settings["cfg"],
        seed=settings["seed"],
        shift=settings["shift"],
        context_size=settings["context.size"],
        context_overlap=settings["context.overlap"],
        output=output,
        manifest=manifest_path(output),
        work_dir=work_root / f"job-{job['id']:06d}",
        manifest_context={
            "shot": shot["rel"],
            "request": {"path": Path(job["request_path"]).name, "as_written": json.loads(request_row["raw"])},
            "settings": job["settings"],
            "lineage": lineage(source, output.name, store),
            "estimate_seconds": (job.get("estimate") or {}).get("seconds"),
        },
    )


def lineage(source: dict, output_name: str, store: Store) -> dict:
    """The chain of media from the original source to this render, inclusive."""
    chain = [source]
    while chain[-1]["parent_id"]:
        parent = store.media(chain[-1]["parent_id"])
        if parent is None:
            break
        chain.append(parent)
    chain.reverse()
    return {
        "root_source": chain[0]["name"],
        "parent_render": source["name"] if source["kind"] == "render" else None,
        "chain": [media["name"] for media in chain] + [output_name],
    }
