"""Shared set-up for the benchmarks: the tiny model and synthetic clips, built locally."""

from __future__ import annotations

import subprocess
from pathlib import Path

from daemon.logs import configure
from engine.catalog import load_catalog
from engine.models import make_tiny

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / "var" / "bench"
configure("console", "warning")


def tiny_spec():
    spec = load_catalog([PROJECT / "config" / "models.toml"], PROJECT / "var" / "models")["tiny-wan-vace"]
    make_tiny(spec)
    return spec


def clip(frames: int, size: str = "320x180", rate: str = "25") -> Path:
    """A testsrc2 clip with `frames` frames (cached under var/bench)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"clip-{frames}-{size}.mp4"
    if not path.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc2=size={size}:rate={rate}", "-frames:v", str(frames),
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path
