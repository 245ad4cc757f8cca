"""The render request: every setting of the Render Video workspace, as a JSON file.

Unknown fields and wrong types are refused with the field and the value named.
Fields whose feature is not built yet are accepted only at their default;
any other value is refused with "<field> is not supported yet".
"""

from __future__ import annotations

import contextlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.errors import RequestError, UnsupportedSettingError
from engine.catalog import ControlType
from engine.codecs import CodecName

DEFAULT_CONTEXT_SIZE = 150
DEFAULT_CONTEXT_OVERLAP = 17
DEFAULT_OUTPUT_SIZE = 1280
MAX_KEYFRAMES = 256


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Context(Strict):
    size: int = Field(default=DEFAULT_CONTEXT_SIZE, ge=1, le=1024)
    overlap: int = Field(default=DEFAULT_CONTEXT_OVERLAP, ge=0, le=512)
    start_frame_buffer: int = Field(default=1, ge=0, le=64)
    dynamic_reference: bool = True


class Keyframe(Strict):
    keyframe: int = Field(ge=0)


class PaintedKeyframe(Strict):
    """A painted image that the render must show at source frame `frame` (inside the range)."""

    frame: int = Field(ge=0)
    image: str = Field(min_length=1, max_length=1000)


class ControlNet(Strict):
    type: ControlType
    strength: float = Field(default=1.0, ge=0.0, le=2.0)


class RenderRequest(Strict):
    preset: str | None = None
    model: str | None = None
    source: str | None = None
    style_frame: str | Keyframe | None = None
    reference_frame: str | None = None
    keyframes: list[PaintedKeyframe] = Field(default_factory=list, max_length=MAX_KEYFRAMES)
    prompt: str = Field(default="", max_length=4000)
    auto_prompt: bool = False
    negative_prompt: str | None = Field(default=None, max_length=4000)
    controlnets: list[ControlNet] = Field(default_factory=list, max_length=8)
    mask: str | None = None
    mask_feather: int = Field(default=0, ge=0, le=256)
    mask_grow: int = Field(default=0, ge=0, le=256)
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    output_size: int = Field(default=DEFAULT_OUTPUT_SIZE, ge=64, le=4096)
    steps: int | None = Field(default=None, ge=1, le=200)
    interpolation: bool = False
    image_sequence: Literal["png", "exr"] | None = None
    output_codec: CodecName = "h264"
    cfg: float | None = Field(default=None, ge=0.0, le=30.0)
    color_consistency: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    shift: float | None = Field(default=None, gt=0.0, le=100.0)
    low_step: bool = False
    context: Context = Field(default_factory=Context)
    frame_range: tuple[int, int] | None = None
    priority: int = Field(default=0, ge=-1000, le=1000)
    when: str = Field(default="now", max_length=100)
    cancel: bool = False

    @field_validator("frame_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None:
            first, last = value
            if first < 0 or last < first:
                raise ValueError(f"must be [first, last] with 0 <= first <= last, got [{first}, {last}]")
        return value


SUPPORTED = {
    "preset", "model", "source", "style_frame", "reference_frame", "prompt", "negative_prompt", "output_size",
    "keyframes", "mask", "mask_feather", "mask_grow", "strength",
    "steps", "interpolation", "image_sequence", "output_codec", "cfg", "color_consistency", "seed", "shift", "low_step",
    "context.size", "context.overlap", "context.start_frame_buffer", "context.dynamic_reference", "frame_range",
    "priority", "when", "cancel", "controlnets", "auto_prompt",
}


def parse_request(raw: bytes, max_bytes: int) -> RenderRequest:
    """Parse and validate a request file's bytes; raise `RequestError` with a readable message."""
    if len(raw) > max_bytes:
        raise RequestError(f"the request is {len(raw)} bytes, over the limit of {max_bytes} bytes")
    try:
        text = raw.decode("utf-8-sig")  # many editors on Windows begin a UTF-8 file with a byte order mark
    except UnicodeDecodeError as exc:
        raise RequestError(f"the request is not UTF-8 text (bad byte at position {exc.start})") from exc
    if not text.strip():
        raise RequestError("the request file is empty; it must hold a JSON object such as {\"prompt\": \"...\"}")
    refuse_duplicate_keys(text)
    try:
        request = RenderRequest.model_validate_json(text)
    except ValidationError as exc:
        raise RequestError(describe_errors(exc)) from exc
    reject_unsupported(request)
    return request


def refuse_duplicate_keys(text: str) -> None:
    """A key written twice in one object is refused, naming it: JSON parsers keep one of the two silently,
    so the user could not tell which value is used. (Text that is not JSON is described by the validation.)"""

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen = set()
        for key, _value in items:
            if key in seen:
                raise RequestError(f"the key {key!r} appears twice in one object of the request; keep one")
            seen.add(key)
        return dict(items)

    with contextlib.suppress(ValueError, RecursionError):
        json.loads(text, object_pairs_hook=pairs)


def describe_errors(exc: ValidationError) -> str:
    messages = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        kind = error["type"]
        if kind == "json_invalid":
            messages.append(f"the request is not valid JSON: {error['ctx'].get('error', error['msg'])}")
        elif kind == "model_type" and not where:
            messages.append("the request must be a JSON object, like {\"prompt\": \"oil painting\"}")
        elif kind == "extra_forbidden":
            messages.append(f"unknown field {where!r}; see docs/requests.md for the fields a request may have")
        else:
            shown = _show(error.get("input"))
            if len(shown) > 60:
                shown = shown[:57] + "..."
            messages.append(f"{where or 'request'}: {error['msg']} (got {shown})")
    return "; ".join(dict.fromkeys(messages))


def _show(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def reject_unsupported(request: RenderRequest) -> None:
    """Refuse any setting this version cannot honour yet, rather than ignore it."""
    defaults = RenderRequest()
    for name in RenderRequest.model_fields:
        if name == "context":
            for sub in Context.model_fields:
                changed = getattr(request.context, sub) != getattr(defaults.context, sub)
                if f"context.{sub}" not in SUPPORTED and changed:
                    raise UnsupportedSettingError(f"context.{sub}")
        elif name not in SUPPORTED and getattr(request, name) != getattr(defaults, name):
            raise UnsupportedSettingError(name)
