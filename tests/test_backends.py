"""One suite for every render backend, each with its tiny model: frames, determinism, progress, cancel, chunks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.backends import FAMILIES as REGISTERED
from engine.backends import Accelerator, ChunkRequest, ControlFrames
from engine.catalog import load_catalog
from engine.errors import Interrupted, SettingsError
from engine.models import ModelCache, make_tiny
from engine.probe import probe
from engine.render import render
from tests.conftest import CATALOG
from tests.helpers import make_job

# Each registered backend family that renders from its window's frames, with the catalog's tiny (or weightless)
# model of it; families that only carry painted frames have their own tests.
SHIPPED = load_catalog([CATALOG], Path("var/models")).values()
FAMILIES = {spec.backend: spec.id for spec in SHIPPED
            if (spec.tiny or REGISTERED[spec.backend].weightless) and not spec.capabilities.needs_paint}
PAINT_ONLY = {spec.backend for spec in SHIPPED if spec.capabilities.needs_paint}
NOISE_AND_DENOISE = ["tiny-wan-v2v", "tiny-animatediff"]
WIDTH, HEIGHT = 64, 32
CACHE = ModelCache()

every_model = pytest.mark.parametrize("model_id", list(FAMILIES.values()), ids=list(FAMILIES))
noise_and_denoise = pytest.mark.parametrize("model_id", NOISE_AND_DENOISE)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from parallel kernels, and on a shared CPU their threads spin-wait for cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_spec(models_dir):
    """Look up a catalog model, building its tiny weights once per session."""
    catalog = load_catalog([CATALOG], models_dir)

    def spec(model_id: str):
        if catalog[model_id].tiny:
            make_tiny(catalog[model_id])
        return catalog[model_id]

    return spec


def source_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth moving gradient with a little noise, like footage rather than static."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for index in range(count):
        base = np.stack([(x * 4 + index * 6) % 256, (y * 8) % 256, np.full_like(x, 128)], axis=-1)
        frames.append(np.clip(base + rng.integers(-12, 12, base.shape), 0, 255).astype(np.uint8))
    return frames


def request_for(spec, count: int | None = None, **changes) -> ChunkRequest:
    count = count or spec.constraint.snap_up(5)
    values = dict(frames=source_frames(count), keep=[False] * count, width=WIDTH, height=HEIGHT,
                  prompt="oil painting of a street", negative_prompt="blurry", steps=4, cfg=spec.cfg,
                  shift=spec.shift, seed=3)
    values.update(changes)
    return ChunkRequest(**values)


def render_with(spec, **changes) -> np.ndarray:
    return CACHE.get(spec, "cpu").render_chunk(request_for(spec, **changes))


PLAIN: dict[str, np.ndarray] = {}


def plain_render(spec) -> np.ndarray:
    """The default request's frames, rendered once per model (the seed makes them the same every time)."""
    if spec.id not in PLAIN:
        PLAIN[spec.id] = render_with(spec)
    return PLAIN[spec.id]


@every_model
def test_render_chunk_returns_one_rgb_frame_per_conditioning_frame(model_spec, model_id):
    """A window of N frames (N allowed by the model's frame constraint) comes back as (N, H, W, 3) uint8."""
    spec = model_spec(model_id)
    count = spec.constraint.snap_up(6)
    frames = render_with(spec, count=count)
    assert frames.shape == (count, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8


@every_model
def test_same_seed_same_frames_other_seed_other_frames(model_spec, model_id):
    """The seed alone decides the output: repeated renders are bit-identical, another seed changes them."""
    spec = model_spec(model_id)
    first, again, other = plain_render(spec), render_with(spec), render_with(spec, seed=4)
    assert np.array_equal(first, again)
    if spec.backend != "passthrough":
        assert np.abs(first.astype(int) - other).mean() > 0.5


@every_model
def test_progress_counts_every_step_up_to_the_last(model_spec, model_id):
    """on_step reports 1, 2, ... up to the last step actually run, against that same total."""
    spec = model_spec(model_id)
    seen = []
    render_with(spec, on_step=lambda step, steps: seen.append((step, steps)))
    total = seen[-1][1]
    assert total >= 1 and seen == [(step, total) for step in range(1, total + 1)]


@every_model
def test_cancel_between_steps_stops_the_render(model_spec, model_id):
    """An on_step that raises Interrupted at step 2 stops the render there: no later step is reported."""
    spec = model_spec(model_id)
    seen = []

    def on_step(step: int, steps: int) -> None:
        seen.append(step)
        if step == 2:
            raise Interrupted("cancel", 0)

    with pytest.raises(Interrupted, match="cancel"):
        render_with(spec, steps=4, strength=1.0, on_step=on_step)
    assert seen == [1, 2]


@every_model
def test_three_chunk_render_through_the_engine(model_spec, model_id, tmp_path, media):
    """engine.render of 17 frames in 9-frame windows writes 17 frames at the source rate, planned as 3 chunks."""
    spec = model_spec(model_id)
    source = tmp_path / "plate.mp4"
    shutil.copyfile(media / "chaplin.mp4", source)
    job = make_job(tmp_path, spec, source, frame_range=(5, 21), context_size=9, context_overlap=4, steps=2,
                   dynamic_reference=spec.capabilities.reference_frame)
    result = render(job, None, CACHE)
    info = probe(result.output)
    assert (info.frame_count, info.fps) == (17, probe(source).fps)
    assert len(json.loads(Path(result.manifest).read_text())["chunk_plan"]["chunks"]) == 3


@every_model
def test_model_is_loaded_once_per_cache(model_spec, model_id):
    """Asking a model cache twice for a model gives the same loaded backend."""
    spec = model_spec(model_id)
    cache = ModelCache()
    assert cache.get(spec, "cpu") is cache.get(spec, "cpu")


@noise_and_denoise
def test_strength_changes_the_frames(model_spec, model_id):
    """A lower strength keeps more of the source, so the frames differ from the default strength's."""
    spec = model_spec(model_id)
    gentle = render_with(spec, strength=0.3)
    assert np.abs(plain_render(spec).astype(int) - gentle).mean() > 0.5


@noise_and_denoise
@pytest.mark.parametrize("setting", ["mask", "reference_frame"])
def test_mask_or_reference_is_refused_naming_the_model(model_spec, model_id, setting):
    """A noise-and-denoise model refuses a mask or a reference with a SettingsError naming the model and setting."""
    spec = model_spec(model_id)
    count = spec.constraint.snap_up(5)
    extra = ({"mask": [np.ones((HEIGHT, WIDTH), np.float32)] * count} if setting == "mask"
             else {"reference": source_frames(1)[0]})
    with pytest.raises(SettingsError, match=rf"{model_id}.*{setting}"):
        render_with(spec, **extra)


def test_wan_v2v_switches_the_accelerator_lora_on_and_off(model_spec):
    """Wan V2V applies the catalog's accelerator LoRA when asked, and renders without it again afterwards."""
    spec = model_spec("tiny-wan-v2v")
    plain = plain_render(spec)
    accelerated = render_with(spec, accelerator=Accelerator(spec.accelerator.lora))
    assert np.abs(plain.astype(int) - accelerated).mean() > 0.1
    assert np.array_equal(render_with(spec), plain)


def test_wan_v2v_refuses_controls(model_spec):
    """Wan V2V has no ControlNets: a control video is refused naming the model."""
    spec = model_spec("tiny-wan-v2v")
    with pytest.raises(SettingsError, match="tiny-wan-v2v.*controlnets"):
        render_with(spec, controls=[ControlFrames("depth", source_frames(5), 0.8)])


@pytest.mark.parametrize("control", ["depth", "depth+pose"])
def test_animatediff_controls_steer_the_render(model_spec, control):
    """A depth (or depth+pose) control video runs the ControlNet pipeline, which changes the frames."""
    spec = model_spec("tiny-animatediff")
    plain = plain_render(spec)
    controlled = render_with(spec, controls=[ControlFrames(control, source_frames(5, seed=1), 0.8)])
    assert controlled.shape == plain.shape
    assert np.abs(plain.astype(int) - controlled).mean() > 0.5
    assert np.array_equal(render_with(spec), plain)


def test_animatediff_refuses_a_control_type_without_controlnet(model_spec):
    """A control type the catalog has no ControlNet for is refused naming the model and the type."""
    spec = model_spec("tiny-animatediff")
    with pytest.raises(SettingsError, match="tiny-animatediff.*canny"):
        render_with(spec, controls=[ControlFrames("canny", source_frames(5), 0.8)])


def test_animatediff_refuses_an_accelerator_lora(model_spec):
    """AnimateDiff has no accelerator LoRA: asking for one is refused naming the model."""
    spec = model_spec("tiny-animatediff")
    with pytest.raises(SettingsError, match="tiny-animatediff.*accelerator"):
        render_with(spec, accelerator=Accelerator("lora.safetensors"))


def test_every_family_has_a_tiny_model_and_checks_settings_without_torch():
    """Each registered backend family has a tiny (or weightless) model in the shipped catalog, and its settings
    check, which the daemon calls while resolving a request, runs without importing torch."""
    import subprocess
    import sys

    assert set(FAMILIES) | PAINT_ONLY == {name for name, family in REGISTERED.items() if family.shipped}
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from engine.backends import FAMILIES, Asked, check_settings\n"
        "from engine.catalog import load_catalog\n"
        f"catalog = load_catalog([Path({str(CATALOG)!r})], Path('var/models'))\n"
        "refused = {}\n"
        "for spec in catalog.values():\n"
        "    try:\n"
        "        check_settings(spec, Asked(shift=True, controls=('depth', 'pose')))\n"
        "    except Exception as exc:\n"
        "        refused[spec.id] = str(exc)\n"
        "print(repr(('torch' in sys.modules, sorted(refused))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    torch_loaded, refused = eval(out)  # noqa: S307 - our own repr
    assert not torch_loaded
    assert {"tiny-animatediff", "tiny-wan-vace"} <= set(refused) and "passthrough" not in refused
