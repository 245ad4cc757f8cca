"""Every conditioning input reaches the tiny models: changing it changes the diffused frames measurably.

These run the real tiny pipelines (not the passthrough), one window each, and compare two renders that differ
only in one input. A backend that dropped that input would give the same frames twice and fail here.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.backends import Accelerator, ChunkRequest, ControlFrames
from engine.catalog import load_catalog
from engine.decode import read_frames
from engine.models import ModelCache
from tests.conftest import CATALOG

CACHE = ModelCache()
WIDTH, HEIGHT = 64, 32
MEASURABLE = 1.0
"""Least mean difference, in 8-bit levels, that counts as a change (the renders are otherwise identical)."""


@pytest.fixture(scope="module")
def catalog(models_dir):
    return load_catalog([CATALOG], models_dir)


@pytest.fixture(scope="module")
def clip(media) -> list[np.ndarray]:
    return list(read_frames(media / "chaplin.mp4", 100, 108, WIDTH, HEIGHT))


def flat(level: int, count: int) -> list[np.ndarray]:
    return [np.full((HEIGHT, WIDTH, 3), level, np.uint8)] * count


def request(frames: list[np.ndarray], **changes) -> ChunkRequest:
    values = dict(frames=list(frames), keep=[False] * len(frames), width=WIDTH, height=HEIGHT, prompt="oil painting",
                  negative_prompt="blurry", steps=2, cfg=5.0, shift=3.0, seed=3)
    values.update(changes)
    return ChunkRequest(**values)


def difference(backend, a: ChunkRequest, b: ChunkRequest) -> float:
    return float(np.abs(backend.render_chunk(a).astype(int) - backend.render_chunk(b).astype(int)).mean())


def test_wan_vace_follows_each_conditioning_input(catalog, clip):
    """Tiny Wan VACE: the pinned style frame, the reference image, the conditioning video, a control video, the
    mask, the accelerator LoRA and the prompt each move the frames by more than a level on average."""
    spec = catalog["tiny-wan-vace"]
    vace = CACHE.get(spec, "cpu")
    count = len(clip)
    red, blue = flat(0, 1)[0].copy(), flat(0, 1)[0].copy()
    red[..., 0], blue[..., 2] = 220, 220
    pinned = [True] + [False] * (count - 1)
    left = np.zeros((HEIGHT, WIDTH), np.float32)
    left[:, : WIDTH // 2] = 1
    changes = {
        "style frame": (request([red, *clip[1:]], keep=pinned), request([blue, *clip[1:]], keep=pinned)),
        "reference frame": (request(clip, reference=red), request(clip, reference=blue)),
        "conditioning video": (request(clip), request(flat(128, count))),
        "depth control": (request(clip, controls=[ControlFrames("depth", flat(30, count))]),
                          request(clip, controls=[ControlFrames("depth", clip)])),
        "mask": (request(clip, mask=[np.ones_like(left)] * count), request(clip, mask=[left] * count)),
        "accelerator LoRA": (request(clip, cfg=1.0),
                             request(clip, cfg=1.0, accelerator=Accelerator(spec.accelerator.lora))),
        "prompt": (request(clip), request(clip, prompt="watercolor sketch of a city at night")),
    }
    moved = {name: difference(vace, a, b) for name, (a, b) in changes.items()}
    assert min(moved.values()) > MEASURABLE, moved


@pytest.mark.parametrize("control", ["depth", "softedge", "pose", "normal", "depth+pose"])
def test_animatediff_follows_each_control_type(catalog, clip, control):
    """Tiny AnimateDiff: each control type's ControlNet steers by the control video's content (a dark flat
    video and the clip's frames give different renders), not only by being there."""
    backend = CACHE.get(catalog["tiny-animatediff"], "cpu")
    frames = clip[:8]

    def controlled(video):
        # Four steps: at strength 0.7 two would run only the last, nearly noise-free one.
        parts = {part: video for part in control.split("+")}
        return request(frames, steps=4, controls=[ControlFrames(control, video, parts=parts)])

    assert difference(backend, controlled(flat(20, 8)), controlled(frames)) > MEASURABLE


@pytest.mark.parametrize("model", ["tiny-animatediff", "tiny-wan-v2v"])
def test_noise_and_denoise_models_follow_source_prompt_and_lora(catalog, clip, model):
    """Tiny AnimateDiff and Wan video-to-video: the source frames and the prompt (and Wan's accelerator LoRA)
    each change the frames."""
    spec = catalog[model]
    backend = CACHE.get(spec, "cpu")
    frames = clip[:8] if model == "tiny-animatediff" else clip
    steps = 4  # at strength 0.7 two steps would run only the last, nearly noise-free one
    moved = {
        "source": difference(backend, request(frames, steps=steps), request(flat(128, len(frames)), steps=steps)),
        "prompt": difference(backend, request(frames, steps=steps),
                             request(frames, steps=steps, prompt="watercolor sketch of a city at night")),
    }
    if spec.accelerator and spec.accelerator.lora:
        moved["accelerator LoRA"] = difference(
            backend, request(frames, steps=steps, cfg=1.0),
            request(frames, steps=steps, cfg=1.0, accelerator=Accelerator(spec.accelerator.lora)))
    assert min(moved.values()) > MEASURABLE, moved
