"""The Wan backends' speed-ups: guidance in one batched forward, fused attention, compiled transformer blocks.

diffusers' Wan pipelines run the transformer twice per step under classifier-free guidance, once with the
prompt and once with the negative prompt. `batched_guidance` pairs the two without a denoising loop of
hotshot's own: the pipeline is called without guidance (one transformer call per step) and with prompt
embeddings hotshot encoded itself; forward hooks on the transformer stack the conditional and unconditional
inputs on the batch axis, run one forward, and hand the pipeline the guided prediction
`uncond + cfg * (cond - uncond)`, computed in float32. Everything else (the VACE conditioning latents, masks,
reference images, the scheduler, the VAE) stays the pipeline's own code, so a diffusers update that changes
them is followed as it is.

Attention runs through PyTorch's `scaled_dot_product_attention` (diffusers' native attention backend);
`attention_kernels` restricts it to the fused kernels, so a shape or dtype none of them takes fails with a
message instead of silently taking the reference (math) kernel. `compile_blocks` compiles the transformer's
repeated blocks (diffusers' regional compilation) once per loaded model; the model cache keeps the compiled
model, so later chunks of a shape already seen reuse the compiled code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from engine.catalog import ModelSpec
from engine.devices import device_kind
from engine.errors import SettingsError

if TYPE_CHECKING:
    import torch

# Inputs of a Wan transformer forward that carry the batch axis besides the text embeddings.
PER_SAMPLE = ("hidden_states", "timestep", "control_hidden_states", "encoder_hidden_states_image")
FUSED_CUDA = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")
FUSED_CPU = ("FLASH_ATTENTION",)  # PyTorch's CPU flash kernel (float32, bfloat16 and float16)


@contextmanager
def batched_guidance(transformer, negative_embeds: torch.Tensor, scale: float) -> Iterator[None]:
    """While open, each call of `transformer` (made with the prompt's embeddings) also runs the negative
    prompt in the same batch and returns the guided noise prediction."""
    import torch

    def stack(module, args, kwargs):
        if args:
            raise RuntimeError("the Wan transformer was called with positional arguments; batched guidance "
                               "expects diffusers' keyword call (set batched_cfg = false for this model)")
        kwargs = dict(kwargs)
        prompt = kwargs["encoder_hidden_states"]
        kwargs["encoder_hidden_states"] = torch.cat([prompt, negative_embeds.to(prompt.device, prompt.dtype)])
        for name in PER_SAMPLE:
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor):
                kwargs[name] = torch.cat([value, value])
        return args, kwargs

    def guide(module, args, kwargs, output):
        prediction = output[0] if isinstance(output, tuple) else output.sample
        conditional, unconditional = prediction.float().chunk(2)
        guided = unconditional + scale * (conditional - unconditional)
        if isinstance(output, tuple):
            return (guided, *output[1:])
        output.sample = guided
        return output

    handles = [transformer.register_forward_pre_hook(stack, with_kwargs=True),
               transformer.register_forward_hook(guide, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def attention_kernels(device: str, fused: bool):
    """The SDPA kernels allowed while a chunk renders: only fused ones, or only the reference math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not fused:
        return sdpa_kernel([SDPBackend.MATH])
    names = FUSED_CUDA if device_kind(device) == "cuda" else FUSED_CPU
    return sdpa_kernel([getattr(SDPBackend, name) for name in names])


def attention_path(transformer) -> str:
    """Name the attention every processor of `transformer` takes; refuse a model whose attention would not go
    through `scaled_dot_product_attention` (another processor, or another diffusers attention backend)."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    active, _ = _AttentionBackendRegistry.get_active_backend()
    others = set()
    for name, processor in transformer.attn_processors.items():
        backend = getattr(processor, "_attention_backend", None) or active
        if type(processor).__name__ != "WanAttnProcessor" or AttentionBackendName(backend) != \
                AttentionBackendName.NATIVE:
            others.add(f"{name}: {type(processor).__name__} ({backend})")
    if others:
        raise SettingsError(f"attention of the Wan transformer does not go through PyTorch's "
                            f"scaled_dot_product_attention: {sorted(others)[:3]}; unset DIFFUSERS_ATTN_BACKEND or "
                            "set fused_attention = false in the model's catalog entry")
    return "scaled_dot_product_attention"


def compile_blocks(transformer) -> None:
    """Compile the transformer's repeated blocks in place: fixed shapes (a new shape compiles once more), and the
    blocks of one class share the compiled code."""
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise SettingsError("compile = true needs a C compiler for torch.compile's CPU code (cc or gcc); "
                            "install one or set compile = false in the model's catalog entry")
    transformer.compile_repeated_blocks(dynamic=False)


def kernel_failure(exc: RuntimeError, spec: ModelSpec, device: str) -> SettingsError | None:
    """A clear message when no fused attention kernel takes this chunk's attention (else None)."""
    if "No available kernel" not in str(exc):
        return None
    allowed = FUSED_CUDA if device_kind(device) == "cuda" else FUSED_CPU
    return SettingsError(f"no fused attention kernel ({', '.join(allowed).lower()}) takes the attention of model "
                         f"{spec.id!r} on {device}; set fused_attention = false in its catalog entry to use "
                         "PyTorch's math kernel (slower)")
