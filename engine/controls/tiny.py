"""Tiny control models, built offline for tests and the demo.

Each is a real transformers model of the real architecture (Depth Anything,
RT-DETR, VitPose) with a few thousand parameters, saved with `save_pretrained`
beside its image processor, so it loads with `from_pretrained` exactly like
real weights. Depth is random: its output is meaningless but has the right
shape. The person detector is fitted at build time to the two people of
tests/data/chaplin.mp4 and VitPose to draw a standing figure in each box
(`engine.controls.tiny_fit`), so that tests see people there and nobody in
colour bars.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.controls.catalog import ControlCatalog, TransformersWeights
from engine.controls.tiny_fit import fit_person_detector, fit_pose_model
from engine.weights import build_atomically

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def make_tiny_controls(catalog: ControlCatalog, force: bool = False) -> list[Path]:
    """Build every tiny model of the catalog's `[controls]` table that is not there yet; return their folders."""
    built = []
    for role in BUILDERS:
        spec = getattr(catalog, role)
        if spec is not None and spec.tiny:
            built.append(make_tiny_control(role, spec, force))
    return built


def make_tiny_control(role: str, spec: TransformersWeights, force: bool = False) -> Path:
    """Build one tiny control model into its folder, atomically (staging folder, then rename)."""
    if not spec.tiny or spec.path is None:
        raise ValueError(f"[controls] {role} is not a tiny model; only entries marked `tiny = true` can be built")
    return build_atomically(Path(spec.path), spec.weights_present, BUILDERS[role], force)


def _build_depth(folder: Path) -> None:
    """Depth Anything with a four-layer DINOv2 backbone on 56-pixel images."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessorPil

    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=32, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=16,
                                 neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8, head_hidden_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DepthAnythingForDepthEstimation(config).eval()
    model.save_pretrained(folder)
    # Depth Anything V2's processor settings, at a tiny size.
    DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                         image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(folder)


def _build_person_detector(folder: Path) -> None:
    """RT-DETR with a four-stage basic ResNet, ten queries and "person" as label 0 (as in COCO), fitted to find
    the two people of the bundled Chaplin clip (`engine.controls.tiny_fit`)."""
    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessorPil, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                  layer_type="basic", out_features=["stage2", "stage3", "stage4"])
    config = RTDetrConfig(
        backbone_config=backbone, encoder_hidden_dim=16, encoder_in_channels=[16, 16, 32], encoder_ffn_dim=16,
        encoder_attention_heads=2, d_model=16, num_queries=10, decoder_in_channels=[16, 16, 16], decoder_ffn_dim=16,
        decoder_layers=1, decoder_attention_heads=2, num_denoising=0,
        id2label={0: "person", 1: "bicycle"}, label2id={"person": 0, "bicycle": 1},
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = RTDetrForObjectDetection(config).eval()
    processor = RTDetrImageProcessorPil(size={"height": 64, "width": 64})
    # Random weights find nobody; fitted to the bundled clip, tests can see people there and none in bars.
    fit_person_detector(model, processor)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _build_pose(folder: Path) -> None:
    """VitPose (simple decoder) with a two-layer ViT on 64x48 person crops and COCO's 17 keypoints, fitted to
    draw one standing figure in every person box (`engine.controls.tiny_fit`)."""
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessorPil

    backbone = VitPoseBackboneConfig(image_size=[64, 48], patch_size=[8, 8], hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, mlp_ratio=2, out_indices=[2])
    config = VitPoseConfig(backbone_config=backbone, scale_factor=4, use_simple_decoder=True, num_labels=17)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = VitPoseForPoseEstimation(config).eval()
    processor = VitPoseImageProcessorPil(size={"height": 64, "width": 48})
    fit_pose_model(model, (48, 64), processor.image_mean, processor.image_std)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "depth": _build_depth,
    "pose_detector": _build_person_detector,
    "pose": _build_pose,
}
