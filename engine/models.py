"""Loaded models, kept for the life of a worker, and tiny models built on demand."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from pathlib import Path

from engine.backends import Backend, build_tiny, load_backend
from engine.catalog import ModelSpec
from engine.errors import WeightsMissingError


def ensure_weights(spec: ModelSpec) -> None:
    """Build a missing tiny model; refuse any other missing local weights with a clear message."""
    lora = spec.accelerator.lora if spec.accelerator else None
    tiny_lora_missing = spec.tiny and lora is not None and not Path(lora).exists()
    if spec.path is None or (spec.weights_present() and not tiny_lora_missing):
        return
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
    final = Path(spec.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if spec.weights_present() and not force:
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
        try:
            build_tiny(spec.model_copy(update={"path": str(staging)}))
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


class ModelCache:
    """Backends loaded once per worker and reused for every job and chunk."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str, str], Backend] = {}

    def get(self, spec: ModelSpec, device: str) -> Backend:
        key = (spec.id, spec.weights, device)
        if key not in self._loaded:
            ensure_weights(spec)
            self._loaded[key] = load_backend(spec, device)
        return self._loaded[key]

    def add(self, spec: ModelSpec, device: str, backend: Backend) -> None:
        """Use an already-built backend for this model (embedding hotshot, or a test's own backend)."""
        self._loaded[(spec.id, spec.weights, device)] = backend

    def __contains__(self, model_id: str) -> bool:
        return any(key[0] == model_id for key in self._loaded)
