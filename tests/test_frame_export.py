"""`hotshot frame`: a frame of a source as PNG or EXR, named like image sequences, reused as a style frame."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from daemon.cli.estimate import estimate_request
from engine.catalog import load_catalog
from engine.decode import read_frames
from engine.render import render
from engine.sequence import read_exr, srgb_to_linear
from engine.stills import StillSpec
from tests.conftest import CATALOG, PROJECT
from tests.harness import settings_for, write_request
from tests.helpers import make_clip, make_job


def frame(source, number, width=160, height=96):
    return next(iter(read_frames(source, number, number, width, height)))


def hotshot(*args):
    return subprocess.run([sys.executable, "-m", "daemon.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT, timeout=60)


def test_frame_writes_the_decoded_frame_named_like_a_sequence(tmp_path):
    """`hotshot frame plate.mp4 10` writes plate.1011.png beside the clip (frame 10 + first_frame_number 1001),
    pixel for pixel the decoded frame 10 (not frame 9 or 11); `--exr` writes the same frame as linear light
    into a folder it makes; `-o still.png` names the file."""
    source = make_clip(tmp_path / "plate.mp4", 24)
    done = hotshot("frame", source, 10, "--state", tmp_path / "state")
    assert done.returncode == 0, done.stderr
    written = tmp_path / "plate.1011.png"
    assert done.stdout.strip() == str(written)
    png = cv2.cvtColor(cv2.imread(str(written)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(png, frame(source, 10))
    assert not np.array_equal(png, frame(source, 9)) and not np.array_equal(png, frame(source, 11))
    done = hotshot("frame", source, 3, "--exr", "-o", tmp_path / "edit", "--state", tmp_path / "state")
    assert done.returncode == 0, done.stderr
    linear = read_exr(tmp_path / "edit" / "plate.1004.exr")
    assert np.abs(linear - srgb_to_linear(frame(source, 3))).max() < 2e-3
    assert hotshot("frame", source, 3, "-o", tmp_path / "still.png", "--state", tmp_path / "state").returncode == 0
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(tmp_path / "still.png")), cv2.COLOR_BGR2RGB), frame(source, 3))
    refused = hotshot("frame", source, 3, "--exr", "-o", tmp_path / "still.png", "--state", tmp_path / "state")
    assert refused.returncode == 2 and "is not a .exr file name" in refused.stderr


def test_frame_outside_the_clip_is_refused(tmp_path):
    """A frame number past the end fails naming the clip's frames, and writes nothing."""
    source = make_clip(tmp_path / "plate.mp4", 12)
    done = hotshot("frame", source, 12, "--state", tmp_path / "state")
    assert done.returncode == 2 and "valid frames are 0 to 11" in done.stderr
    assert not list(tmp_path.glob("*.png"))


def test_an_exported_frame_is_taken_as_a_style_frame(tmp_path, models_dir):
    """The exported PNG, named in a request's style_frame, is accepted as the daemon would, and a render pins
    it as its first frame, pixel for pixel."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    source = make_clip(shot / "plate.mp4", 24)
    assert hotshot("frame", source, 20, "--state", settings.state_dir).returncode == 0
    request = write_request(shot / "r.render.json", model="passthrough", frame_range=[0, 7],
                            style_frame="plate.1021.png")
    resolved = estimate_request(settings, request)
    assert resolved["state"] == "queued", resolved
    assert resolved["settings"]["style_frame"] == {"value": {"path": "plate.1021.png"}, "from": "request"}
    passthrough = load_catalog([CATALOG], models_dir)["passthrough"]
    job = make_job(shot, passthrough, source, "plate_r001", frame_range=(0, 7), output_size=160, steps=1,
                   style_frame=StillSpec(path=shot / "plate.1021.png"), image_sequence="png")
    render(job)
    first = cv2.cvtColor(cv2.imread(str(shot / "plate_r001" / "plate_r001.1001.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(first, frame(source, 20)) and not np.array_equal(first, frame(source, 0))
