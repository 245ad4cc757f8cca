"""The Settings tab: which fields each model exposes, and turning the page's form into a request file.

The fields come from the request model itself (`RenderRequest`), grouped as
the workspace groups them; a field named like a catalog capability is offered
only for models that expose it, so a new model, capability or request field
appears on the page without changes here. A request built by the page is
checked by the same code as a request file (`parse_request`) and resolved by
the same code as `hotshot estimate`; each refusal is tied to the field it names.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daemon.cli.estimate import estimate_raw
from daemon.config import Settings
from daemon.errors import HotshotError, RequestError
from daemon.presets import load_presets
from daemon.request import Context, RenderRequest, describe_errors, reject_unsupported
from engine.catalog import Capabilities, load_catalog

BASIC = ("style_frame", "reference_frame", "prompt", "auto_prompt", "negative_prompt", "controlnets",
         "mask", "mask_grow", "mask_feather", "strength")
ADVANCED = ("output_size", "steps", "interpolation", "image_sequence", "cfg", "color_consistency", "seed",
            "shift", "low_step")
JOB = ("priority", "when")
# Chosen elsewhere on the page (the selectors and the timeline), or not a setting at all.
ELSEWHERE = ("preset", "model", "source", "frame_range", "cancel", "context")
# Fields that only mean something with another capability.
NEEDS = {"mask_grow": "mask", "mask_feather": "mask"}
LABELS = {"auto_prompt": "auto prompt on render", "controlnets": "ControlNets", "cfg": "CFG",
          "color_consistency": "colour consistency", "low_step": "low-step accelerator", "shift": "shift",
          "context.size": "context size", "context.overlap": "overlap",
          "context.start_frame_buffer": "start frame buffer", "context.dynamic_reference": "dynamic reference"}


def form_schema(settings: Settings) -> dict:
    """Models (with their capabilities and defaults), presets, windows and every request field, for the page."""
    try:
        catalog = load_catalog(settings.catalogs, settings.models_dir)
        presets = load_presets(settings.presets_file)
    except Exception as exc:  # noqa: BLE001 - a broken catalog is shown on the page, not a crash
        raise HotshotError(str(exc)) from exc
    request_schema = RenderRequest.model_json_schema()
    context_schema = Context.model_json_schema()
    fields = []
    for name in RenderRequest.model_fields:
        if name in ELSEWHERE:
            continue
        group = "basic" if name in BASIC else "job" if name in JOB else "advanced"
        fields.append(_field(name, request_schema["properties"][name], request_schema, group))
    for name in Context.model_fields:
        fields.append(_field(f"context.{name}", context_schema["properties"][name], context_schema, "context"))
    order = {name: index for index, name in enumerate(BASIC + ADVANCED + JOB)}
    fields.sort(key=lambda field: order.get(field["name"], len(order)))
    models = []
    for spec in catalog.values():
        capabilities = spec.capabilities.model_dump()
        models.append({
            "id": spec.id, "name": spec.name, "backend": spec.backend, "tiny": spec.tiny,
            "weights_present": spec.weights_present(), "capabilities": capabilities,
            "defaults": {"steps": spec.steps, "cfg": spec.cfg, "shift": spec.shift, "strength": spec.strength,
                         "negative_prompt": spec.negative_prompt, "context.size": spec.context_default,
                         "context.overlap": spec.context_overlap_default},
            "low_step": spec.accelerator is not None,
        })
    return {
        "models": models,
        "default_model": settings.default_model,
        "capability_fields": list(Capabilities.model_fields),
        "needs": NEEDS,
        "presets": [{"name": preset.name, "description": preset.description, "values": preset.values,
                     "available": preset.available, "unavailable": preset.unavailable}
                    for preset in presets.values()],
        "windows": sorted(settings.render_windows),
        "fields": fields,
    }


def _field(name: str, schema: dict, root: dict, group: str) -> dict:
    """A form field from the JSON schema of one request field: its widget, limits, choices and default."""
    options = [part for part in schema.get("anyOf", [schema]) if part.get("type") != "null"]
    part = options[0] if options else {}
    if "$ref" in part:
        part = root.get("$defs", {}).get(part["$ref"].rsplit("/", 1)[-1], {})
    kind = {"integer": "int", "number": "float", "boolean": "bool", "string": "text"}.get(part.get("type"), "json")
    if part.get("enum"):
        kind = "choice"
    if len(options) > 1 and name not in ("style_frame", "reference_frame"):
        kind = "json"
    label = LABELS.get(name, name.removeprefix("context.").replace("_", " "))
    field = {"name": name, "group": group, "kind": kind, "default": schema.get("default"), "label": label,
             "description": schema.get("description")}
    for limit in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "maxLength"):
        if limit in part:
            field[limit] = part[limit]
    if part.get("enum"):
        field["choices"] = part["enum"]
    if name == "controlnets":
        field["kind"] = "controlnets"
    elif name in ("style_frame", "reference_frame", "mask"):
        field["kind"] = "file"
    return field


FIELD_NAMES = tuple(sorted([*RenderRequest.model_fields, *(f"context.{name}" for name in Context.model_fields)],
                           key=len, reverse=True))


def check_request(settings: Settings, folder: Path, values: dict[str, Any]) -> dict:
    """Validate the page's request like a request file and estimate it like `hotshot estimate`.

    Returns {"ok": True, "request": ..., "estimate": ..., "settings": ...} or {"ok": False, "errors":
    {field: message}} where the field is "" for a refusal that names none.
    """
    if not isinstance(values, dict):
        return {"ok": False, "errors": {"": "the request must be a JSON object"}}
    request = {key: value for key, value in values.items() if value is not None}
    raw = json.dumps(request).encode()
    try:
        parsed = RenderRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            field = ".".join(loc[:2]) if loc and loc[0] == "context" else (loc[0] if loc else "")
            message = describe_errors(ValidationError.from_exception_data(exc.title, [error]))
            errors.setdefault(field, message)
        return {"ok": False, "errors": errors}
    try:
        reject_unsupported(parsed)
    except RequestError as exc:
        return {"ok": False, "errors": {_field_named(str(exc)): str(exc)}}
    result = estimate_raw(settings, folder, raw)
    if result["state"] == "failed":
        return {"ok": False, "errors": {_field_named(result["reason"]): result["reason"]}}
    return {"ok": True, "request": request, "state": result["state"], "reason": result.get("reason"),
            "estimate": result.get("estimate"), "settings": result.get("settings")}


def _field_named(message: str) -> str:
    """The request field a refusal is about: the first field it names (a leading "model 'x' ..." is the
    subject of the sentence, not the field), or "" when it names none."""
    found = []
    for name in FIELD_NAMES:
        for match in re.finditer(rf"(?<![\w.]){re.escape(name)}(?![\w])", message):
            if not (name == "model" and match.start() == 0):
                found.append((match.start(), -len(name), name))
    if not found and "ControlNet" in message:
        return "controlnets"
    return min(found)[2] if found else ""


SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(wanted: str, suffix: str, fallback: str) -> str:
    """A plain file name: letters, digits, dot, dash and underscore, not hidden, with `suffix`."""
    stem = SAFE.sub("_", Path(wanted).name).strip("._-")[:80]
    for ending in (suffix, *(s for s in (".png", ".jpg", ".jpeg", ".tif", ".tiff") if s != suffix)):
        if stem.lower().endswith(ending):
            stem = stem[: -len(ending)]
            break
    return (stem or fallback) + suffix


def write_new(folder: Path, name: str, data: bytes) -> str:
    """Write `data` into `folder` under `name`, or `name-2`, `-3` … : atomically, never over an existing file.

    The bytes go to a hidden temporary file (which the daemon ignores) and are linked to the final name;
    the link fails if that name exists, so nothing an editor put there is ever replaced.
    """
    tmp = folder / f".{name}.{os.getpid()}-{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        stem, dot, rest = name.partition(".")
        for number in range(1, 1000):
            final = name if number == 1 else f"{stem}-{number}{dot}{rest}"
            try:
                os.link(tmp, folder / final)
                return final
            except FileExistsError:
                continue
        raise HotshotError(f"{folder} already holds {name} and 999 numbered copies of it")
    finally:
        os.unlink(tmp)


def request_name(values: dict[str, Any]) -> str:
    """`plate-f24-71.render.json` for a range, `plate-full.render.json` for the whole clip."""
    stem = SAFE.sub("_", Path(str(values.get("source") or "render")).stem).strip("._-") or "render"
    span = values.get("frame_range")
    return f"{stem}-f{span[0]}-{span[1]}.render.json" if span else f"{stem}-full.render.json"
