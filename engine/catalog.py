"""The model catalog: which models exist, where their weights are, what they accept.

Entries come from TOML files (`config/models.toml` ships with hotshot; users
add their own files after it, and a later entry with the same id replaces an
earlier one). Reading the catalog never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.backends import BACKEND_NAMES, FAMILIES
from engine.devices import device_kind
from engine.errors import validation_problems
from engine.plan import FrameConstraint
from engine.weights import CatalogError, read_catalog_file, weights_location, weights_present

ControlType = Literal["depth", "pose", "softedge", "depth+pose", "normal"]
CONTROL_TYPES: tuple[str, ...] = get_args(ControlType)
WEIGHTLESS = tuple(name for name, family in FAMILIES.items() if family.weightless)
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, low quality, worst quality, jpeg artifacts, static, overexposed, washed out colours, "
    "deformed, disfigured, extra fingers, extra limbs, extra faces, watermark, subtitles"
)


class AcceleratorProfile(BaseModel):
    """What `low_step: true` switches to: fewer steps, its CFG, and optionally a LoRA."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(ge=1)
    cfg: float = Field(ge=0)
    shift: float | None = Field(default=None, gt=0)
    lora: str | None = Field(default=None, description="a LoRA file; relative paths start in models_dir")
    lora_scale: float = Field(default=1.0, ge=0)


class WeightsLocation(BaseModel):
    """Extra weights (a ControlNet, say): a local folder or a hub repository id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    hub: str | None = None
    revision: str | None = None

    @model_validator(mode="after")
    def _one(self) -> WeightsLocation:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` (a local folder) or `hub` (a hub repository id)")
        return self

    @property
    def location(self) -> str:
        return self.path if self.path is not None else str(self.hub)


class Capabilities(BaseModel):
    """Which request settings a model exposes; a request using any other fails naming the model and field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    style_frame: bool = False
    reference_frame: bool = False
    mask: bool = False
    controlnets: list[ControlType] = Field(default_factory=list)
    strength: bool = False
    keyframes: bool = False
    prompt: bool = Field(default=True, description="prompt, negative_prompt and auto_prompt have an effect")
    sampling: bool = Field(default=True, description="steps, cfg, shift, seed and low_step have an effect")
    needs_paint: bool = Field(default=False, description="renders only from painted frames: a request must give "
                                                         "a style_frame or keyframes")


class ModelSpec(BaseModel):
    """One catalog entry, with its weights location made absolute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    backend: Literal[BACKEND_NAMES]  # one of the families in engine/backends/__init__.py
    path: str | None = Field(default=None, description="local folder of diffusers weights")
    hub: str | None = Field(default=None, description="hub repository id, fetched on first use")
    revision: str | None = None
    frame_constraint: str = "4k+1"
    resolution_multiple: int = Field(default=16, ge=8)
    context_default: int = Field(default=150, ge=1)
    context_max: int = Field(default=257, ge=1)
    context_overlap_default: int = Field(default=17, ge=0)
    steps: int = Field(default=30, ge=1)
    cfg: float = Field(default=5.0, ge=0)
    shift: float = Field(default=3.0, gt=0)
    accelerator: AcceleratorProfile | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    strength: float = Field(default=0.7, gt=0, le=1, description="default strength of noise-and-denoise backends")
    controlnet_models: dict[str, WeightsLocation] = Field(
        default_factory=dict, description="ControlNet weights per control type"
    )
    motion_adapter: WeightsLocation | None = Field(
        default=None, description="AnimateDiff motion adapter weights, when they are not in the model's own folder"
    )
    offload: bool = Field(default=False, description="on CUDA, keep parts of the model in CPU memory until needed")
    vae_tiling: bool = Field(default=False, description="decode large frames tile by tile to save GPU memory")
    # The speed-ups of the Wan backends; None (unset) is the backend's default, and other backends take none.
    batched_cfg: bool | None = Field(default=None, description="Wan (default true): the conditional and "
                                     "unconditional passes of classifier-free guidance in one batched forward")
    fused_attention: bool | None = Field(default=None, description="Wan (default true): attention only through "
                                         "PyTorch's fused SDPA kernels (false: its math kernel)")
    compile: bool | None = Field(default=None, description="Wan (default false): torch.compile the transformer's "
                                 "repeated blocks, once per loaded model and shape")
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    max_sequence_length: int = Field(default=512, ge=8)
    dtype: dict[str, str] = Field(default_factory=lambda: {"cpu": "float32", "cuda": "bfloat16"})
    vae_dtype: dict[str, str] = Field(default_factory=lambda: {"cpu": "float32", "cuda": "float32"})
    calibration: dict[str, float] = Field(
        default_factory=lambda: {"cpu": 2.0, "cuda": 0.05},
        description="seconds per megapixel-frame-step, per device kind",
    )
    tiny: bool = Field(default=False, description="a random-initialised test model hotshot may build itself")
    random_weights: bool = Field(default=False, description="a full-size layout with random weights, for tests and "
                                                            "benchmarks, built by `hotshot models make-random`")

    @field_validator("frame_constraint")
    @classmethod
    def _constraint_parses(cls, value: str) -> str:
        FrameConstraint.parse(value)
        return value

    @model_validator(mode="after")
    def _one_weights_location(self) -> ModelSpec:
        if self.backend in WEIGHTLESS:
            if self.path is not None or self.hub is not None:
                raise ValueError(f"the {self.backend} backend has no weights; remove `path` and `hub`")
        elif (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` (a local folder) or `hub` (a hub repository id)")
        tuned = [name for name in ("batched_cfg", "fused_attention", "compile") if getattr(self, name) is not None]
        if tuned and not FAMILIES[self.backend].speed_ups:
            raise ValueError(f"the {self.backend} backend has no {', '.join(tuned)} setting; "
                             "remove it (these speed-ups apply to the Wan backends)")
        if self.tiny and not self.id.startswith("tiny-"):
            raise ValueError("only models whose id starts with 'tiny-' may be marked tiny")
        if self.random_weights and (self.path is None or self.tiny):
            raise ValueError("a `random_weights` model is built into a local folder: give `path`, not `hub` or `tiny`")
        return self

    @property
    def constraint(self) -> FrameConstraint:
        return FrameConstraint.parse(self.frame_constraint)

    @property
    def weights(self) -> str:
        """Where the weights are: a local folder or a hub id (with @revision)."""
        if self.backend in WEIGHTLESS:
            return "none"
        return weights_location(self.path, self.hub, self.revision)

    def weights_present(self) -> bool:
        """Local weights exist, or hub weights are already in the local hub cache."""
        if self.backend in WEIGHTLESS:
            return True
        return weights_present(self.path, self.hub, self.revision, "model_index.json")

    def calibration_for(self, device: str) -> float:
        return self.calibration.get(device_kind(device), self.calibration.get("cpu", 2.0))


def load_catalog(files: list[Path], models_dir: Path) -> dict[str, ModelSpec]:
    """Read catalog files in order; relative `path` values resolve against `models_dir`."""
    catalog: dict[str, ModelSpec] = {}
    for file in files:
        data = read_catalog_file(file)
        for model_id, entry in (data.get("models") or {}).items():
            if not isinstance(entry, dict):
                raise CatalogError(f"{file}: [models.{model_id}] must be a table")
            entry = {"id": model_id, "name": model_id, **entry}
            if entry.get("path") is not None and not Path(entry["path"]).is_absolute():
                entry["path"] = str((models_dir / entry["path"]).resolve())
            for control, weights in (entry.get("controlnet_models") or {}).items():
                if isinstance(weights, dict) and weights.get("path") and not Path(weights["path"]).is_absolute():
                    absolute = str((models_dir / weights["path"]).resolve())
                    entry["controlnet_models"][control] = {**weights, "path": absolute}
            adapter = entry.get("motion_adapter")
            if isinstance(adapter, dict) and adapter.get("path") and not Path(adapter["path"]).is_absolute():
                entry["motion_adapter"] = {**adapter, "path": str((models_dir / adapter["path"]).resolve())}
            accelerator = entry.get("accelerator")
            if isinstance(accelerator, dict) and accelerator.get("lora") \
                    and not Path(accelerator["lora"]).is_absolute():
                entry["accelerator"] = {**accelerator, "lora": str((models_dir / accelerator["lora"]).resolve())}
            try:
                catalog[model_id] = ModelSpec(**entry)
            except ValidationError as exc:
                raise CatalogError(f"{file}: model {model_id!r} is invalid: "
                                   f"{validation_problems(exc.errors())}") from exc
    return catalog
