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
import torch
from PIL import Image

from engine.backends import ChunkRequest
from engine.backends.common import chosen_strength, pipeline_source, place, schedule_length
from engine.backends.wan_vace import TINY_LORA, WanVaceBackend, _build_tiny_lora, _set_shift
from engine.catalog import ModelSpec
from engine.devices import device_kind, dtype_named
from engine.errors import SettingsError


class WanV2VBackend:
    def __init__(self, spec: ModelSpec, device: str, pipeline) -> None:
        self.spec = spec
        self.device = device
        self.pipeline = pipeline
        self._adapters: dict[str, str] = {}

    _use_accelerator = WanVaceBackend._use_accelerator

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        refuse_unsupported(self.spec.id, request)
        strength = chosen_strength(request, self.spec)
        pipe = self.pipeline
        _set_shift(pipe, request.shift)
        self._use_accelerator(request.accelerator)

        def step_end(pipeline, step, timestep, tensors):
            request.on_step(step + 1, pipeline.num_timesteps)
            return {}

        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        with torch.inference_mode():
            result = pipe(
                video=[Image.fromarray(frame) for frame in request.frames],
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                height=request.height,
                width=request.width,
                num_inference_steps=schedule_length(request.steps, strength),
                strength=strength,
                guidance_scale=request.cfg,
                generator=generator,
                output_type="np",
                max_sequence_length=self.spec.max_sequence_length,
                callback_on_step_end=step_end,
            )
        frames = np.asarray(result.frames[0], dtype=np.float32)
        return (frames * 255.0).round().clip(0, 255).astype(np.uint8)


def refuse_unsupported(model_id: str, request: ChunkRequest) -> None:
    """Noise-and-denoise cannot honour a mask, a reference or control videos: say so rather than ignore them."""
    given = {"mask": request.mask is not None, "reference_frame": request.reference is not None,
             "controlnets": bool(request.controls)}
    used = [name for name, present in given.items() if present]
    if used:
        raise SettingsError(f"model {model_id!r} (Wan video-to-video) cannot use {', '.join(used)}; "
                            "remove it from the request or choose a Wan VACE model")


def load(spec: ModelSpec, device: str) -> WanV2VBackend:
    from diffusers import AutoencoderKLWan, WanVideoToVideoPipeline

    kind = device_kind(device)
    dtype = dtype_named(spec.dtype.get(kind, "float32"))
    vae_dtype = dtype_named(spec.vae_dtype.get(kind, "float32"))
    location, options = pipeline_source(spec)
    vae = AutoencoderKLWan.from_pretrained(location, subfolder="vae", dtype=vae_dtype, **options)
    pipe = WanVideoToVideoPipeline.from_pretrained(location, vae=vae, dtype=dtype, **options)
    place(pipe, spec, device)
    return WanV2VBackend(spec, device, pipe)


def build_tiny(spec: ModelSpec) -> None:
    """Random-initialised tiny Wan text-to-video weights, saved like real ones (diffusers' test recipe)."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanTransformer3DModel,
        WanVideoToVideoPipeline,
    )

    from engine.tiny_text import tiny_t5_tokenizer, tiny_umt5_encoder

    tokenizer = tiny_t5_tokenizer()
    text_encoder = tiny_umt5_encoder(len(tokenizer))
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
    )
    pipe = WanVideoToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=spec.shift))
    pipe.save_pretrained(Path(spec.path))
    _build_tiny_lora(transformer, Path(spec.path) / TINY_LORA)
