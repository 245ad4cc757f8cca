"""Memory planning: before a job starts on a device, how much memory it needs, and what to do when it does not fit.

The estimate has three parts, each from the model folder and the chunk's shape, never from running the model:
- weights: every component's parameter count (read from the safetensors headers, nothing loaded) at the dtype it
  will run in (the VAE at its own);
- diffusion: the transformer's working set for one step over the chunk's latent tokens. With fused attention
  (PyTorch's scaled_dot_product_attention, which diffusers' Wan uses) it grows linearly with the tokens: the
  hidden states, q/k/v, the feed-forward's inner width, and VACE's hints, which live for the whole forward pass;
- VAE: the Wan VAE encodes and decodes a few frames at a time with a cache of the previous frames in every
  causal convolution, so its working set grows with the frame *area*, not the frame count; with tiling it is
  one tile's. The chunk's whole video tensors (conditioning, mask, output) are added on top.

The constants are deliberately on the generous side: a plan that says "fits" must fit.

When the total is over what the device has, the plan tries, cheapest first: VAE tiling (a little slower, only the
VAE's part shrinks), model CPU offload (CUDA only: one component on the GPU at a time; slower), both. If nothing
fits it raises `MemoryPlanError` naming the largest context size and the largest output size that would.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.devices import device_kind
from engine.errors import SettingsError
from engine.plan import FrameConstraint

GIB = 2**30
BYTES_PER_DTYPE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                     "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
VAE_TILE_PIXELS = 256 * 256  # AutoencoderKLWan's tile_sample_min_height x tile_sample_min_width
VAE_FLOATS_PER_PIXEL_PER_CHANNEL = 50  # causal caches + a 4-frame working set, per channel of base_dim
VIDEO_COPIES = 6  # conditioning video, mask, inactive and reactive halves, decoded output and its numpy copy
# What the estimate does not model (allocator slack, float32 copies of small modules, scheduler state): measured
# on the CPU, the full-size model's worker peaked 5 % above the estimate, not counting the interpreter and libraries.
SLACK = 0.15
DECISIONS = ("fits", "vae_tiling", "offload", "offload+vae_tiling")
DESCRIBED = {"fits": "nothing changed", "vae_tiling": "VAE tiling", "offload": "model CPU offload",
             "offload+vae_tiling": "model CPU offload and VAE tiling"}


class MemoryPlanError(SettingsError):
    """The job does not fit the device's memory in any mode hotshot can switch to."""


@dataclass(frozen=True)
class Shape:
    """What one chunk asks of the model: frames per window, output size, and the classifier-free batch."""

    frames: int
    width: int
    height: int
    cfg_batch: int = 2  # conditional and unconditional pass in one batch (the larger of the two ways to run CFG)
    reference: bool = True  # VACE's reference image adds one latent frame


@dataclass(frozen=True)
class Need:
    """Bytes a job needs on its device, by part."""

    weights: dict[str, int]
    text: int
    diffusion: int
    vae: int
    vae_tiled: int

    @property
    def weights_total(self) -> int:
        return sum(self.weights.values())

    def peak(self, decision: str) -> int:
        """The most memory used at once, with SLACK on top: the stages (text, diffusion, VAE) run one after
        another."""
        vae = self.vae_tiled if "vae_tiling" in decision else self.vae
        if decision.startswith("offload"):
            # Model CPU offload: only the component running is on the device.
            raw = max(self.weights.get("text_encoder", 0) + self.text,
                      self.weights.get("transformer", 0) + self.diffusion,
                      self.weights.get("vae", 0) + vae)
        else:
            raw = self.weights_total + max(self.text, self.diffusion, vae)
        return int(raw * (1 + SLACK))

    def to_dict(self) -> dict:
        return {"weights": self.weights, "text": self.text, "diffusion": self.diffusion, "vae": self.vae,
                "vae_tiled": self.vae_tiled}


@dataclass(frozen=True)
class Available:
    bytes: int
    source: str  # "setting", "free CUDA memory", "MemAvailable"


@dataclass(frozen=True)
class MemoryPlan:
    """What was estimated, what was available, and what the job runs with."""

    need: Need | None
    available: Available | None
    decision: str  # one of DECISIONS, or "not estimated"
    reason: str = ""

    @property
    def offload(self) -> bool:
        return self.decision.startswith("offload")

    @property
    def vae_tiling(self) -> bool:
        return "vae_tiling" in self.decision

    def to_manifest(self) -> dict:
        return {
            "decision": self.decision,
            "estimate_bytes": self.need.peak(self.decision) if self.need and self.decision in DECISIONS else None,
            "estimate": self.need.to_dict() if self.need else None,
            "available_bytes": self.available.bytes if self.available else None,
            "available_from": self.available.source if self.available else None,
            "reason": self.reason or None,
        }


# --- reading the model folder ------------------------------------------------------------------------------


def safetensors_elements(path: Path) -> int:
    """Number of values in a safetensors file, from its JSON header alone."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for side in entry["shape"]:
            count *= side
        total += count
    return total


@functools.lru_cache(maxsize=16)
def component_elements(folder: Path) -> dict[str, int]:
    """Parameter counts of each component subfolder of a diffusers folder (transformer, text_encoder, vae ...).

    A component saved as something other than safetensors is counted from its file sizes at 4 bytes a value."""
    counts: dict[str, int] = {}
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        tensors = list(sub.glob("*.safetensors"))
        if tensors:
            counts[sub.name] = sum(safetensors_elements(path) for path in tensors)
        else:
            sized = [p for p in sub.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
            if sized:
                counts[sub.name] = sum(p.stat().st_size for p in sized) // 4
    return counts


def model_folder(spec) -> Path | None:
    """The local folder of a catalog entry's weights: its `path`, or its hub snapshot when already cached."""
    if spec.path is not None:
        return Path(spec.path) if (Path(spec.path) / "model_index.json").is_file() else None
    if spec.hub is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.hub, "model_index.json", revision=spec.revision)
    return Path(found).parent if isinstance(found, str) else None


def _config(folder: Path, component: str) -> dict:
    path = folder / component / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# --- the estimate --------------------------------------------------------------------------------------------


def estimate(folder: Path, shape: Shape, dtype: str, vae_dtype: str, max_sequence_length: int = 512) -> Need | None:
    """Bytes a Wan model in `folder` needs for one chunk of `shape`; None for a folder that is not a Wan layout."""
    transformer = _config(folder, "transformer")
    vae = _config(folder, "vae")
    if "num_attention_heads" not in transformer or "base_dim" not in vae:
        return None
    size, vae_size = BYTES_PER_DTYPE.get(dtype, 4), BYTES_PER_DTYPE.get(vae_dtype, 4)
    weights = {name: count * (vae_size if name == "vae" else size)
               for name, count in component_elements(folder).items()}

    width = transformer["num_attention_heads"] * transformer["attention_head_dim"]
    temporal = vae.get("scale_factor_temporal") or 4
    spatial = vae.get("scale_factor_spatial") or 8
    patch = transformer.get("patch_size") or [1, 2, 2]
    latent_frames = (shape.frames - 1) // temporal + 1 + (1 if shape.reference else 0)
    latent_h, latent_w = shape.height // spatial, shape.width // spatial
    tokens = latent_frames // patch[0] * (latent_h // patch[1]) * (latent_w // patch[2])
    hints = len(transformer.get("vace_layers") or [])
    # Per token: six activations of the hidden width in the model's dtype (hidden, q, k, v, attention out,
    # residual), three float32 temporaries of the norms and modulation, the feed-forward's inner width twice,
    # and one hint per VACE block kept to the end of the pass.
    per_token = width * (6 * size + 3 * 4) + transformer.get("ffn_dim", 4 * width) * 2 * size + hints * width * size
    text_tokens = shape.cfg_batch * max_sequence_length * transformer.get("text_dim", 4096)
    latents = (transformer.get("in_channels", 16) * 2 + transformer.get("vace_in_channels", 0)) \
        * latent_frames * latent_h * latent_w * 4
    diffusion = shape.cfg_batch * (tokens * per_token + latents) + text_tokens * size * 2

    text = text_tokens * size * 8
    pixels = shape.width * shape.height
    per_pixel = vae["base_dim"] * VAE_FLOATS_PER_PIXEL_PER_CHANNEL * vae_size
    video = VIDEO_COPIES * shape.frames * 3 * pixels * 4
    return Need(weights=weights, text=text, diffusion=diffusion, vae=video + per_pixel * pixels,
                vae_tiled=video + per_pixel * min(pixels, VAE_TILE_PIXELS))


# --- what is available, and the decision -------------------------------------------------------------------


def available_memory(device: str, setting: int | None = None, resident: int = 0) -> Available:
    """Memory a job may use on `device`: the setting when given, else what the device has free plus `resident`
    (the bytes of this model already loaded there, which the job reuses)."""
    if setting is not None:
        return Available(setting, "setting")
    if device_kind(device) == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return Available(free + resident, "free CUDA memory")
    return Available(_mem_available() + resident, "MemAvailable")


def _mem_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def decide(need: Need, available: int, device: str) -> str | None:
    """The cheapest mode whose peak fits `available`, or None. Offload exists only on CUDA."""
    modes = DECISIONS if device_kind(device) == "cuda" else ("fits", "vae_tiling")
    return next((mode for mode in modes if need.peak(mode) <= available), None)


def readable_size(value: int) -> str:
    """A size for people: GiB with one decimal, or MiB below 1 GiB."""
    return f"{value / GIB:.1f} GiB" if value >= GIB else f"{value / 2**20:.1f} MiB"


def refusal(folder: Path, shape: Shape, need: Need, available: Available, device: str, dtype: str,
            vae_dtype: str, constraint: FrameConstraint, multiple: int, max_sequence_length: int) -> str:
    """Why the job cannot run, and the largest context size and output size that would."""
    modes = DECISIONS if device_kind(device) == "cuda" else ("fits", "vae_tiling")
    best = min(modes, key=need.peak)

    def fits(frames: int, width: int, height: int) -> bool:
        smaller = estimate(folder, Shape(frames, width, height, shape.cfg_batch, shape.reference), dtype,
                           vae_dtype, max_sequence_length)
        return smaller is not None and decide(smaller, available.bytes, device) is not None

    frames = next((count for count in range(shape.frames - 1, 0, -1)
                   if constraint.snap_down(count) == count and fits(count, shape.width, shape.height)), None)
    longest = max(shape.width, shape.height)
    sizes = range(longest // multiple * multiple - multiple, multiple - 1, -multiple)
    size = next((side for side in sizes if fits(shape.frames, max(multiple, shape.width * side // longest),
                                                max(multiple, shape.height * side // longest))), None)
    options = []
    if frames is not None:
        options.append(f"a context.size of at most {frames} frames at {shape.width}x{shape.height}")
    if size is not None:
        options.append(f"an output_size of at most {size} at {shape.frames} frames a chunk")
    what = " or ".join(options) if options else "nothing smaller: the weights alone do not fit"
    size_of = readable_size
    vae = need.vae_tiled if "vae_tiling" in best else need.vae
    return (f"the job needs about {size_of(need.peak(best))} on {device} (weights {size_of(need.weights_total)}, "
            f"diffusion {size_of(need.diffusion)}, VAE {size_of(vae)}"
            f"{', with ' + DESCRIBED[best] if best != 'fits' else ''}) but "
            f"{size_of(available.bytes)} are available ({available.source}); it would fit with {what}. If the "
            "detected memory is wrong, set device_memory_gb")


def plan(spec, device: str, shape: Shape, setting: int | None = None, resident: int = 0) -> MemoryPlan:
    """The memory plan for a chunk of `shape` of model `spec` on `device`; raises `MemoryPlanError` when the job
    fits in no mode. A model without a local Wan folder (weightless, not downloaded yet) is not estimated."""
    kind = device_kind(device)
    dtype, vae_dtype = spec.dtype.get(kind, "float32"), spec.vae_dtype.get(kind, "float32")
    folder = model_folder(spec)
    need = estimate(folder, shape, dtype, vae_dtype, spec.max_sequence_length) if folder else None
    if need is None:
        return MemoryPlan(None, None, "not estimated", "no local Wan weights to estimate from")
    available = available_memory(device, setting, resident)
    decision = decide(need, available.bytes, device)
    if decision is None:
        raise MemoryPlanError(refusal(folder, shape, need, available, device, dtype, vae_dtype, spec.constraint,
                                      spec.resolution_multiple, spec.max_sequence_length))
    # The catalog may ask for offload or tiling itself; the plan only ever adds to what it asks.
    if kind == "cuda" and spec.offload and not decision.startswith("offload"):
        decision = "offload+vae_tiling" if "vae_tiling" in decision else "offload"
    if spec.vae_tiling and "vae_tiling" not in decision and kind == "cuda":
        decision = "offload+vae_tiling" if decision.startswith("offload") else "vae_tiling"
    return MemoryPlan(need, available, decision, "" if decision == "fits" else
                      f"needs {readable_size(need.peak('fits'))} as it is, {readable_size(available.bytes)} available")


def apply(backend, memory: MemoryPlan, device: str) -> None:
    """Switch a (possibly cached) backend's pipeline to the plan's VAE tiling and offload."""
    pipe = getattr(backend, "pipeline", None)
    if pipe is None or memory.decision not in DECISIONS:
        return
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_tiling"):
        if memory.vae_tiling:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
    if device_kind(device) != "cuda":
        return
    offloaded = getattr(backend, "offloaded", backend.spec.offload)
    if memory.offload and not offloaded:
        pipe.enable_model_cpu_offload(device=device)
    elif offloaded and not memory.offload:
        pipe.remove_all_hooks()
        pipe.to(device)
    backend.offloaded = memory.offload
