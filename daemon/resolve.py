"""From a request to a job: choose the source, resolve every setting, estimate the cost.

`resolve()` decides whether a request can be queued now, must wait (its
source or a still is not there or not complete yet), or fails (the request
itself is at fault). `render_job()` turns a claimed job into the engine's
`RenderJob`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.conventions import VIDEO_EXTENSIONS, kind_of, manifest_path, render_stem, resolve_in_shot
from daemon.errors import ConfigError, RequestError, SourceChoiceError
from daemon.presets import Preset, apply_preset
from daemon.request import RenderRequest, reject_unsupported
from daemon.shots import ShotFacts, originals
from daemon.sources import fixed_identity, queued_identity
from daemon.states import Job, JobState, MediaKind, MediaState
from daemon.store import Store
from engine.backends import Asked, check_settings
from engine.captions import CaptionerSpec, load_captioner_spec
from engine.catalog import WEIGHTLESS, CatalogError, ModelSpec, load_catalog
from engine.codecs import SUFFIXES, output_codec
from engine.controls.catalog import ControlCatalog, load_control_catalog
from engine.errors import FrameRangeError, SettingsError, UnknownModelError
from engine.estimate import estimate_cost, fit_costs, render_work
from engine.geometry import output_dims
from engine.job import RenderJob
from engine.keyframes import check_keyframes, check_painted_windows, keyframe_positions
from engine.plan import plan_warnings, snap_overlap
from engine.probe import VideoInfo
from engine.stills import IMAGE_EXTENSIONS
from engine.timeline import build_timeline, plan_timeline


@dataclass
class Resolution:
    state: JobState                  # queued | waiting
    settings: dict = field(default_factory=dict)
    source_media_id: int | None = None
    estimate: dict | None = None
    wait_reason: str | None = None
    full_clip: bool = False


@dataclass
class Setup:
    """What the resolver needs to know beyond the shot: the catalogs, presets and settings."""

    catalog: dict[str, ModelSpec]
    presets: dict[str, Preset]
    default_model: str
    device_kind: str
    first_frame_number: int = 1001
    credits_per_gpu_second: float = 0.0
    history: Callable[[str, str], list[dict]] = lambda model, device: []  # measured renders, newest first
    loaded: Callable[[str], bool] = lambda model: False  # whether a worker holds the model in memory
    controls: ControlCatalog | None = None
    captioner: CaptionerSpec | None = None
    control_cache: Path | None = None
    hash_cache: Path | None = None
    device_memory: int | None = None  # bytes a job may use on its device (the device_memory_gb setting)
    render_overlap: bool = True


def load_setup(settings, device_kind: str, history=None) -> Setup:
    """Read the model catalog (with its [controls] and [captioner] tables) and the presets; refuse bad ones."""
    from daemon.presets import load_presets

    try:
        catalog = load_catalog(settings.catalogs, settings.models_dir)
        controls = load_control_catalog(settings.catalogs, settings.models_dir)
        captioner = load_captioner_spec(settings.catalogs, settings.models_dir, required=False)
    except CatalogError as exc:
        raise ConfigError(str(exc)) from exc
    return Setup(
        catalog=catalog, presets=load_presets(settings.presets_file), default_model=settings.default_model,
        device_kind=device_kind, first_frame_number=settings.first_frame_number,
        credits_per_gpu_second=settings.credits_per_gpu_second,
        history=history or (lambda model, device: []), controls=controls, captioner=captioner,
        control_cache=settings.state_dir / "controls", hash_cache=settings.state_dir / "hashes",
        device_memory=int(settings.device_memory_gb * 2**30) if getattr(settings, "device_memory_gb", None) else None,
        render_overlap=settings.render_overlap,
    )


def resolve(request: RenderRequest, shot: ShotFacts, setup: Setup, seed: int | None = None) -> Resolution:
    """Resolve a valid request against its shot; raise `RequestError` if it cannot ever work."""
    # 1. The preset under the request, then the model.
    given = _given(request)
    request, from_preset = apply_preset(request, setup.presets)
    reject_unsupported(request)
    model_id = request.model or setup.default_model
    if model_id not in setup.catalog:
        raise RequestError(str(UnknownModelError(model_id, sorted(setup.catalog))))
    model = setup.catalog[model_id]
    check_capabilities(request, model)
    check_guidance(request, model, setup)

    # 2. The source: named, or the shot's only original; and the stills.
    source_path, waiting = choose_source(request, shot)
    if waiting:
        return Resolution(JobState.WAITING, wait_reason=waiting)
    media = next((m for m in shot.media if m["path"] == str(source_path)), None)
    if media is None:
        return Resolution(JobState.WAITING, wait_reason=f"waiting for {source_path.name} to finish copying")
    if media["state"] == MediaState.REFUSED:  # not a file that is still arriving: waiting cannot help
        raise RequestError(f"source {source_path.name} is not used: {media['error']}")
    if media["state"] != MediaState.READY:
        reason = f"waiting for {source_path.name} to become readable: {media['error']}"
        return Resolution(JobState.WAITING, wait_reason=reason)
    info = VideoInfo.from_dict(media["probe"])
    stills = {}
    for name in ("style_frame", "reference_frame"):
        stills[name], waiting = resolve_still(getattr(request, name), name, shot, info)
        if waiting:
            return Resolution(JobState.WAITING, wait_reason=waiting)
    keyframes = []
    for keyframe in request.keyframes:
        still, waiting = resolve_still(keyframe.image, f"keyframes image for frame {keyframe.frame}", shot, info)
        if waiting:
            return Resolution(JobState.WAITING, wait_reason=waiting)
        keyframes.append({"frame": keyframe.frame, "path": still["path"]})
    mask, waiting = resolve_mask(request.mask, shot)
    if waiting:
        return Resolution(JobState.WAITING, wait_reason=waiting)

    # 3. The frame range.
    if request.frame_range is None:
        first, last = 0, info.frame_count - 1
    else:
        first, last = request.frame_range
        if last >= info.frame_count:
            raise RequestError(str(FrameRangeError(first, last, info.frame_count)))

    # 4. Every setting, with where its value came from.
    settings = resolve_settings(request, model, given, from_preset, seed)
    settings.update({
        "frame_range": {"value": [first, last], "from": _origin("frame_range", given, from_preset)},
        "source": {"value": source_path.name, "from": "request" if request.source else "only source"},
        "style_frame": {"value": stills["style_frame"], "from": _origin("style_frame", given, from_preset)},
        "reference_frame": {"value": stills["reference_frame"],
                            "from": _origin("reference_frame", given, from_preset)},
        "first_frame_number": {"value": setup.first_frame_number, "from": "config"},
        "keyframes": {"value": keyframes, "from": _origin("keyframes", given, from_preset)},
        "mask": {"value": mask, "from": _origin("mask", given, from_preset)},
    })
    if settings["context.size"]["value"] > model.context_max:
        raise RequestError(
            f"context.size {settings['context.size']['value']} is over the maximum of {model.context_max} "
            f"frames for model {model.id!r}"
        )

    # 5. The timeline, the chunk plan and the cost estimate.
    width, height = output_dims(info.width, info.height, settings["output_size"]["value"], model.resolution_multiple)
    try:
        output_codec(settings["output_codec"]["value"]).check_size(width, height)
    except SettingsError as exc:
        raise RequestError(str(exc)) from exc
    timeline = build_timeline(first, last, settings["context.start_frame_buffer"]["value"],
                              settings["interpolation"]["value"])
    try:
        plan = plan_timeline(timeline, settings["context.size"]["value"], settings["context.overlap"]["value"],
                             model.constraint, settings["seed"]["value"])
        frames = [keyframe["frame"] for keyframe in keyframes]
        check_keyframes(frames, timeline, request.style_frame is not None)
        if model.capabilities.needs_paint:
            painted = set(keyframe_positions(frames, timeline)) | ({timeline.buffer} if request.style_frame else set())
            check_painted_windows(plan, painted, model.id)
    except (ValueError, SettingsError) as exc:
        raise RequestError(str(exc)) from exc
    control_frames = len(set(timeline.sources) | set(range(first, last + 1))) \
        * sum(2 if control.type == "depth+pose" else 1 for control in request.controlnets)
    work = render_work(plan, timeline.frame_count, width, height, settings["steps"]["value"],
                       settings["cfg"]["value"], control_frames, request.auto_prompt,
                       model.backend not in WEIGHTLESS and not setup.loaded(model.id))
    costs = fit_costs(setup.history(model.id, setup.device_kind), setup.device_kind,
                      model.calibration_for(setup.device_kind))
    estimate = estimate_cost(plan, timeline.frame_count, width, height, settings["steps"]["value"], work, costs,
                             setup.credits_per_gpu_second)
    estimate["device"] = setup.device_kind
    estimate["warnings"] = plan_warnings(plan)
    return Resolution(JobState.QUEUED, settings, media["id"], estimate, full_clip=request.frame_range is None)


def choose_source(request: RenderRequest, shot: ShotFacts) -> tuple[Path | None, str | None]:
    """The source path, or a reason to wait; raises when the choice is impossible."""
    if request.source is not None:
        path = resolve_in_shot(shot.folder, shot.root, request.source, "source", shot.allow_hard_links)
        if kind_of(path) != "video":
            raise RequestError(
                f"source {request.source!r} is not a video; use one of: {', '.join(sorted(VIDEO_EXTENSIONS))}"
            )
        if path.is_dir():
            raise RequestError(f"source {request.source!r} is a folder, not a video file; name a video in the shot")
        if not path.exists():
            return None, f"waiting for source {request.source} to appear in the shot"
        return path, None
    found = originals(shot, exclude={shot.folder / request.mask} if request.mask else set())
    if len(found) > 1:
        raise SourceChoiceError([path.name for path in found])
    if not found:
        return None, "waiting for a source video to arrive in the shot"
    return found[0], None


def resolve_still(value, name: str, shot: ShotFacts, info: VideoInfo) -> tuple[dict | None, str | None]:
    """A style or reference frame as a JSON-able spec, or a reason to wait for its image."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        if value.keyframe >= info.frame_count:
            raise RequestError(f"{name} keyframe {value.keyframe} is outside the source, which has "
                               f"{info.frame_count} frames")
        return {"keyframe": value.keyframe}, None
    path = resolve_in_shot(shot.folder, shot.root, value, name, shot.allow_hard_links)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise RequestError(f"{name} {value!r} is not an image; use one of: {', '.join(IMAGE_EXTENSIONS)}")
    if not path.is_file():
        return None, f"waiting for {name} {value} to appear in the shot"
    return {"path": value}, None


def check_capabilities(request: RenderRequest, model: ModelSpec) -> None:
    """A setting the model does not expose is refused, naming the model and the setting."""
    exposed = model.capabilities
    used = {
        "style_frame": request.style_frame is not None,
        "reference_frame": request.reference_frame is not None,
        "mask": request.mask is not None,
        "strength": request.strength is not None,
        "keyframes": bool(request.keyframes),
    }
    for name, is_used in used.items():
        if is_used and not getattr(exposed, name):
            raise RequestError(f"model {model.id!r} does not support {name}; choose a model that does "
                               "(`hotshot models list` shows each model's capabilities)")
    groups = {
        "prompt": {"prompt": request.prompt != "", "negative_prompt": request.negative_prompt is not None,
                   "auto_prompt": request.auto_prompt},
        "sampling": {"steps": request.steps is not None, "cfg": request.cfg is not None,
                     "shift": request.shift is not None, "seed": request.seed is not None,
                     "low_step": request.low_step},
    }
    for capability, fields in groups.items():
        for name, is_used in fields.items():
            if is_used and not getattr(exposed, capability):
                raise RequestError(f"model {model.id!r} does not use {name} (it renders without a prompt or "
                                   f"diffusion steps); remove {name} from the request, or choose a diffusion model")
    if exposed.needs_paint and request.style_frame is None and not request.keyframes:
        raise RequestError(f"model {model.id!r} carries painted frames through the clip and the request gives "
                           "none; add a style_frame (the painted first frame) or keyframes "
                           "([{\"frame\": N, \"image\": \"name.png\"}])")
    for control in request.controlnets:
        if control.type not in exposed.controlnets:
            offered = ", ".join(exposed.controlnets) or "none"
            raise RequestError(f"model {model.id!r} has no {control.type!r} ControlNet (it offers: {offered})")
    try:  # what only the model's backend knows it cannot do
        check_settings(model, Asked(shift=request.shift is not None, mask=request.mask is not None,
                                    reference=request.reference_frame is not None,
                                    controls=tuple(control.type for control in request.controlnets)))
    except SettingsError as exc:
        raise RequestError(str(exc)) from exc
    if (request.mask_feather or request.mask_grow) and request.mask is None:
        raise RequestError("mask_feather and mask_grow need a mask")


def check_guidance(request: RenderRequest, model: ModelSpec, setup: Setup) -> None:
    """Controls and Auto Prompt need their models in the catalog."""
    roles = {"depth": ["depth"], "normal": ["depth"], "pose": ["pose_detector", "pose"],
             "depth+pose": ["depth", "pose_detector", "pose"], "softedge": []}
    for control in request.controlnets:
        missing = [role for role in roles[control.type]
                   if setup.controls is None or getattr(setup.controls, role) is None]
        if missing:
            raise RequestError(f"controlnets {control.type!r} needs {' and '.join(missing)} in the [controls] "
                               "table of the model catalog (see docs/controls.md)")
    if request.auto_prompt and setup.captioner is None:
        raise RequestError("auto_prompt needs a [captioner] table in the model catalog (see docs/controls.md)")


def resolve_mask(value: str | None, shot: ShotFacts) -> tuple[str | None, str | None]:
    """The mask's name in the shot (a video, an image or a folder of images), or a reason to wait for it."""
    if value is None:
        return None, None
    path = resolve_in_shot(shot.folder, shot.root, value, "mask", shot.allow_hard_links)
    if not path.exists():
        return None, f"waiting for mask {value} to appear in the shot"
    if not path.is_dir() and kind_of(path) != "video" and path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise RequestError(f"mask {value!r} is not a video, an image or a folder of images")
    return value, None


def resolve_settings(request: RenderRequest, model: ModelSpec, given: set[str], from_preset: dict,
                     seed: int | None = None) -> dict:
    """Each setting's value and origin: request, preset, accelerator, model (catalog default) or default."""
    accelerator = model.accelerator if request.low_step else None
    if request.low_step and accelerator is None:
        raise RequestError(f"model {model.id!r} has no accelerator profile for low_step in the model catalog")

    def pick(name: str, value, fallback, fallback_origin: str) -> dict:
        origin = _origin(name, given, from_preset)
        if origin != "default" and value is not None:
            return {"value": value, "from": origin}
        return {"value": fallback, "from": fallback_origin}

    steps = pick("steps", request.steps, accelerator.steps if accelerator else model.steps,
                 "accelerator" if accelerator else "model")
    cfg = pick("cfg", request.cfg, accelerator.cfg if accelerator else model.cfg,
               "accelerator" if accelerator else "model")
    shift_default = accelerator.shift if accelerator and accelerator.shift else model.shift
    shift = pick("shift", request.shift, shift_default, "accelerator" if accelerator and accelerator.shift else "model")
    chosen_seed = request.seed if request.seed is not None else (seed if seed is not None else secrets.randbelow(2**32))
    context = request.context
    resolved_size = pick("context.size", context.size, model.context_default, "model")
    return {
        "preset": {"value": request.preset, "from": "request" if request.preset else "default"},
        "model": {"value": model.id, "from": _origin("model", given, from_preset)},
        "prompt": pick("prompt", request.prompt, "", "default"),
        "negative_prompt": pick("negative_prompt", request.negative_prompt, model.negative_prompt, "model"),
        "output_size": pick("output_size", request.output_size, request.output_size, "default"),
        "steps": steps,
        "cfg": cfg,
        "shift": shift,
        "seed": {"value": chosen_seed, "from": _origin("seed", given, from_preset)
                 if request.seed is not None else "random"},
        "low_step": {"value": request.low_step, "from": _origin("low_step", given, from_preset),
                     "accelerator": accelerator.model_dump() if accelerator else None},
        "interpolation": pick("interpolation", request.interpolation, False, "default"),
        "image_sequence": pick("image_sequence", request.image_sequence, None, "default"),
        "output_codec": pick("output_codec", request.output_codec, "h264", "default"),
        "color_consistency": pick("color_consistency", request.color_consistency, 0.0, "default"),
        "controlnets": {"value": [control.model_dump() for control in request.controlnets],
                        "from": _origin("controlnets", given, from_preset)},
        "auto_prompt": pick("auto_prompt", request.auto_prompt, False, "default"),
        "mask_feather": pick("mask_feather", request.mask_feather, 0, "default"),
        "mask_grow": pick("mask_grow", request.mask_grow, 0, "default"),
        "strength": pick("strength", request.strength, model.strength if model.capabilities.strength else None,
                         "model"),
        "context.size": resolved_size,
        # The model's overlap, at most a quarter of the context, snapped here so that a default never warns.
        "context.overlap": pick("context.overlap", context.overlap,
                                snap_overlap(min(model.context_overlap_default, resolved_size["value"] // 4),
                                             model.constraint), "model"),
        "context.start_frame_buffer": pick("context.start_frame_buffer", context.start_frame_buffer,
                                           context.start_frame_buffer, "default"),
        "context.dynamic_reference": pick("context.dynamic_reference", context.dynamic_reference,
                                          context.dynamic_reference, "default"),
    }


def _given(request: RenderRequest) -> set[str]:
    """Names the request itself set (context fields as `context.size`)."""
    names = set(request.model_fields_set) - {"context"}
    if "context" in request.model_fields_set:
        names |= {f"context.{name}" for name in request.context.model_fields_set}
    return names


def _origin(name: str, given: set[str], from_preset: dict) -> str:
    if name in given:
        return "request"
    if name in from_preset:
        return "preset"
    return "default"


def render_job(job: Job, store: Store, setup: Setup, work_root: Path) -> RenderJob:
    """The engine job for a claimed job row; the first claim fixes its render number and names."""
    if job.spec:
        spec = dict(job.spec)
        spec["done_chunks"] = {row["idx"]: row["seconds"] for row in store.chunks(job.id)}
        return RenderJob.model_validate(spec)

    settings = {name: entry["value"] for name, entry in job.settings.items()}
    source = store.media(job.source_media_id)
    shot = store.shot(job.shot_id)
    folder = Path(shot["path"])
    original = store.media(source["root_id"]) if source["root_id"] else source
    stem = Path(original["name"]).stem
    number = store.next_render_number(job.shot_id)
    while any((folder / f"{render_stem(stem, number)}{suffix}").exists() for suffix in SUFFIXES) \
            or (folder / render_stem(stem, number)).exists():
        number += 1
    # Old jobs' settings predate output_codec: H.264.
    codec = output_codec(settings.get("output_codec", "h264"))
    output = folder / f"{render_stem(stem, number)}{codec.suffix}"
    model = setup.catalog[settings["model"]]
    uses_controls = bool(settings.get("controlnets"))
    accelerator = job.settings["low_step"].get("accelerator") if settings["low_step"] else None
    request_row = store.request(job.request_id)
    identity = queued_identity(job) or fixed_identity(source)  # jobs queued before identities were fixed
    return RenderJob(
        job_id=job.id,
        render_id=render_stem(stem, number),
        source=Path(source["path"]),
        source_size=identity["source_size"],
        source_mtime_ns=identity["source_mtime_ns"],
        source_inode=identity["source_inode"],
        source_ctime_ns=identity["source_ctime_ns"],
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
        start_frame_buffer=settings["context.start_frame_buffer"],
        dynamic_reference=settings["context.dynamic_reference"],
        style_frame=_still(settings["style_frame"], folder),
        reference_frame=_still(settings["reference_frame"], folder),
        keyframes=[{"frame": keyframe["frame"], "path": str(folder / keyframe["path"])}
                   for keyframe in settings.get("keyframes") or []],
        mask={"path": str(folder / settings["mask"]), "feather": settings["mask_feather"],
              "grow": settings["mask_grow"]} if settings["mask"] else None,
        strength=settings["strength"],
        controls=settings.get("controlnets") or [],
        control_catalog=setup.controls if uses_controls or settings.get("auto_prompt") else None,
        control_cache=setup.control_cache if uses_controls else None,
        hash_cache=setup.hash_cache,
        overlap=setup.render_overlap,
        auto_prompt=bool(settings.get("auto_prompt")),
        captioner=setup.captioner if settings.get("auto_prompt") else None,
        negative_from_model=job.settings["negative_prompt"]["from"] == "model",
        interpolation=settings["interpolation"],
        color_consistency=settings["color_consistency"],
        image_sequence=settings["image_sequence"],
        output_codec=codec.name,
        first_frame_number=settings["first_frame_number"],
        accelerator_lora=accelerator["lora"] if accelerator else None,
        accelerator_lora_scale=accelerator["lora_scale"] if accelerator else 1.0,
        output=output,
        manifest=manifest_path(output),
        work_dir=work_root / f"job-{job.id:06d}",
        device_memory=setup.device_memory,
        manifest_context={
            "shot": shot["rel"],
            "request": {"path": Path(job.request_path).name, "as_written": json.loads(request_row["raw"])},
            "settings": job.settings,
            "lineage": lineage(source, output.name, store),
            "estimate_seconds": (job.estimate or {}).get("seconds"),
            "estimate": job.estimate,
        },
    )


def _still(value: dict | None, folder: Path) -> dict | None:
    if value is None:
        return None
    return {"path": str(folder / value["path"])} if "path" in value else {"keyframe": value["keyframe"]}


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
        "parent_render": source["name"] if source["kind"] == MediaKind.RENDER else None,
        "chain": [media["name"] for media in chain] + [output_name],
    }
