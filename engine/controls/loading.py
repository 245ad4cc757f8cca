"""Control models loaded once per process and kept until `unload_models`."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, TypeVar

from engine.controls.catalog import TransformersWeights
from engine.controls.tiny import make_tiny_control
from engine.errors import WeightsMissingError

T = TypeVar("T")
_loaded: dict[tuple[str, ...], Any] = {}


def kept(key: tuple[str, ...], load: Callable[[], T]) -> T:
    """What `load()` returns, loaded once per process for this key."""
    if key not in _loaded:
        _loaded[key] = load()
    return _loaded[key]


def load_transformers(role: str, spec: TransformersWeights, device: str, model_class: str) -> tuple[Any, Any]:
    """The model (a transformers Auto*/model class name) and its image processor for a `[controls]` role."""

    def load() -> tuple[Any, Any]:
        import transformers

        ensure_weights(role, spec)
        options = {"revision": spec.revision} if spec.hub is not None else {}
        location = spec.path if spec.path is not None else spec.hub
        try:
            model = getattr(transformers, model_class).from_pretrained(location, **options)
            # torchvision is optional, so always use the PIL image processors.
            processor = transformers.AutoImageProcessor.from_pretrained(location, backend="pil", **options)
        except OSError as exc:
            hint = "check that the hub id exists and this machine can reach the hub" if spec.hub else "check the folder"
            raise WeightsMissingError(f"[controls] {role}", spec.weights, f"{hint} ({exc})") from exc
        return model.to(device).eval(), processor

    return kept((role, spec.identity(), device), load)


def ensure_weights(role: str, spec: TransformersWeights) -> None:
    """Build a missing tiny model; refuse other missing local weights with what to do."""
    if spec.path is None or spec.weights_present():
        return
    if not spec.tiny:
        raise WeightsMissingError(
            f"[controls] {role}", spec.path,
            "copy the model's save_pretrained folder there, or change that entry of [controls] in the model catalog",
        )
    make_tiny_control(role, spec)


def unload_models() -> None:
    """Drop every loaded control model (to give its memory to the render model)."""
    _loaded.clear()
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
