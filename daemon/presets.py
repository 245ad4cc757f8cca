"""Presets: named quick-starts that set a model and a baseline of request settings."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from daemon.errors import ConfigError, RequestError
from daemon.request import RenderRequest, describe_errors


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    available: bool = True
    unavailable: str | None = None
    requires: list[str] = []
    values: dict[str, Any]


def load_presets(path: Path) -> dict[str, Preset]:
    """Presets from a TOML file; every preset's values must form a valid request."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"presets file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"presets file {path} is not valid TOML: {exc}") from exc
    presets = {}
    for name, entry in (data.get("presets") or {}).items():
        entry = dict(entry)
        meta = {key: entry.pop(key) for key in ("description", "available", "unavailable", "requires") if key in entry}
        try:
            RenderRequest.model_validate_json(json.dumps(entry))
        except ValidationError as exc:
            raise ConfigError(f"{path}: preset {name!r} is invalid: {describe_errors(exc)}") from exc
        presets[name] = Preset(name=name, values=entry, **meta)
    return presets


def apply_preset(request: RenderRequest, presets: dict[str, Preset]) -> tuple[RenderRequest, dict[str, Any]]:
    """The request with its preset's values under it, and the values the preset supplied (flat, dotted names)."""
    if request.preset is None:
        return request, {}
    preset = presets.get(request.preset)
    if preset is None:
        known = ", ".join(sorted(presets)) or "none"
        raise RequestError(f"unknown preset {request.preset!r}; the presets are: {known}")
    if not preset.available:
        raise RequestError(f"preset {preset.name!r} is not available yet: {preset.unavailable}")
    given = request.model_dump(mode="json", exclude_unset=True)
    missing = [name for name in preset.requires if given.get(name) is None]
    if missing:
        raise RequestError(f"preset {preset.name!r} needs {' and '.join(missing)} in the request")
    merged = {**preset.values, **given}
    if isinstance(preset.values.get("context"), dict):
        merged["context"] = {**preset.values["context"], **given.get("context", {})}
    try:
        combined = RenderRequest.model_validate_json(json.dumps(merged))
    except ValidationError as exc:
        raise RequestError(describe_errors(exc)) from exc
    supplied = {f"context.{key}": value for key, value in (preset.values.get("context") or {}).items()}
    supplied.update({key: value for key, value in preset.values.items() if key != "context"})
    return combined, supplied
