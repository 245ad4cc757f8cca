"""Hostile input: paths that escape the watch root, media that tries to make ffmpeg read other files or the
network, absurd media and requests, and outputs planted with symlinks.

One daemon (in a process of its own, so its memory is its own) goes over a root full of hostile shots and
one good shot. Outside the root lie the files the hostile shots point at; their access times are set in the
past first, so that reading any of them would show (where the file system records access times).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.harness import drain, settings_for, state_of, status_of, wait_for, write_request
from tests.reliability.support import (
    QUICK,
    DaemonProcess,
    config_file,
    copy_plate,
    report,
    sha,
    temporaries,
    write_json,
)

OLD = 978307200  # 2001-01-01: the access time given to every file outside the root
FIELDS = {"source": ".mp4", "style_frame": ".png", "reference_frame": ".png", "mask": ".png"}
GOOD = {**QUICK, "frame_range": [0, 8]}


class Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the handler's name
        Counting.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def png(path: Path, size: tuple[int, int] = (64, 32)) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), 200, np.uint8)).save(path)
    return path


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header says it is width x height (a decompression bomb's shape)."""
    png(path, (16, 16))
    data = bytearray(path.read_bytes())
    struct.pack_into(">II", data, 16, width, height)  # the IHDR chunk's width and height, then its CRC
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def avi(path: Path, width: int = 32, height: int = 32, frames: int | None = None) -> Path:
    """A raw-video AVI whose headers declare this size and frame count."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "quiet", "-y", "-f", "lavfi", "-i", "color=c=red:s=32x32:r=25",
                    "-frames:v", "2", "-c:v", "rawvideo", "-pix_fmt", "rgb24", "-f", "avi", str(path)], check=True)
    data = bytearray(path.read_bytes())

    def put(tag: bytes, offset: int, value: int) -> None:
        struct.pack_into("<I", data, data.index(tag) + 8 + offset, value)

    put(b"avih", 32, width), put(b"avih", 36, height), put(b"strf", 4, width), put(b"strf", 8, height)
    if frames is not None:
        put(b"avih", 16, frames), put(b"strh", 32, frames)
    path.write_bytes(bytes(data))
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def snapshot(folder: Path) -> dict:
    """Every entry under `folder` with what would change if it were read or written."""
    found = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        found[str(path)] = (st.st_size, st.st_mtime_ns, st.st_atime_ns if stat.S_ISREG(st.st_mode) else 0,
                            stat.S_IFMT(st.st_mode))
    return found


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, media, models_dir):
    tmp = tmp_path_factory.mktemp("hostile")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True, name="http-server").start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    outside = tmp / "outside"
    outside.mkdir()
    copy_plate(media, outside / "x")
    shutil.move(outside / "x" / "plate.mp4", outside / "secret.mp4")
    png(outside / "secret.png")
    (outside / "secret-masks").mkdir()
    png(outside / "secret-masks" / "0001.png")
    secret_shot = outside / "secret-shot"
    copy_plate(media, secret_shot)
    write_json(secret_shot / "r.render.json", GOOD)
    write_json(outside / "secret.render.json", GOOD)
    shutil.rmtree(outside / "x")

    root = tmp / "root"
    cases: dict[str, str] = {}

    def shot(name: str, plate: bool = True) -> Path:
        folder = root / name
        folder.mkdir(parents=True)
        if plate:
            copy_plate(media, folder)
        return folder

    for field, ext in FIELDS.items():
        plate = field != "source"
        for kind, value in [("dotdot", f"../../outside/secret{ext}"), ("absolute", str(outside / f"secret{ext}"))]:
            write_json(shot(f"{kind}-{field}", plate) / "r.render.json", {**GOOD, field: value})
        linked = shot(f"symlink-{field}", plate)
        (linked / f"linked{ext}").symlink_to(outside / f"secret{ext}")
        write_json(linked / "r.render.json", {**GOOD, field: f"linked{ext}"})
        hard = shot(f"hardlink-{field}", plate)
        os.link(outside / f"secret{ext}", hard / f"hard{ext}")
        write_json(hard / "r.render.json", {**GOOD, field: f"hard{ext}"})
        cases |= {f"dotdot-{field}": "climbs out of the shot with '..'",
                  f"absolute-{field}": "is an absolute path",
                  f"symlink-{field}": "leads outside the watch root",
                  f"hardlink-{field}": "hard links; a hard link may be a file outside the watch root"}
    masks = shot("symlinked-mask-frames")
    (masks / "masks").mkdir()
    (masks / "masks" / "0001.png").symlink_to(outside / "secret-masks" / "0001.png")
    write_json(masks / "r.render.json", {**GOOD, "mask": "masks"})
    cases["symlinked-mask-frames"] = "holds masks/0001.png, which leads outside the watch root"
    (root / "symlinked-shot").symlink_to(secret_shot)
    request_link = shot("symlinked-request")
    (request_link / "r.render.json").symlink_to(outside / "secret.render.json")
    cases["symlinked-request"] = "the request file is a link that leads outside the watch root"

    fifo(shot("fifo-request") / "r.render.json")
    cases["fifo-request"] = "the request is not a regular file"
    fifo(shot("fifo-source", plate=False) / "plate.mp4")
    write_json(root / "fifo-source" / "r.render.json", GOOD)
    cases["fifo-source"] = "it is not a regular file"
    hls = shot("hls-as-mp4", plate=False)
    (hls / "plate.mp4").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}/segment.ts\n"
                                   f"#EXTINF:10,\nfile://{outside / 'secret.mp4'}\n#EXT-X-ENDLIST\n")
    write_json(hls / "r.render.json", GOOD)
    cases["hls-as-mp4"] = "it is a text file, not a video"
    concat = shot("concat-as-mp4", plate=False)
    (concat / "plate.mp4").write_text(f"ffconcat version 1.0\nfile '{outside / 'secret.mp4'}'\nfile '{url}/x.mp4'\n")
    write_json(concat / "r.render.json", GOOD)
    cases["concat-as-mp4"] = "it is a text file, not a video"
    for name, make, reason in [
        ("one-by-one", lambda path: avi(path, 1, 1), "frame size 1x1 is outside 16x16 to 8192x8192"),
        ("16384-square", lambda path: avi(path, 16384, 16384), "frame size cannot be read"),
        ("millions-of-frames", lambda path: avi(path, frames=5_000_000), "declares 5000000 frames, more than"),
    ]:
        folder = shot(name, plate=False)
        make(folder / "plate.avi")
        write_json(folder / "r.render.json", GOOD)
        cases[name] = reason
    zero = shot("zero-frames", plate=False)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "quiet", "-y", "-f", "lavfi", "-i", "color=s=32x32",
                    "-frames:v", "0", "-c:v", "mpeg4", str(zero / "plate.mp4")], check=True)
    write_json(zero / "r.render.json", GOOD)
    cases["zero-frames"] = "it has no video stream"
    (shot("nested") / "r.render.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    cases["nested"] = "the request is not valid JSON: recursion limit exceeded"
    (shot("long-number") / "r.render.json").write_bytes(b'{"seed": ' + b"7" * 10_000 + b"}")
    cases["long-number"] = "the request is not valid JSON: number out of range"
    with open(shot("fifty-megabytes") / "r.render.json", "wb") as handle:
        handle.write(b'{"prompt": "' + b"x" * (50 * 2**20) + b'"}')
    cases["fifty-megabytes"] = "over the limit of 1048576 bytes"
    bomb = shot("bomb-still")
    png_declaring(bomb / "style.png", 50_000, 50_000)
    write_json(bomb / "r.render.json", {**GOOD, "style_frame": "style.png"})
    cases["bomb-still"] = "its frame size is over 8192x8192"
    good = shot("good")
    write_json(good / "r.render.json", GOOD)

    for path in outside.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (OLD, path.stat().st_mtime))
    before = snapshot(outside)

    config = config_file(tmp, models_dir, source_wait_seconds=3.0, log_level="info")
    daemon = DaemonProcess(config, tmp / "daemon.log").start()
    started = time.monotonic()
    requests = [root / name / "r.render.json" for name in [*cases, "good"]]
    try:
        wait_for(lambda: all(state_of(request) in ("failed", "done")
                             for request in requests), 240, "every hostile request to end")
        seconds = time.monotonic() - started
        peak = daemon.peak_rss_kib()
        worker = daemon.worker_pid()
        worker_peak = int(next(line.split()[1] for line in Path(f"/proc/{worker}/status").read_text().splitlines()
                               if line.startswith("VmHWM:")))
        assert daemon.alive(), "the daemon died"
        daemon.stop()
    finally:
        daemon.kill_session()
        server.shutdown()
        server.server_close()
    return {"root": root, "outside": outside, "cases": cases, "before": before, "after": snapshot(outside),
            "seconds": seconds, "peak": peak, "worker_peak": worker_peak, "hits": list(Counting.hits),
            "log": daemon.log_lines()}


def test_every_hostile_request_fails_with_a_clear_error(hostile):
    """Each hostile shot's request fails, saying what was wrong; the good shot renders."""
    problems = {}
    for name, expected in hostile["cases"].items():
        status = status_of(hostile["root"] / name / "r.render.json") or {}
        if status.get("state") != "failed" or expected not in (status.get("error") or ""):
            problems[name] = status.get("error") or status.get("state")
    good = status_of(hostile["root"] / "good" / "r.render.json")
    report("hostile input: escaping paths, ffmpeg escapes, absurd media and requests", len(hostile["cases"]),
           len(problems), 0, "pytest tests/reliability/test_hostile.py", seconds_for_all=round(hostile["seconds"], 1),
           daemon_peak_rss_mib=round(hostile["peak"] / 1024, 1),
           worker_peak_rss_mib=round(hostile["worker_peak"] / 1024, 1))
    assert not problems, json.dumps(problems, indent=1)
    assert good["state"] == "done", good


def test_nothing_outside_the_roots_is_read_or_written(hostile):
    """Every file outside the root keeps its size, modification and access time; no request reached the
    network; the symlinked shot got no status file."""
    assert hostile["after"] == hostile["before"]
    assert hostile["hits"] == []
    assert not (hostile["outside"] / "secret-shot" / "r.render.status.json").exists()


def test_absurd_input_is_refused_without_exhausting_memory(hostile):
    """The daemon (which reads requests and probes) and the worker (which would decode a still) stay small."""
    assert hostile["peak"] < 400 * 1024, f"the daemon peaked at {hostile['peak']} KiB"
    assert hostile["worker_peak"] < 2048 * 1024, f"the worker peaked at {hostile['worker_peak']} KiB"
    assert hostile["seconds"] < 200


def test_outputs_have_a_defined_mode_and_replace_planted_symlinks(tmp_path, media, models_dir, quick_reference):
    """With a umask of 0, outputs are still group-readable and not world-writable; symlinks planted at the
    output's names (the render, its Render Info, the status file, the image sequence folder and its hidden
    staging folder) are replaced or refused, never followed."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "folder").mkdir()
    planted = {"plate_r001.mp4": victims / "render.mp4", "plate_r001.render-info.json": victims / "info.json",
               "r.render.status.json": victims / "status.json", "plate_r001": victims / "sequence",
               ".plate_r001.frames.part": victims / "folder"}
    for name, target in planted.items():
        (shot / name).symlink_to(target)
    old = os.umask(0)
    try:
        request = write_request(shot / "r.render.json", **{**QUICK, "image_sequence": "png", "source": "plate.mp4"})
        drain(settings)
    finally:
        os.umask(old)
    status = status_of(request)
    assert status["state"] == "done", status
    assert sorted(path.name for path in victims.rglob("*")) == ["folder"], "something was written through a link"
    outputs = [shot / "plate_r001.mp4", shot / "plate_r001.render-info.json", shot / "r.render.status.json",
               shot / "plate_r001", *(shot / "plate_r001").iterdir()]
    for path in outputs:
        mode = path.lstat().st_mode
        assert not stat.S_ISLNK(mode), f"{path.name} is still a link"
        assert mode & stat.S_IRGRP and not mode & stat.S_IWOTH, f"{path.name} has mode {oct(mode)}"
    assert not temporaries(shot)
    assert sha(shot / "plate_r001.mp4") == quick_reference
