"""Bad input: a clear error in the status file and the log; the daemon keeps running; nothing else is lost.

One daemon run (drain) goes over a root full of broken shots and one good shot.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.harness import drain, settings_for, status_of, write_request

GOOD = {"output_size": 64, "steps": 1, "seed": 1, "frame_range": [0, 4]}


@pytest.fixture(scope="module")
def run(tmp_path_factory, models_dir, tiny_spec, media):
    tmp = tmp_path_factory.mktemp("bad")
    settings = settings_for(tmp, models_dir, source_wait_seconds=1.5)
    root = settings.roots[0]
    outside = tmp / "outside"
    outside.mkdir()
    shutil.copyfile(media / "bars-timecode.mp4", outside / "secret.mp4")
    clip = media / "bars-timecode.mp4"

    def shot(name: str, with_clip: bool = True) -> Path:
        folder = root / name
        folder.mkdir(parents=True)
        if with_clip:
            shutil.copyfile(clip, folder / "plate.mp4")
        return folder

    (shot("malformed") / "r.render.json").write_text('{"prompt": "oil painting",')
    (shot("huge") / "r.render.json").write_text(json.dumps({"prompt": "x" * 100, "pad": " " * (1024 * 1024)}))
    write_request(shot("unknown-field") / "r.render.json", colour="red", **GOOD)
    write_request(shot("wrong-type") / "r.render.json", **{**GOOD, "steps": "twenty"})
    write_request(shot("unknown-model") / "r.render.json", model="sdxl-turbo-9000", **GOOD)
    write_request(shot("unsupported") / "r.render.json", model="tiny-wan-v2v",
                  controlnets=[{"type": "depth", "strength": 0.5}], **GOOD)
    write_request(shot("missing-source") / "r.render.json", source="plate_v2.mov", **GOOD)
    ambiguous = shot("ambiguous")
    shutil.copyfile(clip, ambiguous / "alt.mp4")
    write_request(ambiguous / "r.render.json", **GOOD)
    write_request(shot("range") / "r.render.json", **{**GOOD, "frame_range": [40, 60]})
    write_request(shot("not-video") / "r.render.json", source="notes.txt", **GOOD)
    for name, content in [("zero-byte", b""), ("truncated", clip.read_bytes()[:9000]),
                          ("corrupt", os.urandom(50_000)), ("text", b"just some words\n" * 100)]:
        folder = shot(name, with_clip=False)
        (folder / "plate.mp4").write_bytes(content)
        write_request(folder / "r.render.json", **GOOD)
    write_request(shot("dotdot") / "r.render.json", source="../outside/secret.mp4", **GOOD)
    write_request(shot("absolute") / "r.render.json", source=str(outside / "secret.mp4"), **GOOD)
    linked = shot("symlink", with_clip=False)
    (linked / "plate.mp4").symlink_to(outside / "secret.mp4")
    write_request(linked / "r.render.json", source="plate.mp4", **GOOD)
    write_request(shot("good") / "r.render.json", **GOOD)
    outside_before = sorted(p.name for p in outside.iterdir())

    with capture_logs() as logs:
        drain(settings)
    return root, logs, outside, outside_before


CASES = {
    "malformed": "the request is not valid JSON",
    "huge": "over the limit of 1048576 bytes",
    "unknown-field": "unknown field 'colour'",
    "wrong-type": "steps: Input should be a valid integer (got \"twenty\")",
    "unknown-model": "unknown model 'sdxl-turbo-9000'; the catalog has: ",
    "unsupported": "model 'tiny-wan-v2v' has no 'depth' ControlNet",
    "missing-source": "waiting for source plate_v2.mov to appear in the shot",
    "ambiguous": "the shot has 2 source videos (alt.mp4, plate.mp4)",
    "range": "frame_range [40, 60] is outside the clip, which has 50 frames",
    "not-video": "source 'notes.txt' is not a video",
    "zero-byte": "the file is empty (0 bytes)",
    "truncated": "plate.mp4 to become readable: ffprobe failed",
    "corrupt": "plate.mp4 to become readable: ffprobe failed",
    "text": "plate.mp4 to become readable: it is a text file, not a video",
    "dotdot": "climbs out of the shot with '..'",
    "absolute": "is an absolute path",
    "symlink": "leads outside the watch root",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_request_fails_with_a_clear_message(run, case):
    root, logs, _, _ = run
    status = status_of(root / case / "r.render.json")
    assert status is not None, f"no status file for {case}"
    assert status["state"] == "failed"
    assert CASES[case] in status["error"], status["error"]
    logged = [entry for entry in logs if CASES[case] in str(entry.get("error", ""))]
    assert logged, f"the log does not carry the error for {case}"
    assert not list((root / case).glob("*_r0*")), "a failed request left a render behind"


def test_the_good_shot_still_renders(run):
    root, *_ = run
    status = status_of(root / "good" / "r.render.json")
    assert status["state"] == "done" and (root / "good" / "plate_r001.mp4").is_file()


def test_nothing_is_written_outside_the_shots(run):
    root, _, outside, before = run
    assert sorted(p.name for p in outside.iterdir()) == before
    written = {p.name for p in root.rglob("*") if p.is_file() and "render" in p.name}
    assert written <= {"r.render.json", "r.render.status.json", "plate_r001.render-info.json"}
