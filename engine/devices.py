"""Which device and dtypes a model runs with.

Torch is imported only by the functions that need it: the daemon and the CLI
ask `device_kind` without paying for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(requested: str) -> str:
    """`auto` means the first CUDA device when there is one, else the CPU."""
    if requested == "cpu":
        return requested  # nothing to ask torch (a render without a torch model never imports it)
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was asked for, but torch sees no CUDA device")
    return requested


def device_kind(device: str) -> str:
    """`cuda` for any CUDA device (and `auto`'s pick is decided by the worker), else `cpu`."""
    return "cuda" if device.startswith("cuda") else "cpu"


def dtype_named(name: str) -> torch.dtype:
    import torch

    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"{name!r} is not a torch dtype (use float32, bfloat16 or float16)")
    return value
