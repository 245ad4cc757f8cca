"""What every Wan 2.1 backend shares: loading, the flow shift, the accelerator LoRA, the speed-ups, and the tiny
test parts.

Wan VACE and Wan video-to-video differ in how they condition a window; they
load the same way (the VAE in its own dtype), take the same scheduler shift,
switch the same LoRA, through diffusers' Wan LoRA loader, and render with the
same speed-ups (`engine/backends/wan_speed.py`). `WanMixin` holds that for both
backend classes, which set `spec`, `device`, `pipeline` and `_adapters`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from engine.backends import Accelerator, ChunkRequest
from engine.backends.common import pipeline_source, place
from engine.backends.wan_speed import (
    FUSED_CPU,
    FUSED_CUDA,
    attention_kernels,
    attention_path,
    batched_guidance,
    compile_blocks,
    kernel_failure,
)
from engine.catalog import ModelSpec
from engine.devices import device_kind, dtype_named
from engine.errors import WeightsMissingError

TINY_LORA = "accelerator-lora/pytorch_lora_weights.safetensors"


class WanMixin:
    """Shift, accelerator switching and speed-ups for a backend holding a diffusers Wan pipeline."""

    spec: ModelSpec
    device: str
    pipeline: object
    _adapters: dict[str, str]
    _attention: str = ""

    def _transformers(self) -> list:
        """The pipeline's denoisers: Wan 2.2 layouts add a `transformer_2` for the low-noise steps."""
        pipe = self.pipeline
        return [part for part in (pipe.transformer, getattr(pipe, "transformer_2", None)) if part is not None]

    def _prepare_speed_ups(self) -> None:
        """Check the attention path and compile the blocks once, when the model loads (the model cache keeps it)."""
        self._attention = "scaled_dot_product_attention"
        for transformer in self._transformers():
            if self._fused_attention:
                self._attention = attention_path(transformer)
            if self.spec.compile:
                compile_blocks(transformer)

    def _batches_guidance(self, cfg: float) -> bool:
        # diffusers runs no unconditional pass at cfg <= 1; unset in the catalog means on
        return self.spec.batched_cfg is not False and cfg > 1.0

    @property
    def _fused_attention(self) -> bool:
        return self.spec.fused_attention is not False  # unset in the catalog means on

    def _render_fast(self, request: ChunkRequest, run: Callable[[dict], np.ndarray]) -> np.ndarray:
        """Call `run` (which calls the pipeline with the arguments it is given on top of its own) with this
        model's speed-ups in force."""
        import torch

        pipe = self.pipeline
        try:
            with attention_kernels(self.device, self._fused_attention):
                if not self._batches_guidance(request.cfg):
                    return run({})
                with torch.inference_mode():
                    embeds, negative = pipe.encode_prompt(
                        prompt=request.prompt, negative_prompt=request.negative_prompt,
                        do_classifier_free_guidance=True, max_sequence_length=self.spec.max_sequence_length,
                        device=pipe._execution_device)
                with ExitStack() as hooks:
                    for transformer in self._transformers():
                        hooks.enter_context(batched_guidance(transformer, negative, request.cfg))
                    return run({"prompt": None, "negative_prompt": None, "prompt_embeds": embeds,
                                "guidance_scale": 1.0})
        except RuntimeError as exc:
            failure = kernel_failure(exc, self.spec, self.device)
            if failure is None:
                raise
            raise failure from exc

    def speed_ups(self, cfg: float) -> dict:
        """What the Render Info records: the dtypes the parts really have and which speed-ups a render at `cfg`
        uses."""
        pipe = self.pipeline
        kernels = (FUSED_CUDA if device_kind(self.device) == "cuda" else FUSED_CPU) if self._fused_attention \
            else ("MATH",)
        return {
            "transformer_dtype": str(self._transformers()[0].dtype).removeprefix("torch."),
            "vae_dtype": str(pipe.vae.dtype).removeprefix("torch."),
            "text_encoder_dtype": str(pipe.text_encoder.dtype).removeprefix("torch."),
            "batched_cfg": self._batches_guidance(cfg),
            "attention": self._attention,
            "attention_kernels": [kernel.lower() for kernel in kernels],
            "compile": bool(self.spec.compile),
        }

    def _set_shift(self, shift: float) -> None:
        """Give the flow-matching scheduler this shift (UniPC calls it `flow_shift`)."""
        pipe = self.pipeline
        config = pipe.scheduler.config
        key = "flow_shift" if "flow_shift" in config else "shift"
        if config.get(key) != shift:
            pipe.scheduler = type(pipe.scheduler).from_config(config, **{key: shift})

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


def load_wan(pipeline_class, spec: ModelSpec, device: str):
    """A Wan pipeline of `pipeline_class` with its VAE in the VAE's own dtype (float32 unless the catalog says
    otherwise: Wan's VAE loses detail in half precision), placed on its device."""
    from diffusers import AutoencoderKLWan

    kind = device_kind(device)
    dtype = dtype_named(spec.dtype.get(kind, "float32"))
    vae_dtype = dtype_named(spec.vae_dtype.get(kind, "float32"))
    location, options = pipeline_source(spec)
    vae = AutoencoderKLWan.from_pretrained(location, subfolder="vae", dtype=vae_dtype, **options)
    pipe = pipeline_class.from_pretrained(location, vae=vae, dtype=dtype, **options)
    place(pipe, spec, device)
    return pipe


def tiny_wan_parts():
    """The tiny tokenizer, UMT5 text encoder and Wan VAE every tiny Wan model shares, seeded.

    The VAE's convolutions get variance-preserving weights: with PyTorch's defaults its decoder's output moved by
    1/255 between two random latents and its encoder gave nearly the same latents for any video, so neither the
    diffusion nor VACE's conditioning video showed in 8-bit frames.
    """
    import torch
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


def build_tiny_lora(transformer, target: Path) -> None:
    """A random LoRA over the tiny transformer's attention, standing in for a distillation LoRA."""
    import torch
    from diffusers import WanVACEPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        init_lora_weights=False)
    transformer.add_adapter(config, adapter_name="build")
    layers = get_peft_model_state_dict(transformer, adapter_name="build")
    WanVACEPipeline.save_lora_weights(target.parent, transformer_lora_layers=layers, weight_name=target.name)
    transformer.delete_adapters("build")
