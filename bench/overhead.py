"""hotshot's overhead: the same frames through hotshot end to end vs direct pipeline calls.

Three timings of one 3-chunk render (tiny model, 256x144):

- direct: WanVACEPipeline called on pre-decoded frames with the same chunk plan,
  seeds and known frames; model already loaded, no decoding or encoding;
- engine: engine.render() with the model already loaded (decode, diffuse,
  checkpoint, encode, mux, manifest);
- daemon: `hotshot run --drain` on a shot holding the clip and a request
  (start-up, ingest, a fresh worker process that loads the model, the render,
  status files).

    .venv/bin/python bench/overhead.py
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


def main() -> None:
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


if __name__ == "__main__":
    main()
