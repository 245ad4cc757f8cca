"""Small pieces every diffusers backend needs the same way: where weights load from, device placement,
and the strength arithmetic of noise-and-denoise pipelines."""

from __future__ import annotations

import numpy as np

from engine.backends import ChunkRequest
from engine.catalog import ModelSpec
from engine.devices import device_kind
from engine.errors import SettingsError, WeightsMissingError


def pipeline_source(spec: ModelSpec) -> tuple[str, dict]:
    """The location to load a pipeline from and the `from_pretrained` options for it."""
    if spec.path is not None:
        if not spec.weights_present():
            raise WeightsMissingError(spec.id, spec.path,
                                      "no model_index.json there; point `path` at a diffusers folder")
        return spec.path, {"local_files_only": True}
    return str(spec.hub), {"revision": spec.revision}


def place(pipe, spec: ModelSpec, device: str, move: bool = True) -> bool:
    """Put a pipeline on its device; on CUDA honour the catalog's `offload` and `vae_tiling`.

    Returns whether the model is offloaded (parts stay in CPU memory until they run).
    """
    cuda = device_kind(device) == "cuda"
    offload = cuda and spec.offload
    if offload and move:
        pipe.enable_model_cpu_offload(device=device)
    elif not offload:
        pipe.to(device)
    if cuda and spec.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return offload


def chosen_strength(request: ChunkRequest, spec: ModelSpec) -> float:
    strength = request.strength if request.strength is not None else spec.strength
    if not 0 < strength <= 1:
        raise SettingsError(f"strength {strength} is outside (0, 1] for model {spec.id!r}; "
                            "use a value above 0 (unchanged) up to 1 (fully regenerated)")
    return strength


def schedule_length(steps: int, strength: float) -> int:
    """The schedule to ask diffusers for: `steps`, lengthened if `strength` would leave no step to run.

    diffusers runs the last `int(steps * strength)` steps of the schedule.
    """
    length = steps
    while int(length * strength) < 1:
        length += 1
    return length


def denoise_video(pipe, request: ChunkRequest, strength: float, **options) -> np.ndarray:
    """Noise the window's frames to `strength` and denoise them under the prompt: uint8 RGB frames.

    `options` go to the pipeline as they are (control videos, the text encoder's sequence length).
    """
    from PIL import Image

    return run_pipeline(pipe, request, video=[Image.fromarray(frame) for frame in request.frames],
                        num_inference_steps=schedule_length(request.steps, strength), strength=strength, **options)


def run_pipeline(pipe, request: ChunkRequest, **arguments) -> np.ndarray:
    """Call a diffusers video pipeline on one chunk with the request's prompts, size, CFG and seed, reporting
    every step it runs; return its frames as uint8 RGB. `arguments` are the backend's own, and win over these."""
    import torch

    def step_end(pipeline, step, timestep, tensors):
        request.on_step(step + 1, pipeline.num_timesteps)
        return {}

    options = dict(prompt=request.prompt, negative_prompt=request.negative_prompt, height=request.height,
                   width=request.width, guidance_scale=request.cfg,
                   generator=torch.Generator(device="cpu").manual_seed(request.seed), output_type="np",
                   callback_on_step_end=step_end)
    options.update(arguments)  # a backend may replace the prompts and CFG (Wan's batched guidance does)
    with torch.inference_mode():
        result = pipe(**options)
    frames = np.asarray(result.frames[0], dtype=np.float32)
    return (frames * 255.0).round().clip(0, 255).astype(np.uint8)
