"""Which devices get a worker process, found without importing torch.

`devices = "auto"` means one worker per CUDA device the driver reports
(`nvidia-smi -L`, else /proc/driver/nvidia/gpus), narrowed by
CUDA_VISIBLE_DEVICES. When none can be counted the daemon starts one "auto"
worker, which picks CUDA or the CPU itself once torch is loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from engine.devices import device_kind as engine_device_kind

NVIDIA_SMI_TIMEOUT_SECONDS = 10.0
PROC_GPUS = Path("/proc/driver/nvidia/gpus")


def worker_devices(setting: list[str] | str) -> list[str]:
    """One entry per worker process: the configured list, or the CUDA devices found for "auto"."""
    if isinstance(setting, list):
        return list(setting)
    count = cuda_device_count()
    return [f"cuda:{index}" for index in range(count)] if count else ["auto"]


def device_kind(devices: list[str]) -> str:
    """"cuda" or "cpu" for the workers' devices: the calibration the cost estimates use."""
    if any(engine_device_kind(device) == "cuda" for device in devices):
        return "cuda"
    if "auto" in devices and (shutil.which("nvidia-smi") or Path("/dev/nvidia0").exists()):
        return "cuda"
    return "cpu"


def cuda_device_count() -> int:
    """CUDA devices this process may use, or 0 when that cannot be told."""
    found = _count_from_nvidia_smi() or _count_from_proc()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    listed = [entry for entry in visible.split(",") if entry.strip() and entry.strip() != "-1"]
    return min(found, len(listed)) if found else 0


def _count_from_nvidia_smi() -> int:
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return 0
    try:
        done = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_SECONDS,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if done.returncode != 0:
        return 0
    return sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))


def _count_from_proc() -> int:
    try:
        return sum(1 for entry in PROC_GPUS.iterdir() if entry.is_dir())
    except OSError:
        return 0
