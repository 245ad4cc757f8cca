"""Wan 2.1 VACE 1.3B at its published size, with random weights: the real-size path proven without a download.

Speed and memory do not depend on what the weights are, and the bugs that only show at real sizes (dtypes,
the VAE's latent scale, text lengths, memory) depend only on the shapes. So the transformer and the VAE here
have the published configurations of Wan-AI/Wan2.1-VACE-1.3B-diffusers; only the text encoder is small.
The real one is UMT5-XXL (5.7B parameters, 11 GB in bf16), which does not fit a shared test machine; the stand-in
is a two-layer UMT5 encoder whose output width is the transformer's text width (4096), so the transformer sees
prompt embeddings of the real shape, `max_sequence_length` (512) tokens long.

`build_full_wan_vace` saves the model as `save_pretrained` saves real weights, so it loads through the same
`load_wan` as the hub model; `full_wan_vace_pipeline` builds it in memory for benchmarks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from diffusers import WanVACEPipeline

# The transformer's config.json in Wan-AI/Wan2.1-VACE-1.3B-diffusers (diffusers' conversion script's
# "Wan-VACE-1.3B" entry): 12 heads x 128 = 1536 wide, 30 blocks, a VACE block beside every second one.
WAN_VACE_1_3B_TRANSFORMER: dict = {
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 8960,
    "freq_dim": 256,
    "image_dim": None,
    "in_channels": 16,
    "num_attention_heads": 12,
    "num_layers": 30,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "pos_embed_seq_len": None,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
    "vace_in_channels": 96,
    "vace_layers": [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28],
}

# The Wan 2.1 VAE (AutoencoderKLWan's defaults are this model's, latents_mean and latents_std included).
WAN_2_1_VAE: dict = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}

# The published scheduler: UniPC over flow-matching sigmas, shift 3.
WAN_SCHEDULER: dict = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "num_train_timesteps": 1000,
                       "flow_shift": 3.0}

# The small text encoder: UMT5's layout, 4096 wide (the transformer's `text_dim`), otherwise tiny.
SMALL_TEXT_ENCODER: dict = {"d_model": 4096, "d_kv": 32, "d_ff": 256, "num_layers": 2, "num_heads": 4,
                            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}
MAX_SEQUENCE_LENGTH = 512
SEED = 0


def fill_random(module, seed: int = SEED, device: str = "cpu") -> None:
    """Give every parameter of `module` seeded values in its own dtype: weight matrices and convolutions
    variance-preserving normals (std 1/sqrt(fan-in)), norm scales 1, biases 0, modulation tables N(0, 1/dim).

    One pass in parameter order with one generator, so the same seed gives the same weights; no default
    (kaiming, fp32) initialisation runs first, which over 1.3B parameters takes minutes.
    """
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "scale_shift_table" or parameter.ndim >= 2:
                fan_in = parameter.shape[-1] if leaf == "scale_shift_table" else parameter[0].numel()
                # randn straight into the parameter's storage: normal_ in bf16 is about twice as slow.
                torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype, device=parameter.device,
                            out=parameter.data)
                parameter.mul_(1.0 / math.sqrt(fan_in))
            elif leaf == "bias":
                parameter.zero_()
            else:
                parameter.fill_(1.0)


def empty_model(model_class, config: dict, dtype: torch.dtype, device: str = "cpu"):
    """`model_class(**config)` with uninitialised parameters in `dtype` on `device`; buffers (the rotary
    tables) are computed as usual. Modules the class keeps in float32 stay float32, as `from_pretrained` does."""
    import torch
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = model_class(**config)
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    made: dict[int, torch.nn.Parameter] = {}  # a tied parameter (UMT5's shared embedding) stays one parameter
    for module_name, module in model.named_modules():
        for name, parameter in list(module.named_parameters(recurse=False)):
            if id(parameter) not in made:
                fp32 = any(part in keep for part in f"{module_name}.{name}".split("."))
                wanted = torch.float32 if fp32 and dtype != torch.float32 else dtype
                made[id(parameter)] = torch.nn.Parameter(
                    torch.empty(parameter.shape, dtype=wanted, device=device), requires_grad=False)
            module._parameters[name] = made[id(parameter)]
    if hasattr(model, "tie_weights"):  # transformers ties embeddings after construction, as from_pretrained does
        model.tie_weights()
    return model.to(device)


def full_transformer(dtype: torch.dtype, device: str = "cpu", seed: int = SEED):
    from diffusers import WanVACETransformer3DModel

    transformer = empty_model(WanVACETransformer3DModel, WAN_VACE_1_3B_TRANSFORMER, dtype, device)
    fill_random(transformer, seed, device)
    return transformer


def full_vae(dtype: torch.dtype, device: str = "cpu", seed: int = SEED + 1):
    from diffusers import AutoencoderKLWan

    vae = empty_model(AutoencoderKLWan, WAN_2_1_VAE, dtype, device)
    fill_random(vae, seed, device)
    return vae


def small_text_parts(dtype: torch.dtype, device: str = "cpu", seed: int = SEED + 2):
    """The tokenizer (hotshot's offline T5-shaped one, 512 tokens) and the small 4096-wide UMT5 encoder."""
    from transformers import UMT5Config, UMT5EncoderModel

    from engine.tiny_text import tiny_t5_tokenizer

    tokenizer = tiny_t5_tokenizer(model_max_length=MAX_SEQUENCE_LENGTH)
    config = UMT5Config(vocab_size=len(tokenizer), **SMALL_TEXT_ENCODER)
    encoder = empty_model(UMT5EncoderModel, {"config": config}, dtype, device)
    fill_random(encoder, seed, device)
    return tokenizer, encoder


def full_wan_vace_pipeline(device: str = "cpu", dtype: torch.dtype | None = None,
                           vae_dtype: torch.dtype | None = None) -> WanVACEPipeline:
    """The full-size random Wan VACE pipeline built in memory on `device` (transformer and text encoder in
    `dtype`, bf16 by default; the VAE in float32, as hotshot loads it), for benchmarks."""
    import torch
    from diffusers import UniPCMultistepScheduler, WanVACEPipeline

    dtype = dtype or torch.bfloat16
    vae_dtype = vae_dtype or torch.float32
    tokenizer, text_encoder = small_text_parts(dtype, device)
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=full_vae(vae_dtype, device),
                           transformer=full_transformer(dtype, device),
                           scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_full_wan_vace(target: Path, dtype: torch.dtype | None = None) -> Path:
    """Write the full-size random Wan VACE to `target` with `save_pretrained` (safetensors, bf16 by default):
    a diffusers folder laid out like Wan-AI/Wan2.1-VACE-1.3B-diffusers, about 4 GB."""
    import torch

    target = Path(target)
    pipe = full_wan_vace_pipeline("cpu", dtype or torch.bfloat16, torch.float32)
    pipe.save_pretrained(target)
    return target
