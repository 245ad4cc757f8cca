"""Render one request per setting with the tiny Wan VACE and compare every output frame by frame.

Each setting renders 17 frames of the Chaplin clip at 64x32 with a PNG sequence; the base request also renders
an EXR sequence. Printed: for each render, how far its MP4 is from its own PNG frames (compression only) and
how far its frames are from the base render's (the setting's effect); and the base's EXR against its PNG and
MP4. Run: `.venv/bin/python bench/compare_settings.py` (about 5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from _common import PROJECT, WORK, tiny_spec

from engine.catalog import load_catalog
from engine.controls import load_control_catalog
from engine.decode import read_frames
from engine.job import ControlSpec, RenderJob
from engine.masks import MaskSpec
from engine.models import ModelCache
from engine.render import render
from engine.sequence import linear_to_srgb8, read_exr
from engine.stills import StillSpec

CATALOG = PROJECT / "config" / "models.toml"
RANGE = (100, 116)
WIDTH, HEIGHT = 64, 32


def job(folder: Path, spec, name: str, **changes) -> RenderJob:
    plate = folder / "plate.mp4"
    stat = plate.stat()
    values = dict(
        job_id=1, render_id=name, source=plate, source_size=stat.st_size, source_mtime_ns=stat.st_mtime_ns,
        frame_range=RANGE, output_size=WIDTH, model=spec, prompt="oil painting", negative_prompt="blurry",
        steps=2, cfg=5.0, seed=7, shift=3.0, context_size=17, context_overlap=5, image_sequence="png",
        output=folder / f"{name}.mp4", manifest=folder / f"{name}.render-info.json", work_dir=folder / f"work-{name}",
        control_catalog=load_control_catalog([CATALOG], PROJECT / "var" / "models"),
        control_cache=folder / "controls", manifest_context={},
    )
    values.update(changes)
    return RenderJob(**values)


def sequence(folder: Path, fmt: str) -> np.ndarray:
    paths = sorted(folder.glob(f"*.{fmt}"))
    if fmt == "exr":
        return np.stack([linear_to_srgb8(read_exr(path)) for path in paths]).astype(int)
    return np.stack([cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in paths]).astype(int)


def mp4(path: Path) -> np.ndarray:
    return np.stack(list(read_frames(path, 0, RANGE[1] - RANGE[0], WIDTH, HEIGHT))).astype(int)


def compare(a: np.ndarray, b: np.ndarray) -> str:
    per_frame = np.abs(a - b).mean(axis=(1, 2, 3))
    worst = int(per_frame.argmax())
    return (f"mean {per_frame.mean():6.2f}  worst frame {worst:2d}: mean {per_frame[worst]:6.2f} "
            f"max {np.abs(a - b).max():3d}")


def main() -> None:
    spec = tiny_spec()
    models = load_catalog([CATALOG], PROJECT / "var" / "models")
    folder = WORK / "compare-settings"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(PROJECT / "tests" / "data" / "chaplin.mp4", folder / "plate.mp4")
    shutil.copyfile(PROJECT / "tests" / "data" / "mask-shape.mp4", folder / "matte.mp4")
    style = np.zeros((200, 300, 3), np.uint8)
    style[:, :, 2] = np.linspace(0, 255, 300, dtype=np.uint8)[None, :]
    style[:, :, 0] = 220
    cv2.imwrite(str(folder / "style.png"), style)
    cv2.imwrite(str(folder / "grey.png"), np.full((64, 64, 3), 128, np.uint8))
    settings = {
        "base": {},
        "prompt": {"prompt": "watercolor sketch of a city at night"},
        "seed": {"seed": 8},
        "style_frame": {"style_frame": StillSpec(path=folder / "style.png")},
        "style_keyframe": {"style_frame": StillSpec(keyframe=200)},
        "reference_frame": {"reference_frame": StillSpec(path=folder / "grey.png")},
        "mask": {"mask": MaskSpec(path=folder / "matte.mp4")},
        "depth": {"controls": [ControlSpec(type="depth")]},
        "softedge": {"controls": [ControlSpec(type="softedge")]},
        "pose": {"controls": [ControlSpec(type="pose")]},
        "depth+pose": {"controls": [ControlSpec(type="depth+pose")]},
        "low_step_lora": {"accelerator_lora": spec.accelerator.lora, "cfg": 1.0},
        "shift": {"shift": 8.0},
        "interpolation": {"interpolation": True},
        "color_consistency": {"color_consistency": 1.0},
        "strength (wan-v2v)": {"model": models["tiny-wan-v2v"]},
        "animatediff depth": {"model": models["tiny-animatediff"], "steps": 4, "context_size": 16,
                              "context_overlap": 4, "controls": [ControlSpec(type="depth")]},
    }
    cache = ModelCache()
    frames = {}
    for index, (name, changes) in enumerate(settings.items()):
        render_id = f"r{index:02d}"
        render(job(folder, spec, render_id, **changes), None, cache)
        frames[name] = (sequence(folder / render_id, "png"), mp4(folder / f"{render_id}.mp4"))
    render(job(folder, spec, "base-exr", image_sequence="exr"), None, cache)
    exr = sequence(folder / "base-exr", "exr")
    base_png, base_mp4 = frames["base"]
    print(f"{RANGE[1] - RANGE[0] + 1} frames of chaplin.mp4 at {WIDTH}x{HEIGHT}, tiny models; "
          "differences in 8-bit levels")
    print(f"{'base EXR vs base PNG':28s} {compare(exr, base_png)}")
    print(f"{'base EXR vs base MP4':28s} {compare(exr, base_mp4)}")
    for name, (png, video) in frames.items():
        print(f"{name + ' MP4 vs its PNG':28s} {compare(video, png)}")
    for name, (png, _) in frames.items():
        if name != "base":
            print(f"{name + ' vs base (PNG)':28s} {compare(png, base_png)}")
    pairs = [(a, b) for a in frames for b in frames if a < b]
    nearest = sorted(pairs, key=lambda pair: np.abs(frames[pair[0]][0] - frames[pair[1]][0]).mean())[:3]
    for a, b in nearest:
        print(f"closest pair: {a} / {b}: {compare(frames[a][0], frames[b][0])}")


if __name__ == "__main__":
    main()
