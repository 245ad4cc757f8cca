"""Control preprocessors: depth, pose, soft edge, depth+pose and normal control videos, cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.catalog import CatalogError
from engine.controls import (
    ControlCatalog,
    ControlVideo,
    SoftEdgeWeights,
    count_people,
    load_control_catalog,
    make_tiny_controls,
    normal_image,
)
from engine.controls.depth import DepthEstimator
from engine.controls.pose import PersonDetector, PoseEstimator
from engine.decode import read_frames
from engine.errors import FrameRangeError, SettingsError, WeightsMissingError
from engine.probe import probe
from tests.conftest import CATALOG, PROJECT

TYPES = ("depth", "pose", "softedge", "depth+pose", "normal")


@pytest.fixture(scope="module")
def catalog(models_dir) -> ControlCatalog:
    """The shipped catalog's `[controls]` table, its tiny models built with `make_tiny_controls`."""
    catalog = load_control_catalog([CATALOG], models_dir)
    make_tiny_controls(catalog)
    return catalog


@pytest.fixture(scope="module")
def chaplin(media) -> Path:
    return media / "chaplin.mp4"


def with_thresholds(catalog: ControlCatalog, detection: float, keypoint: float = 0.0) -> ControlCatalog:
    """The catalog with other thresholds: 0 takes every query of the detector as a person, above 1 finds nobody."""
    return catalog.model_copy(update={
        "pose_detector": catalog.pose_detector.model_copy(update={"threshold": detection}),
        "pose": catalog.pose.model_copy(update={"threshold": keypoint}),
    })


def is_black(frame: np.ndarray) -> np.ndarray:
    return ~frame.any(axis=2)


def is_coloured(frame: np.ndarray) -> np.ndarray:
    """Pixels that are neither black nor grey."""
    channels = frame.astype(int)
    return (channels.max(axis=2) - channels.min(axis=2)) > 40


@pytest.mark.parametrize("control_type", TYPES)
def test_every_type_gives_one_frame_per_requested_source_frame(control_type, catalog, chaplin, tmp_path_factory):
    """Each control type returns exactly one HxWx3 uint8 frame per requested frame, at the output size."""
    cache_root = tmp_path_factory.getbasetemp() / "shared-control-cache"
    video = ControlVideo(control_type, catalog, chaplin, 64, 32, cache_root)
    frames = video.frames(range(20, 28))
    assert len(frames) == 8
    assert all(frame.shape == (32, 64, 3) and frame.dtype == np.uint8 for frame in frames)
    assert video.method["type"] == control_type
    repeated = video.frames([21, 21, 22])
    assert all(np.array_equal(a, b) for a, b in zip(repeated, [frames[1], frames[1], frames[2]], strict=True))


def test_depth_is_normalised_once_per_clip(catalog, chaplin, tmp_path):
    """A frame's depth image does not depend on the range requested; near/far come from the whole clip."""
    in_range = ControlVideo("depth", catalog, chaplin, 64, 32, tmp_path / "a")
    alone = ControlVideo("depth", catalog, chaplin, 64, 32, tmp_path / "b")
    frames = in_range.frames(range(40, 48))
    single = alone.frames([44])[0]
    # Batches of different sizes may differ in the last bits of a float; that moves a pixel by one level at most.
    assert np.abs(frames[4].astype(int) - single.astype(int)).max() <= 1

    metas = [json.loads((root / video.cache_key / "meta.json").read_text())
             for root, video in ((tmp_path / "a", in_range), (tmp_path / "b", alone))]
    assert metas[0]["normalisation"] == metas[1]["normalisation"]
    clip_range = metas[0]["normalisation"]
    assert clip_range["near"] > clip_range["far"]
    assert clip_range["percentiles"] == [2.0, 98.0]
    assert clip_range["sampled_frames"][0] == 0 and clip_range["sampled_frames"][-1] == 240
    assert len(clip_range["sampled_frames"]) == 32
    assert in_range.method["normalisation"] == clip_range

    sampled = np.stack(in_range.frames(clip_range["sampled_frames"]))
    assert sampled.min() == 0 and sampled.max() == 255
    assert (sampled[..., 0] == sampled[..., 1]).all() and (sampled[..., 1] == sampled[..., 2]).all()


def test_pose_draws_coloured_skeletons_on_black_only_where_people_are_found(catalog, chaplin, tmp_path):
    """With detections the frames are black with coloured skeletons; with none they are entirely black."""
    found = ControlVideo("pose", with_thresholds(catalog, 0.0), chaplin, 128, 64, tmp_path).frames(range(0, 4))
    for frame in found:
        assert is_coloured(frame).any()
        assert is_black(frame).mean() > 0.5
    nobody = ControlVideo("pose", with_thresholds(catalog, 2.0), chaplin, 128, 64, tmp_path).frames(range(0, 4))
    assert all(not frame.any() for frame in nobody)


def test_count_people_counts_per_frame_with_the_detector_threshold(catalog, chaplin):
    """`count_people` gives one count per frame: some people at threshold 0, nobody above 1."""
    frames = list(read_frames(chaplin, 0, 2, 128, 64))
    assert all(count > 0 for count in count_people(frames, with_thresholds(catalog, 0.0)))
    assert count_people(frames, with_thresholds(catalog, 2.0)) == [0, 0, 0]
    assert count_people(frames, catalog, threshold=2.0) == [0, 0, 0]


def test_softedge_without_a_model_is_bright_at_bar_boundaries_and_dark_inside(catalog, media, tmp_path):
    """The weight-free soft edge is named "opencv-softedge"; colour-bar boundaries are bright, bar middles dark."""
    bars = media / "bars-timecode.mp4"
    video = ControlVideo("softedge", catalog, bars, 256, 192, tmp_path)
    assert video.method == {"type": "softedge", "method": "opencv-softedge"}
    edges = video.frames([10])[0][..., 0].astype(int)
    source = next(iter(read_frames(bars, 10, 10, 256, 192))).astype(int)
    for row in (8, 136):  # above the caption and between the clocks and the grey strip: bars only
        jumps = np.nonzero(np.abs(np.diff(source[row], axis=0)).sum(axis=1) > 60)[0]
        boundaries = [int(group.mean()) for group in np.split(jumps, np.nonzero(np.diff(jumps) > 2)[0] + 1)]
        assert len(boundaries) >= 6
        for boundary in boundaries:
            assert edges[row, boundary - 1:boundary + 3].max() > 128
        for left, right in zip(boundaries, boundaries[1:], strict=False):
            assert edges[row, (left + right) // 2] < 40


def test_softedge_with_an_onnx_model_runs_it_and_names_the_file(catalog, chaplin, tmp_path):
    """A configured ONNX edge network runs through OpenCV, fed as configured, and the method names its file."""
    pytest.importorskip("onnx", reason="exporting the test network needs the onnx package (pip install onnx)")
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1),
                              torch.nn.Sigmoid()).eval()
    model = tmp_path / "edges.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 64),), str(model), dynamo=False, input_names=["image"],
                      output_names=["edges"], dynamic_axes={"image": {2: "h", 3: "w"}, "edges": {2: "h", 3: "w"}})
    spec = SoftEdgeWeights(path=str(model), channels="rgb", mean=(127.5, 127.5, 127.5), scale=1 / 127.5)
    video = ControlVideo("softedge", catalog.model_copy(update={"softedge": spec}), chaplin, 64, 32, tmp_path)
    assert video.method["method"] == "edges.onnx"
    frame = video.frames([30])[0]

    source = next(iter(read_frames(chaplin, 30, 30, 64, 32)))
    with torch.no_grad():
        expected = net(torch.from_numpy((source.astype(np.float32) - 127.5) / 127.5).permute(2, 0, 1)[None])
    expected = np.rint(expected[0, 0].numpy() * 255)
    assert frame.shape == (32, 64, 3)
    assert np.abs(frame[..., 0].astype(int) - expected).max() <= 1


def test_normal_map_is_rgb_and_flat_depth_faces_the_camera(catalog, chaplin, tmp_path):
    """Flat depth maps to (128, 128, 255); a surface nearer on the right turns left (red up); normals face us."""
    flat = normal_image(np.full((32, 64), 0.5, np.float32))
    assert flat.shape == (32, 64, 3) and (flat == [128, 128, 255]).all()
    ramp = normal_image(np.tile(np.linspace(0, 1, 64, dtype=np.float32), (32, 1)))
    assert (ramp[8:24, 8:56, 0] > 140).all() and (ramp[8:24, 8:56, 1] == 128).all()

    frames = ControlVideo("normal", catalog, chaplin, 64, 32, tmp_path).frames(range(50, 53))
    assert all(frame.shape == (32, 64, 3) and (frame[..., 2] >= 128).all() for frame in frames)


def test_depth_plus_pose_offers_both_parts_and_draws_pose_over_depth(catalog, chaplin, tmp_path):
    """`parts()` gives the depth and pose videos; the composite is the skeleton drawn over the depth picture."""
    forced = with_thresholds(catalog, 0.0)
    combined = ControlVideo("depth+pose", forced, chaplin, 128, 64, tmp_path)
    parts = combined.parts(range(60, 63))
    assert set(parts) == {"depth", "pose"}
    assert np.array_equal(parts["depth"][0], ControlVideo("depth", forced, chaplin, 128, 64, tmp_path).frames([60])[0])
    composite = combined.frames(range(60, 63))
    for depth, pose, both in zip(parts["depth"], parts["pose"], composite, strict=True):
        drawn = pose.any(axis=2)
        assert drawn.any() and not drawn.all()
        assert np.array_equal(both[drawn], pose[drawn])
        assert np.array_equal(both[~drawn], depth[~drawn])
    assert set(combined.method["parts"]) == {"depth", "pose"}


def test_a_second_control_video_reuses_the_cache_without_running_a_model(catalog, chaplin, tmp_path, monkeypatch):
    """A re-render of the same source, type and size reads the cached frames; no model is loaded or run."""
    forced = with_thresholds(catalog, 0.0)
    first = {kind: ControlVideo(kind, forced, chaplin, 64, 32, tmp_path).frames(range(70, 74))
             for kind in ("depth", "pose", "normal")}

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although the frames are cached")

    for model in (DepthEstimator, PersonDetector, PoseEstimator):
        monkeypatch.setattr(model, "__init__", refuse)
    for kind, frames in first.items():
        again = ControlVideo(kind, forced, chaplin, 64, 32, tmp_path).frames(range(70, 74))
        assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))


def test_another_process_reads_the_cache_without_importing_torch(catalog, chaplin, models_dir, tmp_path):
    """A second process (a second worker) gets the same frames from the cache and never imports torch."""
    frames = ControlVideo("depth", catalog, chaplin, 64, 32, tmp_path).frames(range(80, 84))
    script = (
        "import hashlib, json, sys\n"
        "from pathlib import Path\n"
        "from engine.controls import ControlVideo, load_control_catalog\n"
        f"catalog = load_control_catalog([Path({str(CATALOG)!r})], Path({str(models_dir)!r}))\n"
        f"video = ControlVideo('depth', catalog, Path({str(chaplin)!r}), 64, 32, Path({str(tmp_path)!r}))\n"
        "frames = video.frames(range(80, 84))\n"
        "digest = hashlib.sha256(b''.join(frame.tobytes() for frame in frames)).hexdigest()\n"
        "print(json.dumps({'digest': digest, 'torch': 'torch' in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=60,
                            check=True)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer == {"digest": hashlib.sha256(b"".join(f.tobytes() for f in frames)).hexdigest(), "torch": False}


def test_cache_key_follows_source_type_size_and_models(catalog, media, tmp_path):
    """The cache key is stable, and changes with the output size, the type, the source file and the thresholds."""
    source = tmp_path / "plate.mp4"
    source.write_bytes((media / "chaplin.mp4").read_bytes())

    def key(kind="depth", width=64, height=32, cat=catalog):
        return ControlVideo(kind, cat, source, width, height, tmp_path / "cache").cache_key

    assert key() == key()
    assert key().startswith("depth-64x32-")
    assert len({key(), key(width=128, height=64), key(kind="normal"), key(kind="softedge")}) == 4
    assert key("pose") != key("pose", cat=with_thresholds(catalog, 0.9))
    before = key()
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 1_000_000_000))
    assert key() != before


def test_preview_is_an_mp4_with_one_frame_per_control_frame(catalog, chaplin, tmp_path):
    """`write_preview` writes an H.264 MP4 that ffprobe reads with the requested frame count and size."""
    video = ControlVideo("softedge", catalog, chaplin, 64, 32, tmp_path / "cache")
    path = video.write_preview(range(100, 110), "25", tmp_path / "softedge-preview.mp4")
    info = probe(path)
    assert (info.frame_count, info.width, info.height, info.codec) == (10, 64, 32, "h264")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_frames_outside_the_clip_are_refused(catalog, chaplin, tmp_path):
    """Asking for a frame past the clip's end raises a FrameRangeError naming the clip's length."""
    with pytest.raises(FrameRangeError, match="241 frames"):
        ControlVideo("softedge", catalog, chaplin, 64, 32, tmp_path).frames([239, 240, 241])
    with pytest.raises(ValueError, match="non-decreasing"):
        ControlVideo("softedge", catalog, chaplin, 64, 32, tmp_path).frames([5, 4])


def test_missing_models_and_unknown_types_are_explained(catalog, chaplin, tmp_path):
    """A type without its catalog entries, an unknown type and absent real weights each say what to do."""
    with pytest.raises(SettingsError, match="pose_detector, pose in the \\[controls\\] table"):
        ControlVideo("pose", ControlCatalog(), chaplin, 64, 32, tmp_path)
    with pytest.raises(SettingsError, match="unknown control type 'canny'"):
        ControlVideo("canny", catalog, chaplin, 64, 32, tmp_path)
    absent = catalog.model_copy(update={"depth": catalog.depth.model_copy(
        update={"path": str(tmp_path / "no-such-depth-model"), "tiny": False})})
    with pytest.raises(WeightsMissingError, match="no-such-depth-model"):
        ControlVideo("depth", absent, chaplin, 64, 32, tmp_path).frames([0])
    assert ControlVideo("softedge", ControlCatalog(), chaplin, 64, 32, tmp_path).frames([0])[0].shape == (32, 64, 3)


def test_controls_table_resolves_paths_and_a_later_file_replaces_a_key(tmp_path):
    """Relative paths start in models_dir; a key in a later catalog file replaces the earlier one."""
    shipped = tmp_path / "models.toml"
    shipped.write_text('[models.x]\nbackend = "passthrough"\nname = "x"\n\n[controls]\n'
                       'depth = { path = "controls/depth", tiny = true }\n'
                       'pose_detector = { path = "controls/detector", threshold = 0.4 }\n'
                       'pose = { hub = "usyd-community/vitpose-base-simple" }\n')
    mine = tmp_path / "mine.toml"
    mine.write_text('[controls]\ndepth = { hub = "depth-anything/Depth-Anything-V2-Small-hf", revision = "abc" }\n'
                    'softedge = { path = "/weights/hed.onnx" }\n')
    catalog = load_control_catalog([shipped], tmp_path / "models")
    assert catalog.depth.path == str((tmp_path / "models" / "controls" / "depth").resolve())
    assert catalog.pose_detector.threshold == 0.4 and catalog.pose.threshold == 0.3
    assert catalog.softedge is None
    both = load_control_catalog([shipped, mine], tmp_path / "models")
    assert both.depth.weights == "depth-anything/Depth-Anything-V2-Small-hf@abc"
    assert both.pose_detector == catalog.pose_detector
    assert both.softedge.path == "/weights/hed.onnx" and both.softedge.channels == "bgr"


@pytest.mark.parametrize("table,message", [
    ('canny = { path = "x" }', "unknown key 'canny'"),
    ('depth = "x"', "depth must be a table"),
    ('depth = { path = "x", hub = "y" }', "depth is invalid: entry: Value error, give exactly one of `path`"),
    ('depth = { hub = "y", tiny = true }', "give `path`, not `hub`"),
    ('pose = { path = "x", threshold = -1 }', "pose is invalid: threshold"),
    ('softedge = { path = "hed.caffemodel" }', "must name an .onnx file"),
    ('softedge = { path = "hed.onnx", channels = "yuv" }', "softedge is invalid: channels"),
    ('depth = { path = "x", colour = 1 }', "colour: Extra inputs are not permitted"),
])
def test_bad_controls_entries_are_explained_naming_the_file_and_key(table, message, tmp_path):
    """A bad `[controls]` entry raises a CatalogError naming the file, the key and what is wrong."""
    file = tmp_path / "bad.toml"
    file.write_text(f"[controls]\n{table}\n")
    with pytest.raises(CatalogError) as error:
        load_control_catalog([file], tmp_path)
    assert str(file) in str(error.value) and message in str(error.value)
