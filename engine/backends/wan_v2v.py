"""Wan 2.1 video-to-video through diffusers' `WanVideoToVideoPipeline` (noise and denoise).

The window's frames are noised to `strength` and denoised under the prompt, so
the render starts from them: over the overlap they are the previous chunk's
output, which is what carries the look from one chunk to the next. The model
cannot pin frames exactly, and takes no mask, reference or control video; a
request with any of them is refused naming the model and the setting. The
accelerator LoRA is switched exactly as for Wan VACE (both use diffusers' Wan
LoRA loader).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.backends import Asked, ChunkRequest
from engine.backends.common import chosen_strength, denoise_video
from engine.backends.wan import TINY_LORA, WanMixin, build_tiny_lora, load_wan, tiny_wan_parts
from engine.catalog import ModelSpec
from engine.errors import SettingsError


def check(spec: ModelSpec, asked: Asked) -> None:
    """Noise-and-denoise cannot honour a mask, a reference or control videos: say so rather than ignore them."""
    given = {"mask": asked.mask, "reference_frame": asked.reference, "controlnets": bool(asked.controls)}
    used = [name for name, present in given.items() if present]
    if used:
        raise SettingsError(f"model {spec.id!r} (Wan video-to-video) cannot use {', '.join(used)}; "
                            "remove it from the request or choose a Wan VACE model")


class WanV2VBackend(WanMixin):
    def __init__(self, spec: ModelSpec, device: str, pipeline) -> None:
        self.spec = spec
        self.device = device
        self.pipeline = pipeline
        self._adapters: dict[str, str] = {}
        self._prepare_speed_ups()

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        check(self.spec, Asked.of_chunk(request))
        strength = chosen_strength(request, self.spec)
        pipe = self.pipeline
        self._set_shift(request.shift)
        self._use_accelerator(request.accelerator)

        return self._render_fast(request, lambda fast: denoise_video(
            pipe, request, strength, max_sequence_length=self.spec.max_sequence_length, **fast))


def load(spec: ModelSpec, device: str) -> WanV2VBackend:
    from diffusers import WanVideoToVideoPipeline

    return WanV2VBackend(spec, device, load_wan(WanVideoToVideoPipeline, spec, device))


def build_tiny(spec: ModelSpec) -> None:
    """Random-initialised tiny Wan text-to-video weights, saved like real ones (diffusers' test recipe)."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        WanTransformer3DModel,
        WanVideoToVideoPipeline,
    )

    tokenizer, text_encoder, vae = tiny_wan_parts()
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
    )
    pipe = WanVideoToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=spec.shift))
    pipe.save_pretrained(Path(spec.path))
    build_tiny_lora(transformer, Path(spec.path) / TINY_LORA)
