"""Transform renders follow control videos; Auto Prompt writes the prompt. Through the real daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.controls import ControlVideo, load_control_catalog
from engine.decode import read_frames
from engine.hashes import HashCache, listing_digest
from engine.probe import probe
from tests.conftest import CATALOG, PROJECT
from tests.harness import drain, settings_for, sha, status_of, write_request

RANGE = [0, 16]


@pytest.fixture(scope="module")
def run(tmp_path_factory, media, models_dir, tiny_spec):
    tmp = tmp_path_factory.mktemp("transform")
    settings = settings_for(tmp, models_dir, catalogs=[CATALOG])
    root = settings.roots[0]

    def shot(name, clip="chaplin.mp4"):
        folder = root / name
        folder.mkdir()
        shutil.copyfile(media / clip, folder / "plate.mp4")
        return folder

    common = {"frame_range": RANGE, "output_size": 64, "steps": 1, "seed": 5}
    write_request(shot("passthrough") / "r.render.json", model="passthrough",
                  controlnets=[{"type": "depth", "strength": 0.7}], **common)
    write_request(shot("vace") / "r.render.json", controlnets=[{"type": "pose", "strength": 1.0}], **common)
    write_request(shot("animatediff") / "r.render.json", model="tiny-animatediff",
                  controlnets=[{"type": "depth+pose", "strength": 0.8}], **common)
    write_request(shot("two") / "r.render.json", controlnets=[{"type": "depth"}, {"type": "pose"}], **common)
    write_request(shot("auto") / "r.render.json", auto_prompt=True, prompt="in the style of a woodcut", **common)
    write_request(shot("auto-bars", "bars-timecode.mp4") / "r.render.json", auto_prompt=True,
                  prompt="in the style of a woodcut", **common)
    drain(settings)
    return settings, root


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "plate_r001.render-info.json").read_text())


def test_transform_follows_the_control_video_and_saves_a_preview(run):
    """With the passthrough model the output is the control video itself: the render used the depth control.
    The Render Info names the control and its cache key; a viewable preview sits beside the render."""
    settings, root = run
    folder = root / "passthrough"
    assert status_of(folder / "r.render.json")["state"] == "done"
    controls = manifest_of(folder)["controls"]
    assert [entry["type"] for entry in controls] == ["depth"] and controls[0]["strength"] == 0.7
    preview = folder / "plate_r001.control-depth.mp4"
    assert controls[0]["preview"] == preview.name
    assert probe(preview).frame_count == 17
    catalog = load_control_catalog([CATALOG], settings.models_dir)
    video = ControlVideo("depth", catalog, folder / "plate.mp4", 64, 32, settings.state_dir / "controls")
    assert video.cache_key == controls[0]["cache_key"]
    expected = np.stack(video.frames(range(0, 17))).astype(int)
    out = np.stack(list(read_frames(folder / "plate_r001.mp4", 0, 16, 64, 32))).astype(int)
    assert np.abs(out - expected).mean() < 4
    source = np.stack(list(read_frames(folder / "plate.mp4", 0, 16, 64, 32))).astype(int)
    assert np.abs(out - source).mean() > 10
    from daemon.store import Store

    store = Store.open(settings.database, read_only=True)
    names = [row["name"] for shot in store.shots() for row in store.media_in_shot(shot["id"])]
    store.close()
    assert "plate_r001.mp4" in names and not [name for name in names if ".control-" in name]


def test_wan_vace_and_animatediff_transforms(run):
    _, root = run
    for name, control in (("vace", "pose"), ("animatediff", "depth+pose")):
        status = status_of(root / name / "r.render.json")
        assert status["state"] == "done", status
        manifest = manifest_of(root / name)
        assert manifest["controls"][0]["type"] == control
        assert (root / name / f"plate_r001.control-{control}.mp4").is_file()


def test_wan_vace_takes_one_control_video(run):
    _, root = run
    status = status_of(root / "two" / "r.render.json")
    assert status["state"] == "failed" and "follows one control video" in status["error"]


def test_auto_prompt_keeps_human_terms_for_the_two_people_of_chaplin(run):
    """On the Chaplin clip the tiny detector counts the two men in every sampled frame: the Render Info says
    people were present and the default negative prompt keeps its human terms."""
    _, root = run
    auto = manifest_of(root / "auto")["auto_prompt"]
    assert auto["people"] is True and auto["people_from"] == "detector" and auto["person_counts"] == [2] * 4
    assert "extra faces" in auto["negative_prompt"] and auto["dropped_terms"] == []


def test_auto_prompt_combines_and_adapts_to_a_shot_without_people(run):
    """The user's words come first, the generated description follows; with no person detected (colour bars) the
    human terms leave the default negative prompt. The Render Info keeps the captions it came from."""
    _, root = run
    folder = root / "auto-bars"
    assert status_of(folder / "r.render.json")["state"] == "done"
    manifest = manifest_of(folder)
    auto = manifest["auto_prompt"]
    assert auto["prompt"].startswith("in the style of a woodcut")
    assert len(auto["captions"]) == 4 and auto["people"] is False and auto["people_from"] == "detector"
    assert auto["person_counts"] == [0] * 4
    assert "extra faces" not in auto["negative_prompt"] and "blurry" in auto["negative_prompt"]
    assert "extra faces" in auto["dropped_terms"]
    assert manifest["settings"]["auto_prompt"] == {"value": True, "from": "request"}
    assert manifest["settings"]["prompt"] == {"value": auto["prompt"], "from": "auto_prompt",
                                              "requested": "in the style of a woodcut", "requested_from": "request"}
    assert manifest["settings"]["negative_prompt"]["value"] == auto["negative_prompt"]
    assert manifest["settings"]["negative_prompt"]["from"] == "auto_prompt"


def test_the_render_info_hashes_the_source_and_every_set_of_weights_used(run):
    """The Render Info holds the sha256 of the source and of every file of every set of weights the render used
    (the model, its ControlNets, the control preprocessors, the captioner and its people detector), each folder
    with one digest over its files; the hashes are kept in the state folder."""
    settings, root = run
    expected_roles = {
        "animatediff": {"model", "motion_adapter", "controlnet_depth", "controlnet_pose", "control_depth",
                        "control_pose_detector", "control_pose"},
        "vace": {"model", "control_pose_detector", "control_pose"},
        "auto": {"model", "captioner", "control_pose_detector"},
        "passthrough": {"control_depth"},
    }
    for shot, roles in expected_roles.items():
        manifest = manifest_of(root / shot)
        assert manifest["source"]["sha256"] == sha(root / shot / "plate.mp4")
        weights = manifest["weights"]
        assert set(weights) == roles, shot
        for entry in weights.values():
            folder = Path(entry["location"])
            assert entry["files"] and entry["sha256"] == listing_digest(entry["files"])
            assert all(digest == sha(folder / name) for name, digest in entry["files"].items())
        assert manifest["model"]["sha256"] == (weights["model"]["sha256"] if "model" in weights else None)
    vace, auto = manifest_of(root / "vace"), manifest_of(root / "auto")
    assert vace["weights"]["model"] == auto["weights"]["model"]
    assert len(list((settings.state_dir / "hashes").glob("*.json"))) >= 5


def test_a_hashed_file_is_hashed_again_only_when_it_changes(tmp_path):
    """A file's hash comes from the cache while the file is unchanged (a wrong cached value shows through, so
    the file was not read again); rewriting the file gives a fresh, right hash."""
    cache = HashCache(tmp_path / "hashes")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"first")
    assert cache.file(weights) == sha(weights)
    (entry,) = (tmp_path / "hashes").glob("*.json")
    entry.write_text(json.dumps({"sha256": "cached"}))
    assert cache.file(weights) == "cached"
    weights.write_bytes(b"second")
    assert cache.file(weights) == sha(weights) != "cached"


def test_prompt_command_writes_the_suggestion_beside_the_source(tmp_path, media, models_dir):
    shot = tmp_path / "sh010"
    shot.mkdir()
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "prompt", str(shot), "--range", "0", "40",
                           "--state", str(tmp_path / "state")], capture_output=True, text=True, cwd=PROJECT,
                          timeout=180, env={"HOTSHOT_MODELS_DIR": str(models_dir), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    written = (shot / "plate.prompt.txt").read_text().strip()
    assert written and written in done.stdout
    assert "frames described: 0, 13, 27, 40" in done.stdout
