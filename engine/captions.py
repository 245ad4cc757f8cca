"""The captioning model of Auto Prompt: Florence-2 through transformers, named by the catalog's `[captioner]`.

It describes a few frames sampled across the shot and the style or reference
image; `engine.prompt_writing` turns the captions into a prompt. Reading the
captioner's catalog entry never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.devices import device_kind
from engine.errors import WeightsMissingError, validation_problems
from engine.prompt_writing import clean_caption
from engine.weights import (
    CatalogError,
    TransformersFolder,
    build_atomically,
    read_catalog_file,
)

log = structlog.get_logger("hotshot.captions")

class CaptionerSpec(TransformersFolder, BaseModel):
    """The catalog's `[captioner]` table, with its weights location made absolute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str = ""
    family: Literal["florence2"] = "florence2"
    path: str | None = Field(default=None, description="local folder of transformers weights")
    hub: str | None = Field(default=None, description="hub repository id, fetched on first use")
    revision: str | None = None
    tiny: bool = Field(default=False, description="a random-initialised test model hotshot may build itself")
    task: Literal["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"] = "<MORE_DETAILED_CAPTION>"
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
    num_beams: int = Field(default=1, ge=1, le=8)
    batch_size: int = Field(default=8, ge=1, le=256)
    dtype: dict[str, str] = Field(default_factory=lambda: {"cpu": "float32", "cuda": "float16"})

    @model_validator(mode="after")
    def _one_weights_location(self) -> CaptionerSpec:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` (a local folder) or `hub` (a hub repository id)")
        if self.tiny and not self.id.startswith("tiny-"):
            raise ValueError("only captioners whose id starts with 'tiny-' may be marked tiny")
        return self


def load_captioner_spec(files: list[Path], models_dir: Path, required: bool = True) -> CaptionerSpec | None:
    """The `[captioner]` table of the last catalog file that has one; a relative `path` starts in `models_dir`.
    With none: an error, or None when not `required`."""
    found: tuple[Path, dict] | None = None
    for file in files:
        data = read_catalog_file(file)
        if "captioner" in data:
            if not isinstance(data["captioner"], dict):
                raise CatalogError(f"{file}: [captioner] must be a table")
            found = (file, dict(data["captioner"]))
    if found is None:
        if not required:
            return None
        names = ", ".join(str(file) for file in files) or "no files"
        raise CatalogError(f"no [captioner] table in the model catalog ({names}); add one as in config/models.toml")
    file, entry = found
    if entry.get("path") is not None and not Path(entry["path"]).is_absolute():
        entry["path"] = str((models_dir / entry["path"]).resolve())
    try:
        return CaptionerSpec(**entry)
    except ValidationError as exc:
        raise CatalogError(f"{file}: [captioner] is invalid: {validation_problems(exc.errors())}") from exc


def make_tiny_captioner(spec: CaptionerSpec, force: bool = False) -> Path:
    """Build the tiny random captioner (model, processor, tokenizer) into `spec.path`, atomically."""
    if not spec.tiny or spec.path is None:
        raise ValueError(f"captioner {spec.id!r} is not a tiny model; only tiny-* captioners can be built")
    return build_atomically(Path(spec.path), spec.weights_present, _build_tiny_florence2, force)


def _build_tiny_florence2(folder: Path) -> None:
    """A two-layer Florence-2 with a one-stage vision tower on 32x32 images, seeded (transformers' test recipe)."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    from engine.tiny_text import WORDS, tiny_bart_tokenizer

    side, stride = 32, 4
    tokenizer = tiny_bart_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"height": side, "width": side}, do_center_crop=False)
    # One token per patch plus Florence-2's pooled token.
    image_processor.image_seq_length = (side // stride) ** 2 + 1
    config = Florence2Config(
        text_config={
            "model_type": "bart", "vocab_size": len(tokenizer), "d_model": 16, "max_position_embeddings": 256,
            "encoder_layers": 1, "decoder_layers": 1, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2,
            "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
        },
        vision_config={
            "depths": [1], "patch_size": [7], "patch_stride": [stride], "patch_padding": [3],
            "patch_prenorm": [False], "embed_dim": [16], "num_heads": [1], "num_groups": [1], "window_size": 4,
            "drop_path_rate": 0.0, "projection_dim": 16,
        },
        image_token_id=tokenizer.image_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Florence2ForConditionalGeneration(config).eval()
    # A random model mostly says nothing or byte soup; let it say only whole words of the list, at least four.
    words = {tokenizer.convert_tokens_to_ids("\u0120" + word) for word in WORDS}
    model.generation_config.suppress_tokens = [i for i in range(len(tokenizer)) if i not in words and i != 2]
    model.generation_config.min_new_tokens = 4
    model.save_pretrained(folder)
    Florence2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


class Captioner:
    """A captioning model and its processor on one device, loaded once and used for many images."""

    def __init__(self, spec: CaptionerSpec, model: Any, processor: Any, device: str, dtype: Any) -> None:
        self.spec = spec
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(cls, spec: CaptionerSpec, device: str = "cpu") -> Captioner:
        """Load the captioner (building the tiny one if it is missing); refuse other missing weights clearly."""
        import torch
        from transformers import Florence2ForConditionalGeneration, Florence2Processor

        if spec.path is not None and not spec.weights_present():
            if not spec.tiny:
                raise WeightsMissingError(spec.id, spec.path, "download or copy the captioner's weights there, "
                                          "or change `path` in the [captioner] table of the model catalog")
            make_tiny_captioner(spec)
        location = spec.path if spec.path is not None else str(spec.hub)
        dtype = getattr(torch, spec.dtype.get(device_kind(device), "float32"))
        try:
            processor = Florence2Processor.from_pretrained(location, revision=spec.revision)
            model = Florence2ForConditionalGeneration.from_pretrained(location, revision=spec.revision, dtype=dtype)
        except OSError as exc:
            hint = "check the hub id, or that this machine can reach the hub" if spec.hub else "check the folder"
            raise WeightsMissingError(spec.id, spec.weights, f"{hint} ({exc})") from exc
        log.info("captioner loaded", captioner=spec.id, device=device)
        return cls(spec, model.to(device).eval(), processor, device, dtype)

    def describe(self, images: list[np.ndarray]) -> list[str]:
        """One cleaned caption per HxWx3 uint8 RGB image, in order; greedy (or beam) decoding, so repeatable."""
        import torch
        from PIL import Image

        captions: list[str] = []
        size = self.spec.batch_size
        for start in range(0, len(images), size):
            batch = [Image.fromarray(np.ascontiguousarray(image)) for image in images[start:start + size]]
            inputs = self.processor(images=batch, text=[self.spec.task] * len(batch), return_tensors="pt",
                                    padding=True)
            inputs = inputs.to(device=self.device, dtype=self.dtype)
            with torch.inference_mode():
                generated = self.model.generate(**inputs, max_new_tokens=self.spec.max_new_tokens, do_sample=False,
                                                num_beams=self.spec.num_beams)
            texts = self.processor.batch_decode(generated, skip_special_tokens=True)
            captions += [clean_caption(text) for text in texts]
        return captions
