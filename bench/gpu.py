"""Wan VACE 1.3B on a GPU: frames per second, seconds per step and peak GPU memory, plain diffusers beside hotshot.

The model has the published 1.3B configuration with random weights (speed does not depend on what the weights
are; `engine/fullsize.py` builds it). For 81, 161 and 321 frames at 832x480 it times:

- `diffusers`: `WanVACEPipeline` called as its documentation shows (video, an all-white mask, prompt,
  `num_frames=81`), the clip cut into consecutive 81-frame calls the way a user would for a longer clip;
- hotshot's path (`engine.render` on an MP4 of the clip: decode, chunks with their overlap, encode, Render
  Info) with the speed-ups added one at a time: none (float32, two transformer passes per step, the math
  attention kernel), then a bf16 transformer with a float32 VAE, fused attention, batched CFG, torch.compile.

Each row is timed after a warm-up render of the same kind (model load, weight hashing, compilation), and its
peak GPU memory is `torch.cuda.max_memory_allocated` over the timed run; memory must stay flat as the clip
grows. Without CUDA it says so and exits 0; `--cpu-smoke` runs the same code on the CPU with the tiny model at
a tiny size and prints no figures.

    .venv/bin/python bench/gpu.py                       # on a CUDA machine: the table
    .venv/bin/python bench/gpu.py --lengths 81 --steps 4 --rows diffusers all   # a short run
    .venv/bin/python bench/gpu.py --cpu-smoke           # anywhere: proves the script runs
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from _common import PROJECT, WORK, clip, tiny_spec

from engine.catalog import load_catalog
from engine.job import RenderJob
from engine.models import ModelCache
from engine.render import render

PROMPT = "an oil painting of a city street at dusk, thick brush strokes"
NEGATIVE = "blurry, low quality"
CFG = 5.0
GOAL = 1.5  # hotshot with every speed-up, over plain diffusers, on one H200

# Each hotshot row adds one speed-up to the row before it.
LADDER: dict[str, dict] = {
    "none": {"dtype": "float32", "batched_cfg": False, "fused_attention": False, "compile": False},
    "bf16": {"dtype": "bfloat16", "batched_cfg": False, "fused_attention": False, "compile": False},
    "fused": {"dtype": "bfloat16", "batched_cfg": False, "fused_attention": True, "compile": False},
    "batched": {"dtype": "bfloat16", "batched_cfg": True, "fused_attention": True, "compile": False},
    "all": {"dtype": "bfloat16", "batched_cfg": True, "fused_attention": True, "compile": True},
}
ROWS = ("diffusers", *LADDER)
# float32 without fused attention is several times slower at full size: measured only when asked for.
DEFAULT_ROWS = ("diffusers", "bf16", "fused", "batched", "all")
TITLES = {"diffusers": "diffusers WanVACEPipeline as documented", "none": "hotshot, no speed-ups (float32)",
          "bf16": "hotshot + bf16 transformer, float32 VAE", "fused": "hotshot + fused attention",
          "batched": "hotshot + batched CFG", "all": "hotshot + torch.compile (all speed-ups)"}


@dataclass(frozen=True)
class Setup:
    """What one run of the benchmark measures on: the device, sizes, chunking and the two forms of the model."""

    device: str
    width: int
    height: int
    lengths: tuple[int, ...]
    chunk: int
    overlap: int
    steps: int
    plain: Plain
    model_folder: Path  # the same model saved as a diffusers folder, for hotshot's catalog entry
    catalog_entry: str


class Plain:
    """The plain diffusers pipeline, built on first use (only in the process measuring its row)."""

    def __init__(self, build) -> None:
        self._build = build
        self._pipe = None

    def get(self):
        if self._pipe is None:
            self._pipe = self._build()
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe


@dataclass
class Row:
    name: str
    frames: int
    calls: int
    diffused: int
    seconds: float
    step_seconds: float
    peak_gib: float | None


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def decoded(path: Path, width: int, height: int, count: int) -> list[np.ndarray]:
    """The clip's first `count` frames as RGB arrays, what a user of the plain pipeline would load."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-frames:v", str(count),
                          "-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return list(np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3))


def plain_windows(frames: int, chunk: int) -> list[tuple[int, int]]:
    """Consecutive `chunk`-frame calls covering the clip, the last one moved back to end on the last frame."""
    starts = list(range(0, max(frames - chunk, 0) + 1, chunk))
    if starts[-1] + chunk < frames:
        starts.append(frames - chunk)
    return [(start, min(start + chunk, frames)) for start in starts]


def run_plain(setup: Setup, frames: list[np.ndarray]) -> Row:
    """The documented WanVACEPipeline call, once per 81-frame piece of the clip."""
    import torch
    from PIL import Image

    pipe = setup.plain.get()
    windows = plain_windows(len(frames), setup.chunk)
    reset_peak(setup.device)
    started = time.perf_counter()
    for start, end in windows:
        video = [Image.fromarray(frame) for frame in frames[start:end]]
        mask = [Image.new("L", (setup.width, setup.height), 255)] * len(video)
        pipe(video=video, mask=mask, prompt=PROMPT, negative_prompt=NEGATIVE, height=setup.height,
             width=setup.width, num_frames=len(video), num_inference_steps=setup.steps, guidance_scale=CFG,
             generator=torch.Generator().manual_seed(start), output_type="np")
    synchronize(setup.device)
    seconds = time.perf_counter() - started
    return Row("diffusers", len(frames), len(windows), sum(end - start for start, end in windows), seconds,
               seconds / (len(windows) * setup.steps), peak_gib(setup.device))


def hotshot_job(setup: Setup, settings: dict, source: Path, frames: int, name: str) -> RenderJob:
    catalog = load_catalog([PROJECT / "config" / "models.toml"], PROJECT / "var" / "models")
    kind = "cuda" if setup.device.startswith("cuda") else "cpu"
    spec = catalog[setup.catalog_entry].model_copy(update={
        "path": str(setup.model_folder), "hub": None, "batched_cfg": settings["batched_cfg"],
        "fused_attention": settings["fused_attention"], "compile": settings["compile"],
        "dtype": {kind: settings["dtype"]}, "vae_dtype": {kind: "float32"}})
    stat = source.stat()
    out = WORK / "gpu" / f"{name}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    return RenderJob(job_id=1, render_id=name, source=source, source_size=stat.st_size,
                     source_mtime_ns=stat.st_mtime_ns, frame_range=(0, frames - 1), output_size=setup.width,
                     model=spec, prompt=PROMPT, negative_prompt=NEGATIVE, steps=setup.steps, cfg=CFG, seed=1,
                     shift=spec.shift, context_size=setup.chunk, context_overlap=setup.overlap, output=out,
                     manifest=out.with_suffix(".json"), work_dir=out.parent / f"{name}-work",
                     hash_cache=WORK / "gpu" / "hashes", device=setup.device, start_frame_buffer=0)


def run_hotshot(setup: Setup, name: str, cache: ModelCache, source: Path, frames: int) -> Row:
    """engine.render of the clip's first `frames` frames with this row's speed-ups."""
    job = hotshot_job(setup, LADDER[name], source, frames, f"{name}-{frames}")
    shutil.rmtree(job.work_dir, ignore_errors=True)
    reset_peak(setup.device)
    started = time.perf_counter()
    result = render(job, None, cache)
    synchronize(setup.device)
    seconds = time.perf_counter() - started
    written = result.manifest_data
    chunks, diffusion, used = len(written["chunk_plan"]["chunks"]), written["timing"]["parts"]["diffusion"], \
        written["speed_ups"]
    wanted = LADDER[name]
    if (used["transformer_dtype"], used["batched_cfg"], used["compile"]) != \
            (wanted["dtype"], wanted["batched_cfg"], wanted["compile"]):
        raise RuntimeError(f"row {name!r} asked for {wanted} but the Render Info says {used}")
    return Row(name, result.frames, chunks, written["frames_diffused"], seconds, diffusion / (chunks * setup.steps),
               peak_gib(setup.device))


def measure_row(setup: Setup, name: str) -> list[Row]:
    """One row at every clip length, after a warm-up of its kind."""
    longest = max(setup.lengths)
    source = clip(longest, f"{setup.width}x{setup.height}")
    if name == "diffusers":
        frames = decoded(source, setup.width, setup.height, longest)
        run_plain(setup, frames[: setup.chunk])  # warm-up
        return [run_plain(setup, frames[:length]) for length in setup.lengths]
    cache = ModelCache()
    # Warm-up: load, weight hashes, and with compile both chunk shapes (chunks after the first have a
    # reference frame, one more latent frame).
    warm = 2 * setup.chunk - setup.overlap if LADDER[name]["compile"] else setup.chunk
    run_hotshot(setup, name, cache, source, min(warm, longest))
    return [run_hotshot(setup, name, cache, source, length) for length in setup.lengths]


def measure(args, rows: list[str]) -> list[Row]:
    """Each row in a process of its own, so that no row's models, compiled code or allocator cache count in
    another's peak memory; a row that fails is reported and the others still run."""
    found: list[Row] = []
    for name in rows:
        command = [sys.executable, __file__, "--one-row", name, "--steps", str(args.steps),
                   "--lengths", *map(str, args.lengths), *(["--cpu-smoke"] if args.cpu_smoke else [])]
        done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT)
        if done.returncode != 0:
            print(f"{TITLES[name]}: failed ({done.stderr.strip().splitlines()[-1:] or done.returncode})")
            continue
        found += [Row(**row) for row in json.loads(done.stdout.strip().splitlines()[-1])]
    return found


def table(found: list[Row], smoke: bool) -> str:
    lines = [f"{'row':<48} {'frames':>6} {'calls':>5} {'diffused':>8} {'wall s':>8} {'frames/s':>8} "
             f"{'s/step':>7} {'peak GiB':>8}"]
    for row in found:
        peak = f"{row.peak_gib:8.2f}" if row.peak_gib is not None else f"{'-':>8}"
        lines.append(f"{TITLES[row.name]:<48} {row.frames:>6} {row.calls:>5} {row.diffused:>8} {row.seconds:>8.2f} "
                     f"{row.frames / row.seconds:>8.3f} {row.step_seconds:>7.3f} {peak}")
    if smoke:
        lines.append("smoke only, not figures (CPU, tiny model, tiny size)")
        return "\n".join(lines)
    for name in dict.fromkeys(row.name for row in found):
        mine = [row for row in found if row.name == name and row.peak_gib is not None]
        if len(mine) > 1:
            growth = mine[-1].peak_gib / mine[0].peak_gib
            lines.append(f"{TITLES[name]}: peak memory {mine[-1].frames} / {mine[0].frames} frames = {growth:.2f} "
                         f"({'flat' if growth <= 1.10 else 'GROWS'})")
    plain = {row.frames: row for row in found if row.name == "diffusers"}
    for row in (row for row in found if row.name == "all" and row.frames in plain):
        speed_up = (row.frames / row.seconds) / (plain[row.frames].frames / plain[row.frames].seconds)
        lines.append(f"{row.frames} frames: all speed-ups at {speed_up:.2f}x the plain pipeline's frames/s "
                     f"(goal {GOAL}x on one H200)")
    return "\n".join(lines)


def cuda_setup(args) -> Setup:
    import torch

    from engine.fullsize import build_full_wan_vace, full_wan_vace_pipeline

    folder = WORK / "wan-vace-1_3b-random"
    if not folder.exists():  # built once (about 4 GB), under another name until complete
        staging = folder.with_name(folder.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        build_full_wan_vace(staging, dtype=torch.bfloat16)
        staging.rename(folder)
    plain = Plain(lambda: full_wan_vace_pipeline("cuda", torch.bfloat16))
    return Setup("cuda", 832, 480, tuple(args.lengths), 81, 17, args.steps, plain, folder, "wan-vace-1_3b")


def smoke_setup(args) -> Setup:
    """The same measurements on the CPU: the tiny Wan VACE model, 64x32, chunks of 9 frames (81/9 of the GPU's)."""
    import torch
    from diffusers import WanVACEPipeline

    torch.set_num_threads(1)
    spec = tiny_spec()
    plain = Plain(lambda: WanVACEPipeline.from_pretrained(spec.path, local_files_only=True))
    return Setup("cpu", 64, 32, (9, 17, 33), 9, 2, 2, plain, Path(spec.path), "tiny-wan-vace")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="run the same code on the CPU with the tiny model")
    parser.add_argument("--lengths", type=int, nargs="+", default=[81, 161, 321], help="clip lengths in frames")
    parser.add_argument("--steps", type=int, default=6, help="denoising steps per chunk")
    parser.add_argument("--rows", nargs="+", choices=ROWS,
                        help="which rows to measure (default: all but 'none' on CUDA, all with --cpu-smoke)")
    parser.add_argument("--one-row", choices=ROWS, help=argparse.SUPPRESS)  # the child process of one row
    args = parser.parse_args()
    if args.one_row:
        setup = smoke_setup(args) if args.cpu_smoke else cuda_setup(args)
        print(json.dumps([asdict(row) for row in measure_row(setup, args.one_row)]))
        return 0
    if not args.cpu_smoke:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: bench/gpu.py has no figures to give on this machine "
                  "(run it on a GPU machine; --cpu-smoke checks the script on the CPU)")
            return 0
    started = time.monotonic()
    setup = smoke_setup(args) if args.cpu_smoke else cuda_setup(args)
    print(f"Wan VACE {'tiny' if args.cpu_smoke else '1.3B (random weights)'} on {setup.device}, "
          f"{setup.width}x{setup.height}, {setup.steps} steps, CFG {CFG}, chunks of {setup.chunk} "
          f"(hotshot overlap {setup.overlap})")
    rows = args.rows or list(ROWS if args.cpu_smoke else DEFAULT_ROWS)
    print(table(measure(args, rows), args.cpu_smoke))
    print(f"[{time.monotonic() - started:.0f} s in all]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
