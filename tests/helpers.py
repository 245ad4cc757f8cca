"""Helpers for tests: synthetic clips, copies of the bundled media."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from engine.job import RenderJob


def make_clip(path: Path, frames: int, size: str = "160x96", rate: str = "25", source: str = "testsrc2",
              audio: bool = False, codec: str = "libx264") -> Path:
    """Write a synthetic clip with ffmpeg's test sources."""
    separator = ":" if "=" in source else "="
    inputs = ["-f", "lavfi", "-i", f"{source}{separator}size={size}:rate={rate}"]
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


class Recorder:
    """RenderEvents that remember everything and can ask to stop after N chunks."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.progress_seen = []
        self.chunks = []

    def progress(self, progress):
        self.progress_seen.append(progress)

    def chunk_done(self, record):
        self.chunks.append(record)

    def stop_requested(self):
        if self.stop_after is not None and len(self.chunks) >= self.stop_after:
            return "test asked to stop"
        return None


def make_job(tmp: Path, tiny_spec, source: Path, name: str = "out", **changes) -> RenderJob:
    stat = source.stat()
    values = dict(
        job_id=1, render_id=name, source=source, source_size=stat.st_size, source_mtime_ns=stat.st_mtime_ns,
        frame_range=(5, 52), output_size=64, model=tiny_spec, prompt="oil painting", negative_prompt="blurry",
        steps=2, cfg=5.0, seed=7, shift=3.0, context_size=17, context_overlap=5,
        output=tmp / f"{name}.mp4", manifest=tmp / f"{name}.render-info.json", work_dir=tmp / f"work-{name}",
        manifest_context={"lineage": {"chain": ["plate.mp4"]}, "request": {"path": "r.render.json"}},
    )
    values.update(changes)
    return RenderJob(**values)


def make_pan_clip(path: Path, frames: int = 48, size: tuple[int, int] = (256, 144), speed: int = 4) -> Path:
    """A camera pan across a smooth random texture: real motion that optical flow can follow."""
    import cv2
    import numpy as np

    width, height = size
    texture = np.random.default_rng(0).integers(0, 255, (height + 40, width + speed * frames, 3), dtype=np.uint8)
    texture = cv2.normalize(cv2.GaussianBlur(texture, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX)
    encoder = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo",
                                "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "25", "-i", "-",
                                "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p", str(path)],
                               stdin=subprocess.PIPE)
    for index in range(frames):
        view = texture[20:20 + height, speed * index:speed * index + width]
        encoder.stdin.write(np.ascontiguousarray(view).tobytes())
    encoder.stdin.close()
    if encoder.wait() != 0:
        raise RuntimeError("ffmpeg could not write the pan clip")
    return path
