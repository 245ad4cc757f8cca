"""Helpers for tests: synthetic clips, copies of the bundled media."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def make_clip(path: Path, frames: int, size: str = "160x96", rate: str = "25", source: str = "testsrc2",
              audio: bool = False, codec: str = "libx264") -> Path:
    """Write a synthetic clip with ffmpeg's test sources."""
    inputs = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={rate}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs, "-frames:v", str(frames)]
    if audio:
        command += ["-shortest", "-c:a", "aac"]
    command += ["-c:v", codec, "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(command, check=True)
    return path


def copy_media(media: Path, name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(media / name, dest)
    return dest
