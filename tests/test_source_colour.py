"""A source's colours come through a render as a player shows the source: its matrix and range are read from its
tags, and an untagged one is read by the players' rule (BT.709 for HD, BT.601 for SD).

Each clip is a picture of flat colour patches encoded with ffmpeg in one way sources come; a passthrough render
(output = the decoded source frames) is decoded by its own BT.709 tags and compared with the patches.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.catalog import load_catalog
from engine.models import ModelCache
from engine.probe import probe
from engine.render import render
from engine.source_colour import guessed_matrix
from tests.conftest import CATALOG
from tests.helpers import make_job

CACHE = ModelCache()
PATCHES = [(200, 40, 40), (40, 180, 60), (50, 70, 200), (220, 200, 60), (225, 170, 140), (90, 160, 220)]
HDR_TAGS = ["-colorspace", "bt2020nc", "-color_primaries", "bt2020", "-color_trc", "smpte2084"]

# name: size, the matrix and range it is made with, pixel format, codec, tags; how it must be read (Render Info)
CASES = {
    "untagged HD": ("1280x720", "bt709", "tv", "yuv420p", "libx264", [], ("bt709", "size", "limited", "default")),
    "untagged SD": ("640x480", "bt601", "tv", "yuv420p", "libx264", [], ("bt601", "size", "limited", "default")),
    "tagged BT.709 at SD size": ("640x480", "bt709", "tv", "yuv420p", "libx264",
                                 ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"],
                                 ("bt709", "tag", "limited", "tag")),
    "tagged BT.601 (smpte170m) at HD size": ("1280x720", "bt601", "tv", "yuv420p", "libx264",
                                             ["-colorspace", "smpte170m"], ("bt601", "tag", "limited", "tag")),
    "tagged BT.601 (bt470bg) at HD size": ("1280x720", "bt601", "tv", "yuv420p", "libx264",
                                           ["-colorspace", "bt470bg"], ("bt601", "tag", "limited", "tag")),
    "full range, tagged BT.709 (a phone)": ("1280x720", "bt709", "pc", "yuvj420p", "libx264",
                                            ["-colorspace", "bt709", "-color_range", "pc"],
                                            ("bt709", "tag", "full", "pixel format")),
    "full range, matrix untagged": ("1280x720", "bt709", "pc", "yuvj420p", "libx264", ["-color_range", "pc"],
                                    ("bt709", "size", "full", "pixel format")),
    "MJPEG": ("1280x720", "bt601", "pc", "yuvj420p", "mjpeg", ["-q:v", "2"], ("bt601", "tag", "full", "pixel format")),
    "BT.2020 HDR, read as stored": ("1280x720", "bt2020", "tv", "yuv420p", "libx264", HDR_TAGS,
                                    ("bt2020", "tag", "limited", "tag")),
}


@pytest.fixture(scope="module")
def passthrough(models_dir):
    return load_catalog([CATALOG], models_dir)["passthrough"]


def patches_clip(path: Path, size: str, matrix: str, levels: str, pixel_format: str, codec: str,
                 tags: list[str]) -> Path:
    """Five frames of the patches (three by two), converted to Y'CbCr with `matrix` and `levels`, with `tags`."""
    width, height = (int(side) for side in size.split("x"))
    picture = np.zeros((height, width, 3), np.uint8)
    for index, colour in enumerate(PATCHES):
        row, column = divmod(index, 3)
        picture[row * height // 2:(row + 1) * height // 2, column * width // 3:(column + 1) * width // 3] = colour
    still = path.with_suffix(".png")
    cv2.imwrite(str(still), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-loop", "1", "-framerate", "25",
                    "-i", str(still), "-frames:v", "5",
                    "-vf", f"scale=out_color_matrix={matrix}:out_range={levels},format={pixel_format}",
                    "-c:v", codec, *tags, str(path)], check=True)
    return path


def patch_errors(path: Path, width: int, height: int) -> np.ndarray:
    """|mean of each patch's centre - its colour| per patch and channel (6x3), in the first frame of `path`
    decoded as BT.709 limited range (what hotshot's outputs are, and say they are)."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-frames:v", "1",
                           "-vf", "scale=in_color_matrix=bt709:in_range=tv", "-f", "rawvideo", "-pix_fmt", "rgb24",
                           "-"], check=True, capture_output=True)
    frame = np.frombuffer(done.stdout, np.uint8).reshape(height, width, 3).astype(float)
    errors = []
    for index, colour in enumerate(PATCHES):
        row, column = divmod(index, 3)
        top, left = row * height // 2, column * width // 3
        centre = frame[top + height // 8:top + 3 * height // 8, left + width // 12:left + 3 * width // 12]
        errors.append(np.abs(centre.reshape(-1, 3).mean(axis=0) - colour))
    return np.array(errors)


@pytest.mark.parametrize("case", list(CASES))
def test_a_render_keeps_the_colours_of_the_source_as_a_player_shows_it(tmp_path, passthrough, case):
    """Flat patches come back from a passthrough render within 2.5 levels per channel on average (4 at worst)
    whatever the source's matrix, range and tags; the Render Info says how the source was read. (An untagged
    HD source read as BT.601 was off by 10 on average and 22 at worst.)"""
    size, matrix, levels, pixel_format, codec, tags, read = CASES[case]
    source = patches_clip(tmp_path / ("plate.avi" if codec == "mjpeg" else "plate.mp4"), size, matrix, levels,
                          pixel_format, codec, tags)
    job = make_job(tmp_path, passthrough, source, frame_range=(0, 4), output_size=256, context_size=81)
    result = render(job, None, CACHE)
    width, height = result.width, result.height
    errors = patch_errors(Path(result.output), width, height)
    assert errors.mean(axis=0).max() <= 2.5 and errors.max() <= 4, errors.round(1).tolist()
    colour = json.loads(job.manifest.read_text())["source"]["colour"]
    assert (colour["matrix"], colour["matrix_from"], colour["range"], colour["range_from"]) == read


def test_an_hdr_source_is_rendered_with_a_warning(tmp_path, passthrough):
    """A BT.2020 PQ source is read as stored (no tone mapping); the render says its output looks flatter."""
    source = patches_clip(tmp_path / "hdr.mp4", "640x360", "bt2020", "tv", "yuv420p", "libx264", HDR_TAGS)
    job = make_job(tmp_path, passthrough, source, frame_range=(0, 4), output_size=128, context_size=81)
    render(job, None, CACHE)
    manifest = json.loads(job.manifest.read_text())
    assert any("HDR (PQ)" in warning for warning in manifest["warnings"])
    assert manifest["source"]["colour"]["tags"] == {
        "color_space": "bt2020nc", "color_range": "tv", "color_primaries": "bt2020", "color_transfer": "smpte2084"}


@pytest.mark.parametrize(("size", "matrix"), [((1280, 576), "bt709"), ((1279, 576), "bt601"), ((720, 577), "bt709"),
                                              ((720, 576), "bt601"), ((1920, 1080), "bt709"), ((3840, 2160), "bt709")])
def test_an_untagged_picture_is_read_by_its_stored_size(size, matrix):
    """mpv's rule: 1280 wide or more, or taller than 576 lines, is BT.709; anything smaller is BT.601."""
    assert guessed_matrix(*size) == matrix


def test_a_rotated_phone_clip_is_guessed_by_its_stored_size(tmp_path):
    """An untagged 1024x576 clip shown upright (576x1024, rotated 90 degrees) is SD as stored: BT.601, as mpv
    reads it."""
    stored = patches_clip(tmp_path / "wide.mp4", "1024x576", "bt601", "tv", "yuv420p", "libx264", [])
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(stored), "-metadata:s:v:0", "rotate=90",
                    "-c", "copy", str(rotated)], check=True)
    info = probe(rotated)
    assert (info.width, info.height) == (576, 1024)
    assert (info.colour.matrix, info.colour.matrix_from) == ("bt601", "size")


@pytest.mark.parametrize("case", ["untagged HD", "tagged BT.601 (smpte170m) at HD size"])
def test_the_web_pages_poster_strip_shows_the_colours_of_the_source(tmp_path, models_dir, case):
    """The web workspace's poster strip of a registered clip is a JPEG, which a browser reads as BT.601 full
    range: its frames go through RGB as the clip is read (the colour its registration probed), so its flat
    patches keep their colours (an untagged HD source's Y'CbCr copied across came out up to 16 levels off)."""
    import io

    from PIL import Image
    from starlette.testclient import TestClient

    from daemon.web.app import create_app
    from daemon.web.guard import allowed_hosts
    from tests.harness import settings_for, tick_until, ticked_daemon

    settings = settings_for(tmp_path, models_dir)
    folder = settings.roots[0] / "sh010"
    folder.mkdir(parents=True)
    size, matrix, levels, pixel_format, codec, tags, _ = CASES[case]
    patches_clip(folder / "plate.mp4", size, matrix, levels, pixel_format, codec, tags)
    with ticked_daemon(settings) as daemon:
        tick_until(daemon, lambda: daemon.store.media_in_shot(1), what="the clip to be registered")
        media_id = daemon.store.media_in_shot(1)[0]["id"]
    client = TestClient(create_app(settings, allowed_hosts("127.0.0.1", ["testserver"]), None))
    strip = client.get(f"/files/media/{media_id}/strip.jpg?tiles=1")
    picture = np.asarray(Image.open(io.BytesIO(strip.content)).convert("RGB")).astype(float)
    height, width = picture.shape[:2]
    for index, colour in enumerate(PATCHES):
        row, column = divmod(index, 3)
        top, left = row * height // 2, column * width // 3
        centre = picture[top + height // 8:top + 3 * height // 8, left + width // 12:left + 3 * width // 12]
        assert np.abs(centre.reshape(-1, 3).mean(axis=0) - colour).max() <= 5, (index, centre.mean(axis=(0, 1)))
