"""How far a passthrough render's colours are from its source's, as a player shows the source (issue: untagged
sources looked colour-shifted beside their renders).

A picture of six flat colour patches is encoded as a short H.264 clip in each way sources come: untagged HD
(made with BT.709, as HD is), untagged SD (BT.601), tagged BT.709 at an SD size, tagged BT.601 at an HD size,
full range (a phone's yuvj420p, tagged), MJPEG (JPEG's full-range BT.601) and tagged BT.2020 (its matrix). Each
is rendered with the passthrough model (output = the decoded source frames), and the output, decoded by its own
BT.709 tags, is compared with the patches' RGB: the mean absolute error per channel (R, G, B) over the patches'
centres, and the largest. The source decoded as a player would (tags, else mpv's size rule) is printed beside
it: what encoding alone costs.

    .venv/bin/python bench/colour_check.py
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
from _common import PROJECT, WORK

from engine.catalog import load_catalog
from engine.job import RenderJob
from engine.models import ModelCache
from engine.render import render

FRAMES = 5
PATCHES = [(200, 40, 40), (40, 180, 60), (50, 70, 200), (220, 200, 60), (225, 170, 140), (90, 160, 220)]
"""Flat colours inside every matrix's gamut (no channel clips on the way through YUV)."""

# name: (size, encoding filter, pixel format, codec, output options (tags)), the player's (matrix, range)
CASES = {
    "untagged HD 1280x720": ("1280x720", "bt709", "tv", "yuv420p", "libx264", [], ("bt709", "tv")),
    "untagged SD 640x480": ("640x480", "bt601", "tv", "yuv420p", "libx264", [], ("bt601", "tv")),
    "tagged bt709 640x480": ("640x480", "bt709", "tv", "yuv420p", "libx264",
                             ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"],
                             ("bt709", "tv")),
    "tagged smpte170m 1280x720": ("1280x720", "bt601", "tv", "yuv420p", "libx264",
                                  ["-colorspace", "smpte170m", "-color_primaries", "smpte170m",
                                   "-color_trc", "smpte170m"], ("bt601", "tv")),
    "tagged bt470bg 1280x720": ("1280x720", "bt601", "tv", "yuv420p", "libx264", ["-colorspace", "bt470bg"],
                                ("bt601", "tv")),
    "full range bt709 1280x720": ("1280x720", "bt709", "pc", "yuvj420p", "libx264",
                                  ["-colorspace", "bt709", "-color_range", "pc"], ("bt709", "pc")),
    "full range, range tag only 1280x720": ("1280x720", "bt709", "pc", "yuv420p", "libx264",
                                            ["-color_range", "pc"], ("bt709", "pc")),
    "MJPEG 1280x720": ("1280x720", "bt601", "pc", "yuvj420p", "mjpeg", ["-q:v", "2"], ("bt601", "pc")),
    "tagged bt2020nc 1280x720": ("1280x720", "bt2020", "tv", "yuv420p", "libx264", ["-colorspace", "bt2020nc"],
                                 ("bt2020", "tv")),
}


def patches_picture(width: int, height: int) -> np.ndarray:
    """Three by two patches of PATCHES filling the frame (HxWx3 uint8 RGB)."""
    picture = np.zeros((height, width, 3), np.uint8)
    for index, colour in enumerate(PATCHES):
        row, column = divmod(index, 3)
        picture[row * height // 2:(row + 1) * height // 2, column * width // 3:(column + 1) * width // 3] = colour
    return picture


def patch_errors(frame: np.ndarray) -> np.ndarray:
    """Absolute error per patch and channel (6x3) of the mean of each patch's centre against its colour."""
    height, width = frame.shape[:2]
    errors = []
    for index, colour in enumerate(PATCHES):
        row, column = divmod(index, 3)
        top, left = row * height // 2, column * width // 3
        centre = frame[top + height // 8:top + 3 * height // 8, left + width // 12:left + 3 * width // 12]
        errors.append(np.abs(centre.reshape(-1, 3).astype(float).mean(axis=0) - colour))
    return np.array(errors)


def make_source(path: Path, case: tuple) -> Path:
    size, matrix, levels, pixel_format, codec, tags, _ = case
    width, height = (int(side) for side in size.split("x"))
    still = path.with_suffix(".png")
    cv2.imwrite(str(still), cv2.cvtColor(patches_picture(width, height), cv2.COLOR_RGB2BGR))
    container = ["-f", "avi"] if codec == "mjpeg" else []
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-loop", "1", "-framerate", "25",
                    "-i", str(still), "-frames:v", str(FRAMES),
                    "-vf", f"scale=out_color_matrix={matrix}:out_range={levels},format={pixel_format}",
                    "-c:v", codec, *tags, *container, str(path)], check=True)
    return path


def decoded(path: Path, matrix: str, levels: str) -> np.ndarray:
    """The first frame of `path` as RGB, read with the given matrix and range."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "csv=p=0", str(path)], check=True, capture_output=True)
    width, height = (int(side) for side in probe.stdout.decode().strip().split(","))
    done = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-frames:v", "1", "-vf",
                           f"scale=in_color_matrix={matrix}:in_range={levels}", "-f", "rawvideo", "-pix_fmt", "rgb24",
                           "-"], check=True, capture_output=True)
    return np.frombuffer(done.stdout, np.uint8).reshape(height, width, 3)


def rendered(source: Path, cache: ModelCache) -> Path:
    spec = load_catalog([PROJECT / "config" / "models.toml"], PROJECT / "var" / "models")["passthrough"]
    out, work = source.with_name(source.stem + "-render.mp4"), source.with_name(source.stem + "-work")
    shutil.rmtree(work, ignore_errors=True)
    stat = source.stat()
    render(RenderJob(job_id=1, render_id=source.stem, source=source, source_size=stat.st_size,
                     source_mtime_ns=stat.st_mtime_ns, frame_range=(0, FRAMES - 1), output_size=320, model=spec,
                     prompt="", negative_prompt="", steps=spec.steps, cfg=spec.cfg, seed=1, shift=spec.shift,
                     context_size=spec.context_default, context_overlap=spec.context_overlap_default,
                     output=out, manifest=out.with_suffix(".json"), work_dir=work), None, cache)
    return out


def main() -> None:
    folder = WORK / "colour-check"
    folder.mkdir(parents=True, exist_ok=True)
    cache = ModelCache()
    print(f"{'source':38} {'source as played':>22} {'render (mean R G B)':>24} {'worst':>6}")
    for number, (name, case) in enumerate(CASES.items()):
        suffix = ".avi" if case[4] == "mjpeg" else ".mp4"
        source = make_source(folder / f"case{number}{suffix}", case)
        played = patch_errors(decoded(source, *case[6])).mean(axis=0)
        errors = patch_errors(decoded(rendered(source, cache), "bt709", "tv"))
        mean = errors.mean(axis=0)
        print(f"{name:38} {' '.join(f'{value:5.1f}' for value in played):>22} "
              f"{' '.join(f'{value:6.1f}' for value in mean):>24} {errors.max():6.1f}")


if __name__ == "__main__":
    main()
