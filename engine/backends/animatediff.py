"""AnimateDiff (Stable Diffusion 1.5 with a motion adapter) through diffusers' video-to-video pipelines.

The window's frames are noised to `strength` and denoised under the prompt,
so over the overlap the render starts from the previous chunk's output. With
control videos the same components run as `AnimateDiffVideoToVideoControlNetPipeline`,
one ControlNet per control type from the catalog's `controlnet_models`, each
loaded once on first use; a combined type ("depth+pose") runs the ControlNet of
each of its parts on its frames. The model cannot pin frames, and takes no mask
or reference; a request with either is refused naming the model and the
setting. DDIM (deterministic, linear betas as SD 1.5 was trained) replaces the
checkpoint's scheduler; flow `shift` does not apply to it (a request that gives it is refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from engine.backends import Asked, ChunkRequest, ControlFrames
from engine.backends.common import chosen_strength, denoise_video, pipeline_source, place
from engine.catalog import ModelSpec, WeightsLocation
from engine.devices import device_kind, dtype_named
from engine.errors import SettingsError, WeightsMissingError

if TYPE_CHECKING:
    import torch

SCHEDULER = {"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "linspace", "steps_offset": 1}


class AnimateDiffBackend:
    def __init__(self, spec: ModelSpec, device: str, pipeline, dtype: torch.dtype, offload: bool) -> None:
        self.spec = spec
        self.device = device
        self.pipeline = pipeline
        self.dtype = dtype
        self.offload = offload
        self._controlnets: dict[str, object] = {}
        self._control_pipelines: dict[tuple[str, ...], object] = {}
        self._offloaded = None

    @property
    def extra_modules(self) -> list:
        """The ControlNets loaded so far (they are not components of the plain pipeline)."""
        return list(self._controlnets.values())

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        check(self.spec, Asked.of_chunk(request))
        strength = chosen_strength(request, self.spec)
        controls = [(part, control) for control in request.controls for part in self._parts(control)]
        pipe = self._pipeline_for(tuple(part for part, _ in controls))
        options = {}
        if controls:
            videos = [[Image.fromarray(frame) for frame in control.parts.get(part, control.frames)]
                      for part, control in controls]
            scales = [float(control.strength) for _, control in controls]
            single = len(controls) == 1
            options = {"conditioning_frames": videos[0] if single else videos,
                       "controlnet_conditioning_scale": scales[0] if single else scales}

        return denoise_video(pipe, request, strength, **options)

    def _parts(self, control: ControlFrames) -> list[str]:
        """The ControlNets a control type uses ("depth+pose" uses two), each one the catalog names."""
        parts = control.type.split("+")
        missing = [part for part in parts if part not in self.spec.controlnet_models]
        if missing:
            known = ", ".join(sorted(self.spec.controlnet_models)) or "none"
            raise SettingsError(f"model {self.spec.id!r} has no ControlNet for control type {control.type!r} "
                                f"(its catalog entry has ControlNets for: {known}); remove that control or "
                                "add its weights under `controlnet_models`")
        return parts

    def _pipeline_for(self, parts: tuple[str, ...]):
        """The plain pipeline, or the ControlNet pipeline over the same components for these control types."""
        from diffusers import AnimateDiffVideoToVideoControlNetPipeline

        pipe = self.pipeline
        if parts:
            pipe = self._control_pipelines.get(parts)
            if pipe is None:
                nets = [self._controlnet(part) for part in parts]
                pipe = AnimateDiffVideoToVideoControlNetPipeline(
                    **self.pipeline.components, controlnet=nets[0] if len(nets) == 1 else nets)
                pipe.set_progress_bar_config(disable=True)
                self._control_pipelines[parts] = pipe
        if self.offload and pipe is not self._offloaded:
            # Offload hooks belong to one pipeline; the pipelines share modules, so they move with the one in use.
            pipe.enable_model_cpu_offload(device=self.device)
            self._offloaded = pipe
        return pipe

    def _controlnet(self, part: str):
        from diffusers import ControlNetModel

        net = self._controlnets.get(part)
        if net is None:
            weights = self.spec.controlnet_models[part]
            options = weights_options(self.spec.id, weights, f"the {part} ControlNet")
            net = ControlNetModel.from_pretrained(weights.location, dtype=self.dtype, **options)
            if not self.offload:
                net.to(self.device)
            self._controlnets[part] = net
        return net


def weights_options(model_id: str, weights: WeightsLocation, what: str) -> dict:
    """`from_pretrained` options for extra weights; local folders must exist."""
    if weights.path is None:
        return {"revision": weights.revision}
    if not Path(weights.path).is_dir():
        raise WeightsMissingError(model_id, weights.path, f"{what} named in the catalog is missing; "
                                  "download or copy its diffusers folder there")
    return {"local_files_only": True}


def check(spec: ModelSpec, asked: Asked) -> None:
    """Refuse what AnimateDiff cannot honour (a flow shift, a mask, a reference, a Wan accelerator LoRA) rather
    than ignore it."""
    if asked.shift:
        raise SettingsError(f"model {spec.id!r} does not support shift (its DDIM scheduler has no flow shift); "
                            "remove it from the request")
    given = {"mask": asked.mask, "reference_frame": asked.reference, "accelerator": asked.accelerator}
    used = [name for name, present in given.items() if present]
    if used:
        raise SettingsError(f"model {spec.id!r} (AnimateDiff) cannot use {', '.join(used)}; "
                            "remove it from the request or choose a Wan VACE model")


def load(spec: ModelSpec, device: str) -> AnimateDiffBackend:
    import torch
    from diffusers import AnimateDiffVideoToVideoPipeline, DDIMScheduler, MotionAdapter

    kind = device_kind(device)
    # SD 1.5's pipelines run the VAE at the pipeline's dtype (they upcast it themselves to encode).
    dtype = dtype_named(spec.dtype.get(kind, "float32"))
    location, options = pipeline_source(spec)
    components = {}
    if spec.motion_adapter is not None:
        components["motion_adapter"] = MotionAdapter.from_pretrained(
            spec.motion_adapter.location, dtype=dtype,
            **weights_options(spec.id, spec.motion_adapter, "the motion adapter"))
    pipe = AnimateDiffVideoToVideoPipeline.from_pretrained(location, dtype=dtype, **components, **options)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **SCHEDULER)
    if dtype == torch.float32:
        # Nothing to upcast; left on, diffusers re-casts the VAE and warns about it on every chunk.
        pipe.vae.register_to_config(force_upcast=False)
    # Offload hooks belong to one pipeline; the backend attaches them to whichever pipeline it uses.
    offload = place(pipe, spec, device, move=False)
    backend = AnimateDiffBackend(spec, device, pipe, dtype, offload)
    if offload:
        backend._pipeline_for(())
    return backend


def build_tiny(spec: ModelSpec) -> None:
    """Random-initialised tiny SD 1.5, motion adapter and ControlNets, saved like real ones (diffusers' test recipe).

    Extra weights with a local path (the motion adapter, ControlNets) are
    written directly inside the model's folder under their folder's name, so
    the model is built, and replaced, as one.
    """
    import torch
    from diffusers import (
        AnimateDiffVideoToVideoPipeline,
        AutoencoderKL,
        DDIMScheduler,
        MotionAdapter,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.tiny_text import tiny_clip_tokenizer
    from engine.weights import refill_random

    root = Path(spec.path)
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length, projection_dim=16, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=2,
    )
    torch.manual_seed(0)
    motion_adapter = MotionAdapter(block_out_channels=(8, 16), motion_layers_per_block=1, motion_norm_num_groups=2,
                                   motion_num_attention_heads=2)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1,
    )
    for seed, part in enumerate((text_encoder, unet, motion_adapter, vae)):
        refill_random(part, seed=seed)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False, **SCHEDULER)
    parts = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}
    adapter = spec.motion_adapter
    if adapter is not None and adapter.path is not None:
        # Laid out like a real SD 1.5 checkpoint with its motion adapter beside it.
        StableDiffusionPipeline(unet=unet, safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False, **parts).save_pretrained(root)
        motion_adapter.save_pretrained(root / Path(adapter.path).name)
    else:
        AnimateDiffVideoToVideoPipeline(unet=unet, motion_adapter=motion_adapter, **parts).save_pretrained(root)
    for index, (_, weights) in enumerate(sorted(spec.controlnet_models.items())):
        if weights.path is not None:
            _tiny_controlnet(unet, seed=index).save_pretrained(root / Path(weights.path).name)


def _tiny_controlnet(unet, seed: int):
    """A ControlNet shaped like the tiny UNet, every layer random (its zero convolutions too) so that it steers.

    Filling only the zero convolutions made the ControlNet add a fixed offset whatever the control image: the
    default-initialised conditioning embedding shrank the image to nothing on the way (a dark flat control and
    a frame of the clip gave renders 0.003/255 apart).
    """
    import torch
    from diffusers import ControlNetModel

    from engine.weights import refill_random

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8),
                                    load_weights_from_unet=False)
    refill_random(net, seed=seed, bias=0.1)
    # Seven SiLU-activated convolutions shrink the control image at gain 1; gain 2 keeps it in the residuals.
    refill_random(net.controlnet_cond_embedding, seed=seed, gain=2.0, bias=0.1)
    return net
