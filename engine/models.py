"""Loaded models, kept for the life of a worker, and tiny models built on demand."""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import structlog

from engine import faults
from engine.backends import Backend, build_tiny, load_backend
from engine.catalog import ModelSpec
from engine.errors import WeightsMissingError
from engine.weights import build_atomically

log = structlog.get_logger("hotshot.models")


def footprint(backend: Backend) -> int:
    """Bytes of parameters and buffers of a backend's torch modules (0 for a backend without any)."""
    if not any(hasattr(backend, name) for name in ("pipeline", "extra_modules", "model")):
        return 0  # a weightless backend: no need to import torch to know
    import torch

    modules = []
    pipeline = getattr(backend, "pipeline", None)
    if pipeline is not None and hasattr(pipeline, "components"):
        modules += [part for part in pipeline.components.values() if isinstance(part, torch.nn.Module)]
    modules += [part for part in getattr(backend, "extra_modules", []) if isinstance(part, torch.nn.Module)]
    if isinstance(getattr(backend, "model", None), torch.nn.Module):
        modules.append(backend.model)
    seen, total = set(), 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def ensure_weights(spec: ModelSpec) -> None:
    """Build a missing tiny model; refuse any other missing local weights with a clear message."""
    lora = spec.accelerator.lora if spec.accelerator else None
    tiny_lora_missing = spec.tiny and lora is not None and not Path(lora).exists()
    if spec.path is None or (spec.weights_present() and not tiny_lora_missing):
        return
    if spec.random_weights:
        raise WeightsMissingError(
            spec.id, spec.path,
            f"these are random full-size weights (4.6 GB); build them with `hotshot models make-random {spec.id}`",
        )
    if not spec.tiny:
        raise WeightsMissingError(
            spec.id, spec.path,
            "download or copy the diffusers weights there, or change `path` in the model catalog",
        )
    make_tiny(spec, force=tiny_lora_missing)


def make_tiny(spec: ModelSpec, force: bool = False) -> Path:
    """Build the tiny model of `spec` into its folder, atomically, unless it is already there."""
    if not spec.tiny or spec.path is None:
        raise ValueError(f"model {spec.id!r} is not a tiny model; only tiny-* models can be built")

    def build(staging: Path) -> None:
        build_tiny(spec.model_copy(update={"path": str(staging)}))

    return build_atomically(Path(spec.path), spec.weights_present, build, force)


def make_random(spec: ModelSpec, force: bool = False) -> Path:
    """Build the full-size random-weights model of `spec` (engine/fullsize.py) into its folder, atomically."""
    from engine.fullsize import build_full_wan_vace

    if not spec.random_weights or spec.path is None or spec.backend != "wan-vace":
        raise ValueError(f"model {spec.id!r} is not a random-weights Wan VACE model; only entries with "
                         "`random_weights = true` and backend \"wan-vace\" can be built")
    return build_atomically(Path(spec.path), spec.weights_present, build_full_wan_vace, force)


class ModelCache:
    """Backends loaded once per worker and reused for every job and chunk.

    With a memory budget, the least recently used models are dropped when a
    newly loaded one takes the total over it (the model in use is never dropped).
    """

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._loaded: OrderedDict[tuple[str, str, str], Backend] = OrderedDict()
        self._sizes: dict[tuple[str, str, str], int] = {}

    def get(self, spec: ModelSpec, device: str) -> Backend:
        key = (spec.id, spec.weights, device)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        ensure_weights(spec)
        faults.reached("load")
        try:
            self._loaded[key] = load_backend(spec, device)
        except OSError as exc:
            hint = "check the path, or that this machine can reach the hub" if spec.hub else "check the folder"
            raise WeightsMissingError(spec.id, spec.weights, f"{hint} ({exc})") from exc
        self._sizes[key] = footprint(self._loaded[key])
        self._evict(keep=key)
        return self._loaded[key]

    def resident_bytes(self, spec: ModelSpec, device: str) -> int:
        """Bytes of `spec`'s weights already loaded on `device` (0 when it is not loaded)."""
        return self._sizes.get((spec.id, spec.weights, device), 0)

    @property
    def loaded(self) -> list[str]:
        return [key[0] for key in self._loaded if not key[0].startswith("helper:")]

    @property
    def total_bytes(self) -> int:
        return sum(self._sizes.get(key, 0) for key in self._loaded)

    def _evict(self, keep: tuple[str, str, str]) -> None:
        if self.budget_bytes is None:
            return
        while self.total_bytes > self.budget_bytes and len(self._loaded) > 1:
            oldest = next(key for key in self._loaded if key != keep)
            del self._loaded[oldest]
            self._sizes.pop(oldest, None)
            log.info("model unloaded to stay within the cache budget", model=oldest[0])
            _release_memory()

    def helper(self, name: str, weights: str, device: str, load: Callable[[], object]) -> object:
        """A helper model (the captioner) from `weights`, loaded once and kept under the same budget; other
        weights under the same name are another model."""
        cache_key = (f"helper:{name}", weights, device)
        if cache_key in self._loaded:
            self._loaded.move_to_end(cache_key)
            return self._loaded[cache_key]
        self._loaded[cache_key] = load()
        self._sizes[cache_key] = footprint(self._loaded[cache_key])
        self._evict(keep=cache_key)
        return self._loaded[cache_key]

    def add(self, spec: ModelSpec, device: str, backend: Backend) -> None:
        """Use an already-built backend for this model (embedding hotshot, or a test's own backend)."""
        key = (spec.id, spec.weights, device)
        self._loaded[key] = backend
        self._sizes[key] = footprint(backend)

    def __contains__(self, model_id: str) -> bool:
        return any(key[0] == model_id for key in self._loaded)
