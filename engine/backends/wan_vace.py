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
import torch
from PIL import Image

from engine.backends import Accelerator, ChunkRequest
from engine.backends.common import load_wan, run_pipeline
from engine.catalog import ModelSpec
from engine.errors import SettingsError, WeightsMissingError

KEEP, GENERATE = 0, 255


class WanVaceBackend:
    def __init__(self, spec: ModelSpec, device: str, pipeline) -> None:
        self.spec = spec
        self.device = device
        self.pipeline = pipeline
        self._adapters: dict[str, str] = {}

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        pipe = self.pipeline
        _set_shift(pipe, request.shift)
        self._use_accelerator(request.accelerator)
        count = len(request.frames)
        scale = 1.0
        frames = request.frames
        if request.controls:
            # Transform: the control video is the conditioning; kept frames stay what they are.
            if len(request.controls) > 1:
                raise SettingsError(f"model {self.spec.id!r} takes one control video; combine types with depth+pose")
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

        return run_pipeline(pipe, request, video=video, mask=mask, reference_images=reference, num_frames=count,
                            num_inference_steps=request.steps, max_sequence_length=self.spec.max_sequence_length,
                            conditioning_scale=scale)

    def _use_accelerator(self, accelerator: Accelerator | None) -> None:
        pipe = self.pipeline
        if accelerator is None:
            if self._adapters:
                pipe.disable_lora()
            return
        lora = Path(accelerator.lora)
        if not lora.is_file():
            raise WeightsMissingError(self.spec.id, str(lora), "the accelerator LoRA named in the catalog is missing")
        name = self._adapters.get(str(lora))
        if name is None:
            name = f"accelerator{len(self._adapters)}"
            pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name=name)
            self._adapters[str(lora)] = name
        pipe.enable_lora()
        pipe.set_adapters([name], [accelerator.scale])


def load(spec: ModelSpec, device: str) -> WanVaceBackend:
    from diffusers import WanVACEPipeline

    return WanVaceBackend(spec, device, load_wan(WanVACEPipeline, spec, device))


def tiny_wan_parts():
    """The tiny tokenizer, UMT5 text encoder and Wan VAE every tiny Wan model shares, seeded.

    The VAE's convolutions get variance-preserving weights: with PyTorch's defaults its decoder's output moved by
    1/255 between two random latents and its encoder gave nearly the same latents for any video, so neither the
    diffusion nor VACE's conditioning video showed in 8-bit frames.
    """
    from diffusers import AutoencoderKLWan

    from engine.tiny_text import tiny_t5_tokenizer, tiny_umt5_encoder
    from engine.weights import refill_random

    tokenizer = tiny_t5_tokenizer()
    text_encoder = tiny_umt5_encoder(len(tokenizer))
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    refill_random(vae, seed=0)
    return tokenizer, text_encoder, vae


def build_tiny(spec: ModelSpec) -> None:
    """Random-initialised tiny Wan VACE, saved like real weights (diffusers' test recipe)."""
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
    _build_tiny_lora(transformer, Path(spec.path) / TINY_LORA)


TINY_LORA = "accelerator-lora/pytorch_lora_weights.safetensors"


def _build_tiny_lora(transformer, target: Path) -> None:
    """A random LoRA over the tiny transformer's attention, standing in for a distillation LoRA."""
    from diffusers import WanVACEPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        init_lora_weights=False)
    transformer.add_adapter(config, adapter_name="build")
    layers = get_peft_model_state_dict(transformer, adapter_name="build")
    WanVACEPipeline.save_lora_weights(target.parent, transformer_lora_layers=layers, weight_name=target.name)
    transformer.delete_adapters("build")


def _set_shift(pipe, shift: float) -> None:
    """Give the flow-matching scheduler this shift (UniPC calls it `flow_shift`)."""
    config = pipe.scheduler.config
    key = "flow_shift" if "flow_shift" in config else "shift"
    if config.get(key) != shift:
        pipe.scheduler = type(pipe.scheduler).from_config(config, **{key: shift})
