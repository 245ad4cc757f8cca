"""Workspace settings through the daemon: presets, low-step, stills, sequences, estimates, calibration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from daemon.store import Store
from tests.conftest import PROJECT
from tests.harness import drain, settings_for, status_of, write_request

SMALL = {"output_size": 64, "frame_range": [0, 8], "seed": 3}


@pytest.fixture(scope="module")
def run(tmp_path_factory, media, models_dir, tiny_spec):
    tmp = tmp_path_factory.mktemp("settings")
    settings = settings_for(tmp, models_dir, source_wait_seconds=1.5)
    root = settings.roots[0]

    def shot(name):
        folder = root / name
        folder.mkdir(parents=True)
        shutil.copyfile(media / "bars-timecode.mp4", folder / "plate.mp4")
        return folder

    write_request(shot("preset") / "r.render.json", preset="style-transfer", model="tiny-wan-vace", steps=1,
                  context={"overlap": 5}, **SMALL)
    write_request(shot("inpainting") / "r.render.json", preset="inpainting", **SMALL)
    write_request(shot("no-preset") / "r.render.json", preset="anime", **SMALL)
    write_request(shot("low-step") / "r.render.json", low_step=True, **SMALL)
    style = shot("style")
    cv2.imwrite(str(style / "look.png"), np.full((90, 120, 3), (30, 200, 90), np.uint8))
    write_request(style / "r.render.json", style_frame="look.png", reference_frame="look.png",
                  image_sequence="exr", steps=1, **SMALL)
    write_request(shot("missing-style") / "r.render.json", style_frame="later.png", steps=1, **SMALL)
    write_request(shot("bad-keyframe") / "r.render.json", style_frame={"keyframe": 80}, **SMALL)
    write_request(shot("not-image") / "r.render.json", reference_frame="plate.mp4", **SMALL)
    write_request(shot("too-much-buffer") / "r.render.json", context={"size": 9, "overlap": 1,
                                                                      "start_frame_buffer": 9}, **SMALL)
    drain(settings)
    return settings, root


def manifest_of(folder, name="plate_r001"):
    return json.loads((folder / f"{name}.render-info.json").read_text())


def test_preset_values_apply_under_the_request(run):
    """The preset sets the baseline; the request overrides; the Render Info says where each value came from."""
    _, root = run
    assert status_of(root / "preset" / "r.render.json")["state"] == "done"
    settings = manifest_of(root / "preset")["settings"]
    assert settings["preset"] == {"value": "style-transfer", "from": "request"}
    assert settings["model"] == {"value": "tiny-wan-vace", "from": "request"}
    assert settings["color_consistency"] == {"value": 0.3, "from": "preset"}
    assert settings["cfg"] == {"value": 5.0, "from": "preset"}
    assert settings["steps"] == {"value": 1, "from": "request"}
    assert settings["context.size"] == {"value": 81, "from": "preset"}
    assert settings["context.overlap"] == {"value": 5, "from": "request"}
    assert settings["shift"] == {"value": 3.0, "from": "model"}


def test_incomplete_and_unknown_presets_are_refused(run):
    _, root = run
    inpainting = status_of(root / "inpainting" / "r.render.json")
    assert inpainting["state"] == "failed" and "preset 'inpainting' needs mask in the request" in inpainting["error"]
    unknown = status_of(root / "no-preset" / "r.render.json")
    assert "unknown preset 'anime'; the presets are: inpainting, style-transfer" in unknown["error"]


def test_low_step_uses_the_accelerator_profile(run, tiny_spec):
    _, root = run
    assert status_of(root / "low-step" / "r.render.json")["state"] == "done"
    manifest = manifest_of(root / "low-step")
    assert manifest["settings"]["steps"] == {"value": 2, "from": "accelerator"}
    assert manifest["settings"]["cfg"] == {"value": 1.0, "from": "accelerator"}
    assert manifest["accelerator"] == {"lora": tiny_spec.accelerator.lora, "scale": 1.0}


def test_style_frame_reference_and_exr_sequence_through_the_daemon(run):
    _, root = run
    folder = root / "style"
    status = status_of(folder / "r.render.json")
    assert status["state"] == "done", status
    assert status["outputs"]["image_sequence"] == "plate_r001/ (9 exr frames)"
    files = sorted(path.name for path in (folder / "plate_r001").iterdir())
    assert files[0] == "plate_r001.1001.exr" and files[-1] == "plate_r001.1009.exr"
    manifest = manifest_of(folder)
    assert manifest["style_frame"]["from"] == "look.png" and manifest["reference_frame"]["from"] == "look.png"
    assert manifest["settings"]["style_frame"] == {"value": {"path": "look.png"}, "from": "request"}
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize("case,message", [
    ("missing-style", "waiting for style_frame later.png to appear in the shot"),
    ("bad-keyframe", "style_frame keyframe 80 is outside the source, which has 50 frames"),
    ("not-image", "reference_frame 'plate.mp4' is not an image"),
    ("too-much-buffer", "context.start_frame_buffer 9 is too large"),
])
def test_bad_stills_and_settings_fail_clearly(run, case, message):
    _, root = run
    status = status_of(root / case / "r.render.json")
    assert status["state"] == "failed" and message in status["error"], status


def test_estimates_are_fitted_from_measured_renders(run):
    """After renders, what each did and how long each part took is recorded, and the next estimate of that
    model is fitted from those renders."""
    settings, root = run
    store = Store.open(settings.database, read_only=True)
    history = store.cost_history("tiny-wan-vace", "cpu")
    store.close()
    assert history and all(sample["seconds"]["diffusion"] > 0 and sample["work"]["megapixel_frame_steps"] > 0
                           for sample in history)
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "estimate", "--json", "--state",
                           str(settings.state_dir), str(root / "preset" / "r.render.json")],
                          capture_output=True, text=True, cwd=PROJECT, timeout=60)
    estimate = json.loads(done.stdout)["estimate"]
    assert estimate["samples"] == len(history) and "diffusion" in estimate["fitted"]
    assert estimate["seconds_low"] <= estimate["seconds"] <= estimate["seconds_high"]


def test_estimate_prints_without_queuing(tmp_path, media):
    """`hotshot estimate` resolves a request like the daemon and prints frames, chunks and cost; no job is made."""
    shot = tmp_path / "sh010"
    shot.mkdir()
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    request = write_request(shot / "r.render.json", frame_range=[0, 99], output_size=256, steps=4,
                            context={"size": 33, "overlap": 9}, interpolation=True)
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "estimate", "--state", str(tmp_path / "state"),
                           str(request)], capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "plate.mp4 frames 0-99 (100 frames) with tiny-wan-vace" in done.stdout
    assert "GPU-seconds on cpu" in done.stdout and "credits" in done.stdout
    assert not (tmp_path / "state").exists() and status_of(request) is None


def test_presets_command_lists_presets():
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "presets"], capture_output=True, text=True,
                          cwd=PROJECT, timeout=60)
    assert done.returncode == 0
    assert "style-transfer" in done.stdout and "inpainting\n" in done.stdout and "mask_feather = 8" in done.stdout
