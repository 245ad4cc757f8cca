"""The Wan speed-ups (batched guidance, bf16 with a float32 VAE, fused attention, compiled blocks) give the plain
path's frames within stated tolerances on the tiny Wan VACE model, and say that they were used."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.backends import load_backend
from engine.catalog import ModelSpec, load_catalog
from engine.models import ModelCache, make_tiny
from engine.render import render
from engine.weights import CatalogError
from tests.conftest import CATALOG, PROJECT
from tests.helpers import make_job
from tests.test_backends import one_thread, request_for  # noqa: F401  (one_thread: a module fixture)

BACKENDS: dict[str, object] = {}


@pytest.fixture(scope="module")
def wan(models_dir) -> ModelSpec:
    """The catalog's tiny Wan VACE model, built once."""
    spec = load_catalog([CATALOG], models_dir)["tiny-wan-vace"]
    make_tiny(spec)
    return spec


def backend(wan: ModelSpec, **settings):
    """The tiny Wan VACE model loaded with these catalog settings (once per set of settings)."""
    key = json.dumps(settings, sort_keys=True)
    if key not in BACKENDS:
        BACKENDS[key] = load_backend(wan.model_copy(update=settings), "cpu")
    return BACKENDS[key]


def frames(wan: ModelSpec, cfg: float = 5.0, count: int = 9, **settings) -> np.ndarray:
    return backend(wan, **settings).render_chunk(request_for(wan, count=count, cfg=cfg)).astype(int)


def transformer_calls(chosen) -> list[int]:
    """Record the batch size of every transformer forward of `chosen` (as the forward sees it)."""
    sizes: list[int] = []
    chosen.pipeline.transformer.register_forward_hook(
        lambda module, args, kwargs, output: sizes.append(int(output[0].shape[0])), with_kwargs=True)
    return sizes


def test_batched_guidance_gives_the_two_pass_frames_in_half_the_calls(wan):
    """CFG in one batched forward: one transformer call per step instead of two, frames within 1 level of the
    conditional-then-unconditional passes; the guidance still acts (cfg 1 renders other frames)."""
    two_pass, batched = backend(wan, batched_cfg=False), backend(wan)
    two_pass_calls, batched_calls = transformer_calls(two_pass), transformer_calls(batched)

    plain, fast = frames(wan, batched_cfg=False), frames(wan)

    assert len(two_pass_calls) == 8 and len(batched_calls) == 4  # four steps
    assert np.abs(fast - plain).max() <= 1
    assert np.abs(frames(wan, cfg=1.0) - fast).mean() > 5
    assert batched.speed_ups(5.0)["batched_cfg"] and not batched.speed_ups(1.0)["batched_cfg"]
    assert not two_pass.speed_ups(5.0)["batched_cfg"]


def test_batched_guidance_pairs_the_video_to_video_pipeline_too(models_dir):
    """Wan video-to-video (another diffusers pipeline, same transformer call) gets the two-pass frames within
    1 level from one batched forward per step."""
    spec = load_catalog([CATALOG], models_dir)["tiny-wan-v2v"]
    make_tiny(spec)
    request = request_for(spec, count=9, cfg=5.0)

    batched = load_backend(spec, "cpu").render_chunk(request).astype(int)
    two_pass = load_backend(spec.model_copy(update={"batched_cfg": False}), "cpu").render_chunk(request)

    assert np.abs(batched - two_pass.astype(int)).max() <= 1


def forward_difference(float32, other) -> float:
    """The relative difference of one transformer forward of `other` from `float32`'s, on seeded inputs."""
    import torch

    generator = torch.Generator().manual_seed(0)
    inputs = {"hidden_states": torch.randn(1, 16, 3, 4, 8, generator=generator),
              "control_hidden_states": torch.randn(1, 96, 3, 4, 8, generator=generator),
              "encoder_hidden_states": torch.randn(1, 16, 32, generator=generator)}
    with torch.inference_mode():
        reference = float32(timestep=torch.tensor([500.0]), return_dict=False, **inputs)[0]
        compared = other(timestep=torch.tensor([500.0]), return_dict=False,
                         **{name: value.to(other.dtype) for name, value in inputs.items()})[0].float()
    return float((compared - reference).norm() / reference.norm())


def test_bf16_transformer_runs_beside_a_float32_vae(wan):
    """With dtype bf16 the transformer computes in bf16 (diffusers' float32 islands kept) while the VAE encodes
    and decodes float32 latents; the frames are as far from the float32 render as diffusers' own two-pass bf16
    path's (the tiny VAE magnifies bf16 rounding of the weights: about 14 levels on average for both); one
    transformer forward is within 2 % of float32's."""
    import torch

    bf16 = backend(wan, dtype={"cpu": "bfloat16"})
    pipe = bf16.pipeline
    seen: dict[str, set] = {"transformer": set(), "decode": set(), "encode": set()}
    pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen["transformer"].add(kwargs["hidden_states"].dtype), with_kwargs=True)
    for name in ("encode", "decode"):
        original = getattr(pipe.vae, name)

        def watched(latents, *args, _name=name, _original=original, **kwargs):
            seen[_name].add(latents.dtype)
            return _original(latents, *args, **kwargs)
        setattr(pipe.vae, name, watched)

    fast = frames(wan, dtype={"cpu": "bfloat16"})
    two_pass = frames(wan, dtype={"cpu": "bfloat16"}, batched_cfg=False)

    assert seen == {"transformer": {torch.bfloat16}, "decode": {torch.float32}, "encode": {torch.float32}}
    assert pipe.transformer.scale_shift_table.dtype == torch.float32  # diffusers keeps its norms in float32
    described = bf16.speed_ups(5.0)
    assert (described["transformer_dtype"], described["vae_dtype"]) == ("bfloat16", "float32")
    assert forward_difference(backend(wan).pipeline.transformer, pipe.transformer) < 0.02  # measured: 0.007
    float32 = frames(wan)
    ours, diffusers_own = np.abs(fast - float32).mean(), np.abs(two_pass - float32).mean()
    assert 0 < ours < 20 and ours <= 1.25 * diffusers_own  # measured: 14.1 and 13.4 levels


def test_fused_attention_takes_the_flash_kernel_and_matches_the_math_kernel(wan):
    """fused_attention runs every attention through SDPA's fused CPU kernel, never the math kernel; false runs
    the math kernel; the frames differ by at most 1 level."""
    from torch.profiler import ProfilerActivity, profile

    def kernels(**settings) -> tuple[set[str], np.ndarray]:
        frames(wan, **settings)  # loaded and warm outside the profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            rendered = frames(wan, **settings)
        return {event.key for event in prof.key_averages() if "scaled_dot_product" in event.key}, rendered

    fused_ops, fused = kernels()
    math_ops, math = kernels(fused_attention=False)

    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in fused_ops
    assert not any("math" in op for op in fused_ops)
    assert any("math" in op for op in math_ops) and not any("flash" in op for op in math_ops)
    assert np.abs(fused - math).max() <= 1
    assert backend(wan).speed_ups(5.0)["attention_kernels"] == ["flash_attention"]


@pytest.mark.slow
def test_compiled_blocks_compile_once_per_shape_and_match_eager(wan, monkeypatch):
    """compile = true: the first chunk compiles the transformer's blocks, a second chunk of the same shape
    reuses them (no new graph), a new shape compiles anew; frames within 1 level of eager (about 90 s)."""
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor

    # Inductor compiles on a process-wide pool of threads it keeps; one thread compiles in place, so the test's
    # check for threads left running sees only what hotshot starts.
    monkeypatch.setattr(inductor, "compile_threads", 1)

    compiled = load_backend(wan.model_copy(update={"compile": True}), "cpu")

    def graphs() -> int:
        return counters["stats"]["unique_graphs"]

    before = graphs()
    first = compiled.render_chunk(request_for(wan, count=9)).astype(int)
    after_first = graphs()
    again = compiled.render_chunk(request_for(wan, count=9)).astype(int)
    after_again = graphs()
    compiled.render_chunk(request_for(wan, count=13))

    assert after_first > before and after_again == after_first and graphs() > after_again
    assert np.array_equal(first, again)
    assert np.abs(first - frames(wan)).max() <= 1
    assert compiled.speed_ups(5.0)["compile"] is True


def test_render_info_names_the_speed_ups_used(wan, tmp_path, media):
    """A Wan render's Render Info records the dtypes its parts had and the speed-ups it used."""
    source = tmp_path / "plate.mp4"
    shutil.copyfile(media / "bars-timecode.mp4", source)
    job = make_job(tmp_path, wan, source, frame_range=(0, 8), context_size=9, context_overlap=0, steps=1)

    result = render(job, None, ModelCache())

    written = json.loads(Path(result.manifest).read_text())["speed_ups"]
    assert written == {"transformer_dtype": "float32", "vae_dtype": "float32", "text_encoder_dtype": "float32",
                       "batched_cfg": True, "attention": "scaled_dot_product_attention",
                       "attention_kernels": ["flash_attention"], "compile": False}


def test_speed_up_settings_are_refused_for_other_backends(tmp_path):
    """compile, batched_cfg and fused_attention are Wan settings: another backend's entry naming one is refused."""
    catalog = tmp_path / "models.toml"
    catalog.write_text(CATALOG.read_text() + '\n[models.mine]\nbackend = "passthrough"\ncompile = true\n')

    with pytest.raises(CatalogError, match="passthrough backend has no compile setting"):
        load_catalog([catalog], tmp_path)


def test_speed_up_settings_survive_the_trip_to_a_worker(wan, tmp_path):
    """A model entry goes to a worker as data and is validated again there: unset speed-ups stay unset (other
    backends' entries stay valid), set ones keep their values."""
    shipped = load_catalog([CATALOG], tmp_path)
    compiled = wan.model_copy(update={"compile": True, "batched_cfg": False})

    again = {spec.id: ModelSpec.model_validate(spec.model_dump()) for spec in [*shipped.values(), compiled]}

    assert again["passthrough"].compile is None
    assert (again[wan.id].compile, again[wan.id].batched_cfg) == (True, False)


def run_gpu_bench(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / "bench" / "gpu.py"), *arguments], capture_output=True,
                          text=True, timeout=900, cwd=PROJECT)


def test_gpu_bench_without_cuda_says_so_and_gives_no_figures():
    """bench/gpu.py on a machine without CUDA exits 0 saying so, with no table."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark would run")
    done = run_gpu_bench()
    assert done.returncode == 0
    assert "no CUDA device" in done.stdout and "frames/s" not in done.stdout


@pytest.mark.slow
def test_gpu_bench_cpu_smoke_runs_every_row():
    """bench/gpu.py --cpu-smoke runs the plain pipeline and every hotshot row on the CPU and says it gave no
    figures (about 2 minutes)."""
    done = run_gpu_bench("--cpu-smoke")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("diffusers", "hotshot"))]
    assert len(rows) == 6 * 3
    assert "smoke only, not figures" in done.stdout
