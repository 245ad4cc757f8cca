"""Where weights live (a local folder or a hub id), reading catalog files, and building tiny models atomically.

Shared by the diffusion model catalog, the control preprocessors and the captioner: each names its weights
the same way and builds its tiny random stand-in the same way.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from engine.files import FileLock


class CatalogError(ValueError):
    """The model catalog cannot be read or has an invalid entry."""


def read_catalog_file(file: Path) -> dict:
    """One catalog file's TOML, or a CatalogError that names it."""
    try:
        return tomllib.loads(Path(file).read_text())
    except FileNotFoundError as exc:
        raise CatalogError(f"model catalog {file} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"model catalog {file} is not valid TOML: {exc}") from exc


def weights_location(path: str | None, hub: str | None, revision: str | None) -> str:
    """A local folder, or a hub id with its @revision."""
    if path is not None:
        return path
    return f"{hub}@{revision}" if revision else str(hub)


def weights_present(path: str | None, hub: str | None, revision: str | None, marker: str) -> bool:
    """The folder holds `marker` (its config), or the hub repository's is in the local hub cache."""
    if path is not None:
        return (Path(path) / marker).is_file()
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub, marker, revision=revision), str)


class TransformersFolder:
    """For a catalog entry with `path`, `hub` and `revision` fields whose weights are a transformers model
    (a config.json): where they are, and whether they are here."""

    @property
    def weights(self) -> str:
        """Where the weights are: a local folder or a hub id (with @revision)."""
        return weights_location(self.path, self.hub, self.revision)

    def weights_present(self) -> bool:
        return weights_present(self.path, self.hub, self.revision, "config.json")


def build_atomically(final: Path, present: Callable[[], bool], build: Callable[[Path], None],
                     force: bool = False) -> Path:
    """Build into a hidden staging folder beside `final`, then rename it into place.

    A lock beside the folder lets several processes ask at once: one builds, the others find it built.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(final.parent / f".{final.name}.lock"):
        if present() and not force:
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
        try:
            build(staging)
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def refill_random(module, seed: int, gain: float = 1.0, bias: float | None = None) -> None:
    """Give every convolution and linear layer of a torch module seeded random weights of variance gain²/fan-in.

    For tiny models: PyTorch's default initialisation shrinks a signal by about √3 per layer, and zero-initialised
    layers (ControlNet zero convolutions, adapters) pass nothing at all, so a random tiny model's output would
    hardly depend on its inputs. Variance-preserving weights keep every input's effect measurable. With `bias`,
    biases are drawn with that standard deviation too; otherwise they are left as they are.
    """
    import math

    import torch

    generator = torch.Generator().manual_seed(seed)
    layers = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
    with torch.no_grad():
        for layer in module.modules():
            if not isinstance(layer, layers):
                continue
            fan_in = layer.weight[0].numel()
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * gain / math.sqrt(fan_in))
            if bias is not None and layer.bias is not None:
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * bias)
