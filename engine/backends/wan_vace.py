"""Wan 2.1 VACE through diffusers' `WanVACEPipeline`.

The source frames are VACE's conditioning video. Frames the model must keep
(the previous chunk's output over the overlap, a pinned style frame) are given
in the video with the mask black; every other frame has the mask white,
meaning "generate, guided by this frame". A reference image goes in as VACE's
`reference_images`. An accelerator LoRA (low-step rendering) is loaded once
and switched on only for the jobs that ask for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine.backends import Asked, ChunkRequest
from engine.backends.common import run_pipeline
from engine.backends.wan import TINY_LORA, WanMixin, build_tiny_lora, load_wan, tiny_wan_parts
from engine.catalog import ModelSpec
from engine.errors import SettingsError

KEEP, GENERATE = 0, 255


def check(spec: ModelSpec, asked: Asked) -> None:
    """VACE takes one conditioning video: several control types must be combined into one."""
    if len(asked.controls) > 1:
        raise SettingsError(f"model {spec.id!r} follows one control video; combine depth and pose with "
                            "\"depth+pose\" instead of listing several controlnets")


class WanVaceBackend(WanMixin):
    def __init__(self, spec: ModelSpec, device: str, pipeline) -> None:
        self.spec = spec
        self.device = device
        self.pipeline = pipeline
        self._adapters: dict[str, str] = {}
        self._prepare_speed_ups()

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        check(self.spec, Asked.of_chunk(request))
        pipe = self.pipeline
        self._set_shift(request.shift)
        self._use_accelerator(request.accelerator)
        count = len(request.frames)
        scale = 1.0
        frames = request.frames
        if request.controls:
            # Transform: the control video is the conditioning; kept frames stay what they are.
            control = request.controls[0]
            frames = [kept if keep else guide for kept, guide, keep in zip(request.frames, control.frames,
                                                                           request.keep, strict=True)]
            scale = control.strength
        video = [Image.fromarray(frame) for frame in frames]
        if request.mask is not None:
            mask = [Image.new("L", (request.width, request.height), KEEP) if keep
                    else Image.fromarray(np.rint(frame_mask * GENERATE).astype(np.uint8), "L")
                    for keep, frame_mask in zip(request.keep, request.mask, strict=True)]
        else:
            mask = [Image.new("L", (request.width, request.height), KEEP if keep else GENERATE)
                    for keep in request.keep]
        reference = Image.fromarray(request.reference) if request.reference is not None else None

        return self._render_fast(request, lambda fast: run_pipeline(
            pipe, request, video=video, mask=mask, reference_images=reference, num_frames=count,
            num_inference_steps=request.steps, max_sequence_length=self.spec.max_sequence_length,
            conditioning_scale=scale, **fast))


def load(spec: ModelSpec, device: str) -> WanVaceBackend:
    from diffusers import WanVACEPipeline

    return WanVaceBackend(spec, device, load_wan(WanVACEPipeline, spec, device))


def build_tiny(spec: ModelSpec) -> None:
    """Random-initialised tiny Wan VACE, saved like real weights (diffusers' test recipe)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    from engine.weights import refill_random

    tokenizer, text_encoder, vae = tiny_wan_parts()
    torch.manual_seed(0)
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024, vace_layers=[0, 2], vace_in_channels=96,
    )
    # Variance-preserving weights: with PyTorch's defaults a reference image (which reaches the other frames only
    # through attention) moved the output by 0.02/255 on average; now by several levels.
    refill_random(transformer, seed=0)
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=spec.shift))
    pipe.save_pretrained(Path(spec.path))
    build_tiny_lora(transformer, Path(spec.path) / TINY_LORA)

