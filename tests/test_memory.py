"""Memory planning: the estimate, the decision against reported device memory, the refusal that says what fits,
and a render that a small memory setting switches to VAE tiling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.decode import read_frames
from engine.geometry import output_dims
from engine.memory import SLACK, MemoryPlanError, Need, Shape, decide, estimate, model_folder, plan
from engine.models import ModelCache
from engine.probe import probe
from engine.render import render
from tests.helpers import make_job

GIB = 2**30


def need(transformer=4, text_encoder=1, vae=1, text=0.1, diffusion=2.0, vae_work=6.0, vae_tiled=1.0) -> Need:
    """A need in GiB, per part: 6 GiB of weights, the VAE's decode the largest stage."""
    weights = {"transformer": int(transformer * GIB), "text_encoder": int(text_encoder * GIB), "vae": int(vae * GIB)}
    return Need(weights, int(text * GIB), int(diffusion * GIB), int(vae_work * GIB), int(vae_tiled * GIB))


@pytest.mark.parametrize(("device", "available", "decision"), [
    # peaks before the 15 % margin: everything 6 weights + 6 VAE decode; tiled 6 + 2 diffusion; offloaded one
    # component at a time, the VAE 1 + 6 or the transformer 4 + 2 with tiling
    ("cuda:0", 80, "fits"),
    ("cuda:0", 14, "fits"),
    ("cuda:0", 13.5, "vae_tiling"),
    ("cuda:0", 9.5, "vae_tiling"),
    ("cuda:0", 9, "offload"),
    ("cuda:0", 7.5, "offload+vae_tiling"),
    ("cuda:0", 6.5, None),
    ("cpu", 9.5, "vae_tiling"),
    ("cpu", 9, None),                      # the CPU has no offload: nothing to move the weights to
])
def test_decision_is_the_cheapest_mode_that_fits_the_reported_memory(device, available, decision):
    """With a device reporting `available` GiB, the plan keeps everything resident when it fits, then tiles the
    VAE, then (CUDA only) offloads, then both; below that there is no mode left."""
    assert decide(need(), int(available * GIB), device) == decision


def test_peak_without_offload_holds_every_weight_and_the_largest_stage():
    """Stages run one after another: the peak is all weights plus the largest of text, diffusion and VAE; with
    offload only the running component's weights count; a margin goes on top."""
    needed = need()

    def gib(value: float) -> int:
        return int(value * GIB * (1 + SLACK))

    assert needed.peak("fits") == pytest.approx(gib(6 + 6), abs=4)
    assert needed.peak("vae_tiling") == pytest.approx(gib(6 + 2), abs=4)
    assert needed.peak("offload") == pytest.approx(gib(1 + 6), abs=4)
    assert needed.peak("offload+vae_tiling") == pytest.approx(gib(4 + 2), abs=4)


def test_estimate_grows_linearly_with_tokens_and_tiling_caps_the_vae(tiny_spec):
    """On a real (tiny) Wan folder: weights come from the files at the chosen dtype; diffusion grows linearly with
    the frames (fused attention, no token-squared term); the VAE grows with the frame area, and with tiling stops
    growing once a frame is larger than a tile."""
    folder = model_folder(tiny_spec)
    float32 = estimate(folder, Shape(17, 256, 256), "float32", "float32")
    bfloat16 = estimate(folder, Shape(17, 256, 256), "bfloat16", "float32")
    assert bfloat16.weights["transformer"] * 2 == float32.weights["transformer"]
    assert bfloat16.weights["vae"] == float32.weights["vae"]  # the VAE keeps its own dtype

    def diffusion(frames: int) -> int:
        return estimate(folder, Shape(frames, 256, 256), "float32", "float32").diffusion

    assert diffusion(33) - diffusion(17) == pytest.approx(diffusion(49) - diffusion(33), rel=0.01)
    assert diffusion(33) > diffusion(17)
    small, large = (estimate(folder, Shape(17, side, side), "float32", "float32") for side in (512, 1024))
    video = 6 * 17 * 3 * 4
    assert (large.vae - video * 1024**2) == 4 * (small.vae - video * 512**2)
    assert (large.vae_tiled - video * 1024**2) == (small.vae_tiled - video * 512**2)


def test_a_job_that_fits_nowhere_is_refused_with_what_would_fit(tiny_spec):
    """With too little memory the plan fails before rendering, naming the largest context size and output size
    that would fit; each of them does fit, one step larger does not."""
    shape = Shape(33, 256, 144)
    folder = model_folder(tiny_spec)
    full = estimate(folder, shape, "float32", "float32")
    smaller = estimate(folder, Shape(17, 256, 144), "float32", "float32")
    setting = (smaller.peak("vae_tiling") + full.peak("vae_tiling")) // 2
    with pytest.raises(MemoryPlanError) as refused:
        plan(tiny_spec, "cpu", shape, setting=setting)
    message = str(refused.value)
    assert "(setting)" in message and "device_memory_gb" in message
    frames = int(message.split("context.size of at most ")[1].split()[0])
    side = int(message.split("output_size of at most ")[1].split()[0])
    assert 17 <= frames < 33 and (frames - 1) % 4 == 0 and side % 16 == 0 and side < 256
    assert plan(tiny_spec, "cpu", Shape(frames, 256, 144), setting=setting).decision in ("fits", "vae_tiling")
    with pytest.raises(MemoryPlanError):
        plan(tiny_spec, "cpu", Shape(frames + 4, 256, 144), setting=setting)
    assert plan(tiny_spec, "cpu", Shape(33, side, side * 144 // 256), setting=setting).decision != "not estimated"


def test_a_model_without_local_weights_is_not_estimated():
    """A weightless backend has nothing to plan: the render goes ahead and the Render Info says so."""
    from engine.catalog import ModelSpec

    spec = ModelSpec(id="passthrough", name="p", backend="passthrough")
    assert plan(spec, "cpu", Shape(17, 64, 64), setting=1).decision == "not estimated"


def test_a_small_memory_setting_renders_with_vae_tiling_and_says_so(tmp_path, tiny_spec, media):
    """A device_memory below what the job needs untiled but above what it needs tiled: the render decodes tile
    by tile (its frames differ from the untiled render's, a little), and the Render Info records the decision,
    the estimate and the setting."""
    plate = tmp_path / "plate.mp4"
    shutil.copyfile(media / "chaplin.mp4", plate)
    width, height = output_dims(probe(plate).width, probe(plate).height, 352, 16)
    assert width * height > 256 * 256  # larger than one of the VAE's tiles, or tiling would change nothing
    needed = estimate(model_folder(tiny_spec), Shape(5, width, height, reference=False), "float32", "float32")
    setting = (needed.peak("vae_tiling") + needed.peak("fits")) // 2
    options = dict(frame_range=(5, 9), output_size=352, context_size=5, context_overlap=0, start_frame_buffer=0,
                   steps=1)
    cache = ModelCache()
    plain = render(make_job(tmp_path, tiny_spec, plate, "plain", **options), None, cache)
    tiled = render(make_job(tmp_path, tiny_spec, plate, "tiled", device_memory=setting, **options), None, cache)

    memory = json.loads(Path(tiled.manifest).read_text())["memory"]
    assert memory["decision"] == "vae_tiling" and memory["available_from"] == "setting"
    assert memory["available_bytes"] == setting and memory["estimate_bytes"] <= setting
    assert json.loads(Path(plain.manifest).read_text())["memory"]["decision"] == "fits"
    a, b = (np.stack(list(read_frames(result.output, 0, 4, width, height))).astype(float) for result in (plain, tiled))
    difference = np.abs(a - b).mean()
    assert 0 < difference < 8, difference


def test_a_job_over_the_memory_setting_fails_in_the_daemon_before_rendering(tmp_path, media, models_dir, tiny_spec):
    """The device_memory_gb setting reaches the worker: a request whose chunk needs more fails before any chunk is
    rendered, its status naming what would fit; the same request under a large setting renders, and its Render
    Info says the memory came from the setting."""
    from tests.harness import drain, settings_for, status_of, write_request

    shot = tmp_path / "root" / "sh010"
    shot.mkdir(parents=True)
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    fields = dict(prompt="ink", frame_range=[0, 7], output_size=64, steps=1, context={"size": 9})
    width, height = output_dims(probe(shot / "plate.mp4").width, probe(shot / "plate.mp4").height, 64, 16)
    nine, five = (estimate(model_folder(tiny_spec), Shape(frames, width, height, reference=False), "float32",
                           "float32").peak("fits") for frames in (9, 5))
    small = write_request(shot / "small.render.json", **fields)
    drain(settings_for(tmp_path, models_dir, device_memory_gb=(nine + five) / 2 / GIB))
    status = status_of(small)
    assert status["state"] == "failed", status
    assert "context.size of at most 5 frames" in status["error"] and "(setting)" in status["error"]
    assert [p.name for p in shot.glob("*.mp4")] == ["plate.mp4"]

    large = write_request(shot / "large.render.json", **fields)
    drain(settings_for(tmp_path, models_dir, device_memory_gb=64))
    assert status_of(large)["state"] == "done", status_of(large)
    manifest = json.loads(next(shot.glob("*.render-info.json")).read_text())
    assert manifest["memory"]["available_from"] == "setting"
    assert manifest["memory"]["available_bytes"] == 64 * GIB


class RecordingPipeline:
    """Stands in for a diffusers pipeline on a CUDA device (there is none here): records what the plan asks."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.vae = self

    def enable_tiling(self) -> None:
        self.calls.append("tiling on")

    def disable_tiling(self) -> None:
        self.calls.append("tiling off")

    def enable_model_cpu_offload(self, device: str) -> None:
        self.calls.append(f"offload to {device}")

    def remove_all_hooks(self) -> None:
        self.calls.append("hooks removed")

    def to(self, device: str) -> None:
        self.calls.append(f"moved to {device}")


def test_a_cached_pipeline_is_switched_to_each_jobs_plan(tiny_spec):
    """A model kept loaded between jobs follows each job's plan: offload and tiling switched on for a job that
    needs them, and off again (back on the device, hooks removed) for one that fits."""
    from types import SimpleNamespace

    from engine.memory import MemoryPlan, apply

    backend = SimpleNamespace(spec=tiny_spec, pipeline=RecordingPipeline())
    apply(backend, MemoryPlan(need(), None, "offload+vae_tiling"), "cuda:0")
    apply(backend, MemoryPlan(need(), None, "offload+vae_tiling"), "cuda:0")
    apply(backend, MemoryPlan(need(), None, "fits"), "cuda:0")
    assert backend.pipeline.calls == ["tiling on", "offload to cuda:0", "tiling on", "tiling off", "hooks removed",
                                      "moved to cuda:0"]
