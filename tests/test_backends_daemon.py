"""The three diffusers backends render the example clips through the daemon with their tiny models."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.probe import probe
from tests.harness import drain, settings_for, status_of, write_request

CASES = {
    "vace": ("tiny-wan-vace", "chaplin.mp4", {"frame_range": [0, 8]}),
    "v2v": ("tiny-wan-v2v", "bbb-short.webm", {"strength": 0.6}),
    "animatediff": ("tiny-animatediff", "bars-timecode.mp4", {"frame_range": [0, 19], "context": {"size": 8,
                                                                                                  "overlap": 2}}),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, media, models_dir, tiny_spec):
    tmp = tmp_path_factory.mktemp("backends")
    settings = settings_for(tmp, models_dir)
    for name, (model, clip, extra) in CASES.items():
        shot = settings.roots[0] / name
        shot.mkdir()
        shutil.copyfile(media / clip, shot / f"plate{clip[clip.rindex('.'):]}")
        write_request(shot / "r.render.json", model=model, prompt="oil painting", output_size=64, steps=2, seed=9,
                      **extra)
    refused = settings.roots[0] / "refused"
    refused.mkdir()
    shutil.copyfile(media / "chaplin.mp4", refused / "plate.mp4")
    shutil.copyfile(media / "mask-shape.mp4", refused / "matte.mp4")
    write_request(refused / "r.render.json", model="tiny-wan-v2v", mask="matte.mp4", source="plate.mp4")
    write_request(refused / "style.render.json", model="tiny-animatediff", style_frame={"keyframe": 3},
                  source="plate.mp4")
    write_request(refused / "shift.render.json", model="tiny-animatediff", shift=5.0, source="plate.mp4")
    drain(settings)
    return settings.roots[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_renders_through_the_daemon(run, name, media):
    model, clip, extra = CASES[name]
    folder = run / name
    status = status_of(folder / "r.render.json")
    assert status["state"] == "done", status
    manifest = json.loads((folder / "plate_r001.render-info.json").read_text())
    assert manifest["model"]["id"] == model
    first, last = extra.get("frame_range", [0, probe(media / clip).frame_count - 1])
    output = probe(folder / "plate_r001.mp4")
    assert output.frame_count == last - first + 1 and output.fps == probe(media / clip).fps


def test_settings_a_model_does_not_expose_are_refused(run):
    assert "model 'tiny-wan-v2v' does not support mask" in status_of(run / "refused" / "r.render.json")["error"]
    assert "model 'tiny-animatediff' does not support style_frame" in \
        status_of(run / "refused" / "style.render.json")["error"]
    assert "model 'tiny-animatediff' does not support shift" in \
        status_of(run / "refused" / "shift.render.json")["error"]
