"""hotshot's overhead: the same frames through hotshot end to end vs direct pipeline calls, and whether the
render loop's stages run side by side.

Three timings of one 3-chunk render (tiny model, 256x144):

- direct: WanVACEPipeline called on pre-decoded frames with the same chunk plan,
  seeds and known frames; model already loaded, no decoding or encoding;
- engine: engine.render() with the model already loaded (decode, diffuse,
  checkpoint, encode, mux, manifest);
- daemon: `hotshot run --drain` on a shot holding the clip and a request
  (start-up, ingest, a fresh worker process that loads the model, the render,
  status files).

Then the stages of a render with the sleeping backend (engine/backends/sleep.py: each diffusion step waits,
using no CPU, as a GPU busy diffusing leaves the CPU free), 640x360, with the overlap on and off: the chunk
loop's wall time, the sum of the stage times and the slowest stage (decode, diffuse, blend on a thread each;
encode: two segments' encoders side by side; seal: the checkpoint writes). With the overlap, wall comes close
to the slowest stage.

    .venv/bin/python bench/overhead.py            # all of it
    .venv/bin/python bench/overhead.py stages     # only the stages of the sleeping render
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import torch
from _common import PROJECT, WORK, clip, tiny_spec
from PIL import Image

from engine.catalog import ModelSpec
from engine.decode import read_frames
from engine.geometry import output_dims
from engine.job import RenderJob
from engine.models import ModelCache
from engine.plan import plan_chunks
from engine.probe import probe
from engine.render import render

FRAMES, SIZE, STEPS, CONTEXT, OVERLAP, SEED = 97, 256, 2, 41, 9, 5


def direct(spec, source, backend) -> float:
    info = probe(source)
    width, height = output_dims(info.width, info.height, SIZE)
    frames = list(read_frames(source, 0, FRAMES - 1, width, height))
    plan = plan_chunks(FRAMES, CONTEXT, OVERLAP, spec.constraint, SEED)
    pipe = backend.pipeline
    started = time.monotonic()
    previous, previous_chunk = None, None
    for chunk in plan.chunks:
        window = list(frames[chunk.start:chunk.end])
        if chunk.known:
            offset = chunk.start - previous_chunk.start
            window[: chunk.known] = list(previous[offset: offset + chunk.known])
        video = [Image.fromarray(frame) for frame in window]
        mask = [Image.new("L", (width, height), 0 if i < chunk.known else 255) for i in range(len(window))]
        out = pipe(video=video, mask=mask, prompt="oil painting", negative_prompt="blurry", height=height,
                   width=width, num_frames=len(window), num_inference_steps=STEPS, guidance_scale=5.0,
                   generator=torch.Generator("cpu").manual_seed(chunk.seed), output_type="np",
                   max_sequence_length=spec.max_sequence_length).frames[0]
        previous, previous_chunk = (np.asarray(out) * 255).round().astype(np.uint8), chunk
    return time.monotonic() - started


def engine_render(spec, source, cache) -> float:
    out = WORK / "overhead-engine.mp4"
    stat = source.stat()
    job = RenderJob(job_id=1, render_id="overhead", source=source, source_size=stat.st_size,
                    source_mtime_ns=stat.st_mtime_ns, frame_range=(0, FRAMES - 1), output_size=SIZE, model=spec,
                    prompt="oil painting", negative_prompt="blurry", steps=STEPS, cfg=5.0, seed=SEED, shift=3.0,
                    context_size=CONTEXT, context_overlap=OVERLAP, output=out, manifest=out.with_suffix(".json"),
                    work_dir=WORK / "overhead-work")
    started = time.monotonic()
    render(job, None, cache)
    return time.monotonic() - started


def daemon_drain(source) -> float:
    base = WORK / "overhead-daemon"
    shutil.rmtree(base, ignore_errors=True)
    shot = base / "root" / "sh010"
    shot.mkdir(parents=True)
    shutil.copyfile(source, shot / "plate.mp4")
    (shot / "r.render.json").write_text(json.dumps({
        "prompt": "oil painting", "negative_prompt": "blurry", "frame_range": [0, FRAMES - 1], "output_size": SIZE,
        "steps": STEPS, "cfg": 5.0, "seed": SEED, "context": {"size": CONTEXT, "overlap": OVERLAP}}))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--drain", "--root", str(base / "root"),
                    "--state", str(base / "state")], check=True, cwd=PROJECT, capture_output=True,
                   env={"HOTSHOT_MODELS_DIR": str(PROJECT / "var" / "models"), "HOTSHOT_STABLE_SECONDS": "0.2",
                        "HOTSHOT_DEVICES": '["cpu"]', "PATH": "/usr/bin:/bin:/usr/local/bin"})
    return time.monotonic() - started


SLEEP = ModelSpec(id="sleep-bench", name="Sleeps instead of diffusing", backend="sleep", context_default=41,
                  context_overlap_default=9, steps=2, cfg=1.0, calibration={"cpu": 0.035, "cuda": 0.035},
                  capabilities={"reference_frame": True})
STAGE_FRAMES, STAGE_SIZE = 201, 640
# Two segments' encoders run side by side, so "encode" may add up to twice the wall time it spans.
THREADS = {"decode": ("decode",), "diffuse": ("diffuse",), "blend": ("blend",), "encode": ("encode",),
           "seal": ("checkpoint",)}


def stages(source, cache, overlap: bool) -> tuple[float, dict[str, float]]:
    """The chunk loop's wall time and each thread's busy seconds, from the Render Info's stage spans."""
    out = WORK / f"overhead-stages-{overlap}.mp4"
    stat = source.stat()
    job = RenderJob(job_id=1, render_id="stages", source=source, source_size=stat.st_size,
                    source_mtime_ns=stat.st_mtime_ns, frame_range=(0, STAGE_FRAMES - 1), output_size=STAGE_SIZE,
                    model=SLEEP, prompt="", negative_prompt="", steps=SLEEP.steps, cfg=1.0, seed=SEED, shift=3.0,
                    context_size=SLEEP.context_default, context_overlap=SLEEP.context_overlap_default, output=out,
                    manifest=out.with_suffix(".json"), work_dir=WORK / f"overhead-stages-{overlap}",
                    overlap=overlap)
    shutil.rmtree(job.work_dir, ignore_errors=True)
    timing = render(job, None, cache).manifest_data["timing"]["stages"]
    wall = max(span["end"] for span in timing["spans"]) - min(span["start"] for span in timing["spans"])
    busy = {thread: sum(timing["seconds"].get(stage, 0.0) for stage in names) for thread, names in THREADS.items()}
    return wall, busy


def print_stages() -> None:
    source = clip(STAGE_FRAMES, "640x360")
    cache = ModelCache()
    print(f"{STAGE_FRAMES} frames, {STAGE_SIZE}x360, sleeping backend ({SLEEP.steps} steps, context "
          f"{SLEEP.context_default}/{SLEEP.context_overlap_default}), best of 2")
    for overlap in (True, False):
        wall, busy = min((stages(source, cache, overlap) for _ in range(2)), key=lambda result: result[0])
        slowest = max(busy, key=busy.get)
        print(f"overlap {'on ' if overlap else 'off'}: chunk loop {wall:6.2f} s wall, "
              f"stages sum {sum(busy.values()):6.2f} s, slowest {slowest} {busy[slowest]:6.2f} s  "
              f"({', '.join(f'{name} {seconds:.2f}' for name, seconds in busy.items())})")


def main() -> None:
    if sys.argv[1:] == ["stages"]:
        print_stages()
        return
    spec = tiny_spec()
    source = clip(FRAMES)
    cache = ModelCache()
    backend = cache.get(spec, "cpu")
    direct(spec, source, backend)
    direct_s = min(direct(spec, source, backend) for _ in range(2))
    engine_s = min(engine_render(spec, source, cache) for _ in range(2))
    daemon_s = daemon_drain(source)
    print(f"{FRAMES} frames, {SIZE} px, {STEPS} steps, context {CONTEXT}/{OVERLAP}, tiny model on CPU")
    print(f"direct pipeline calls : {direct_s:7.2f} s")
    print(f"engine.render()       : {engine_s:7.2f} s   ratio {engine_s / direct_s:.2f}")
    print(f"hotshot run --drain   : {daemon_s:7.2f} s   ratio {daemon_s / direct_s:.2f} "
          "(includes process start-up and model load)")
    print_stages()


if __name__ == "__main__":
    main()
