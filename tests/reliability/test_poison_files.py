"""Files a messy share can hold that once broke the loop's ingest step: each now fails alone, with a status
where one can be written and a log line naming it, and the daemon goes on registering everything else.

The daemon here has no workers (the loop is turned by the test), so nothing renders and each test is quick.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
from PIL import Image
from structlog.testing import capture_logs

from daemon.conventions import status_path
from daemon.service import Daemon
from tests.harness import settings_for, tick_until, ticked_daemon, write_request
from tests.reliability.support import QUICK, copy_plate, report, write_json


def status(request: Path) -> dict | None:
    try:
        return json.loads(status_path(request).read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def all_have_status(*requests: Path):
    """Every request has a status that is not waiting (a request read before its source waits a moment)."""
    return lambda: all((status(request) or {}).get("state") not in (None, "waiting") for request in requests)


def not_registered(logs: list[dict]) -> set[str]:
    return {line["path"] for line in logs if line["event"] == "a file could not be registered; it is looked at "
                                                               "again when it changes"}


def test_poison_requests_fail_alone_and_the_rest_is_registered(tmp_path, media, models_dir):
    """Out-of-calendar start times, a shot folder and a request whose names are not UTF-8 (a Latin-1 client):
    each request gets a failed status saying why, each file a log line of its own, and a good request beside
    them is queued."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    root = settings.roots[0]
    copy_plate(media, root / "sh010")
    late = write_json(root / "sh010" / "late.render.json", {**QUICK, "when": "9999-12-31T23:59:59-14:00"})
    early = write_json(root / "sh010" / "early.render.json", {**QUICK, "when": "0001-01-01T00:00:00+14:00"})
    latin = root / os.fsdecode(b"caf\xe9")
    copy_plate(media, latin)
    latin_request = write_json(latin / "r.render.json", QUICK)
    copy_plate(media, root / "sh020")
    odd_name = write_json(root / "sh020" / os.fsdecode(b"\xff\xfe.render.json"), QUICK)
    copy_plate(media, root / "sh030")
    good = write_json(root / "sh030" / "r.render.json", QUICK)
    with capture_logs() as logs, ticked_daemon(settings) as daemon:
        tick_until(daemon, all_have_status(late, early, latin_request, odd_name, good), 30, "every status")
    for request in (late, early):
        assert status(request)["state"] == "failed"
        assert "lies outside the years 1 to 9999 once its offset is taken off" in status(request)["error"]
    for request in (latin_request, odd_name):
        assert status(request)["state"] == "failed"
        assert "is not UTF-8 text (a client with another character set wrote it); rename it" \
            in status(request)["error"]
    assert status(good)["state"] == "queued"
    logged = not_registered(logs)
    assert {f"{root}/caf\\xe9/plate.mp4", f"{root}/caf\\xe9/r.render.json",
            f"{root}/sh020/\\xff\\xfe.render.json"} <= logged, logged
    report("poison requests (when out of range, names not UTF-8)", 4, 0, 0,
           "pytest tests/reliability/test_poison_files.py")


def test_drain_ends_and_reports_files_it_could_not_register(tmp_path, media, models_dir):
    """`hotshot run --drain` over a root holding a request it cannot register ends, and its last lines list
    that file with the reason; a request saved with a UTF-8 byte order mark beside it renders."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    odd_name = write_json(shot / os.fsdecode(b"r\xe9.render.json"), {**QUICK, "cancel": True})
    bom = shot / "bom.render.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(QUICK).encode())
    daemon = Daemon(settings)
    with capture_logs() as logs:
        thread = threading.Thread(target=daemon.run, kwargs={"drain": True}, daemon=True)
        thread.start()
        thread.join(60)
        if thread.is_alive():
            daemon.stop("the test gave up")
            thread.join(30)
            raise AssertionError("the drain did not end")
    reported = [line for line in logs if line["event"] == "drained with files that could not be registered"]
    assert reported and reported[0]["files"][0]["path"] == f"{shot}/r\\xe9.render.json"
    assert "not UTF-8" in reported[0]["files"][0]["error"]
    assert status(odd_name)["state"] == "failed"
    assert status(bom)["state"] == "done", status(bom)


def test_long_names_get_a_status_or_a_reason(tmp_path, media, models_dir):
    """A request named with 240 bytes gets its status (its temporary name is short); one of 250 bytes, whose
    status name would pass 255 bytes, is refused with a log line saying so; a source named with 255 bytes
    fails its request at once, saying how long a name may be."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    long_request = write_request(shot / ("a" * 228 + ".render.json"), **QUICK)
    too_long = write_request(shot / ("b" * 238 + ".render.json"), **QUICK)
    other = settings.roots[0] / "sh020"
    other.mkdir()
    source = "s" * 251 + ".mp4"
    shutil.copyfile(media / "chaplin.mp4", other / source)
    long_source = write_json(other / "r.render.json", {**QUICK, "source": source})
    with capture_logs() as logs, ticked_daemon(settings) as daemon:
        tick_until(daemon, all_have_status(long_request, long_source), 30, "the statuses")
        tick_until(daemon, lambda: str(too_long) in not_registered(logs), 10, "the refusal")
    assert status(long_request)["state"] == "queued"
    assert status(long_source)["state"] == "failed"
    assert status(long_source)["error"] == (
        f"source {source} is not used: it has a name of 255 bytes; its renders' names add up to 40 bytes and "
        "file names may have 255: shorten it to at most 215 bytes before the extension")
    refusal = next(line for line in logs if line.get("path") == str(too_long) and "error" in line
                   and "status file would be" in line["error"])
    assert "its status file would be named with 257 bytes, more than file names may have (255)" in refusal["error"]
    assert not [path for path in shot.iterdir() if path.name.endswith(".part")]


def test_requests_differing_only_in_case_each_have_their_own_status(tmp_path, media, models_dir):
    """`r.render.json` and `r.RENDER.JSON` are two requests with two jobs; each has its own status file
    (`r.render.status.json`, `r.RENDER.status.JSON`) naming its own job."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    lower = write_json(shot / "r.render.json", {**QUICK, "priority": 1})
    upper = write_json(shot / "r.RENDER.JSON", {**QUICK, "priority": 2})
    with ticked_daemon(settings) as daemon:
        tick_until(daemon, all_have_status(lower, upper), 30, "both statuses")
    assert (shot / "r.RENDER.status.JSON").exists()
    assert status(lower)["request"] == "r.render.json" and status(lower)["priority"] == 1
    assert status(upper)["request"] == "r.RENDER.JSON" and status(upper)["priority"] == 2
    assert status(lower)["job"] != status(upper)["job"]


def test_wrong_sources_and_request_quirks_are_told_at_once(tmp_path, media, models_dir):
    """Said at once, not after `source_wait_seconds`: a PNG or a GIF saved as `.mp4` is refused as an image;
    a folder named like the source is refused as a folder. A request starting with a UTF-8 byte order mark
    is read; one with a key written twice is refused naming the key."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough", source_wait_seconds=600.0)
    root = settings.roots[0]
    requests = {}
    for name, fmt in (("png", "PNG"), ("gif", "GIF")):
        shot = root / f"sh-{name}"
        shot.mkdir()
        Image.fromarray(np.full((32, 64, 3), 120, np.uint8)).save(shot / "plate.mp4", format=fmt)
        requests[name] = write_json(shot / "r.render.json", QUICK)
    (root / "sh-folder" / "plate.mp4").mkdir(parents=True)
    requests["folder"] = write_json(root / "sh-folder" / "r.render.json", {**QUICK, "source": "plate.mp4"})
    copy_plate(media, root / "sh-text")
    bom = root / "sh-text" / "bom.render.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(QUICK).encode())
    twice = root / "sh-text" / "twice.render.json"
    twice.write_text('{"model": "passthrough", "frame_range": [0, 4], "context": {"size": 9, "size": 5}}')
    with ticked_daemon(settings) as daemon:
        tick_until(daemon, all_have_status(bom, twice, *requests.values()), 30, "every status")
    for name, kind in (("png", "PNG"), ("gif", "GIF")):
        assert status(requests[name])["state"] == "failed"
        assert status(requests[name])["error"] == \
            f"source plate.mp4 is not used: it is a {kind} image, not a video, though its name ends in .mp4"
    assert status(requests["folder"])["state"] == "failed"
    assert "source 'plate.mp4' is a folder, not a video file" in status(requests["folder"])["error"]
    assert status(bom)["state"] == "queued", status(bom)
    assert status(twice)["state"] == "failed"
    assert status(twice)["error"] == "the key 'size' appears twice in one object of the request; keep one"
