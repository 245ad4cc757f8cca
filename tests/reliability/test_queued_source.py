"""A source swapped after its job is queued (a security case): the job never renders the new file.

The job fixes the source's identity when it is queued; the claim checks the media's state and that
identity; the worker opens the name without following links and reads what it checked, through
`/proc/<pid>/fd/<n>`.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from daemon.store import Store
from engine.errors import MediaError
from engine.probe import probe
from engine.source_file import opened_source
from tests.harness import FakeClock, RunningDaemon, settings_for, wait_for, wait_for_state
from tests.reliability.support import QUICK, copy_plate, report, write_json

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PAST = 1_000_000_000  # an access time long before any modification: a read under relatime moves it


def registered_inode(settings, plate) -> int | None:
    store = Store.open(settings.database, read_only=True)
    try:
        media = store.media_at(plate)
    finally:
        store.close()
    return media and media["inode"]


def swap_with_symlink(plate, outside):
    os.symlink(outside, plate.with_name(".swap"))
    os.replace(plate.with_name(".swap"), plate)


def swap_with_hard_link(plate, outside):
    os.link(outside, plate.with_name(".swap"))
    os.replace(plate.with_name(".swap"), plate)


def swap_with_other_file(plate, outside):
    shutil.copyfile(outside, plate.with_name(".swap"))
    os.replace(plate.with_name(".swap"), plate)


SWAPS = {"symlink out of the root": swap_with_symlink, "hard link to a file outside": swap_with_hard_link,
         "another regular file": swap_with_other_file}


def test_a_source_swapped_after_queueing_is_refused_not_rendered(tmp_path, media, models_dir):
    """Three jobs wait for a start an hour ahead; meanwhile each plate.mp4 is replaced by a symlink to a file
    outside the root, a hard link to one, or another clip. At the start every job fails saying its source
    changed after it was queued; no render is written and the outside file is never read (its access time
    stays put)."""
    clock = FakeClock(START)
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    outside = tmp_path / "outside"
    outside.mkdir()
    requests = {}
    for index, name in enumerate(SWAPS):
        shot = settings.roots[0] / f"sh{index:02d}0"
        copy_plate(media, shot)
        secret = outside / f"secret{index}.mp4"
        shutil.copyfile(media / "bars-timecode.mp4", secret)
        requests[name] = (write_json(shot / "r.render.json", {**QUICK, "when": (START + timedelta(hours=1))
                                                               .isoformat()}), secret)
    with RunningDaemon(settings, clock):
        for name, (request, secret) in requests.items():
            assert wait_for_state(request, ("waiting",), 30)["starts_at"]
            SWAPS[name](request.with_name("plate.mp4"), secret)
            os.utime(secret, ns=(PAST * 10**9, secret.stat().st_mtime_ns))
        # The attack of the issue: ingest has seen the new file (and marked the links unreadable) before the start.
        for request, _secret in requests.values():
            wait_for(lambda request=request: registered_inode(settings, request.with_name("plate.mp4"))
                     == request.with_name("plate.mp4").stat().st_ino, 30, "ingest to see the swapped source")
        clock.set(START + timedelta(hours=1, seconds=5))
        ended = {name: wait_for_state(request, ("done", "failed"), 60)
                 for name, (request, _secret) in requests.items()}
    for name, (request, secret) in requests.items():
        assert ended[name]["state"] == "failed", (name, ended[name])
        assert "plate.mp4 is not a readable video: it" in ended[name]["error"], (name, ended[name])
        assert "after the render was queued" in ended[name]["error"], (name, ended[name])
        assert not list(request.parent.glob("plate_r*")), name
        if name != "another regular file":
            assert secret.stat().st_atime_ns == PAST * 10**9, f"{name}: the outside file was read"
    report("source swapped after queueing", len(SWAPS), 0, 0,
           "pytest tests/reliability/test_queued_source.py")


def test_the_worker_reads_the_file_it_checked_even_if_the_name_is_swapped_after(tmp_path, media):
    """The source is opened and checked; then another clip is renamed over its name. What ffprobe reads through
    the opened source is still the checked clip (50 frames of chaplin.mp4), not the new one."""
    plate = copy_plate(media, tmp_path)
    st = plate.stat()
    with opened_source(plate, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns) as reading:
        swap_with_other_file(plate, media / "bars-timecode.mp4")
        assert probe(reading).size_bytes == st.st_size
        assert probe(plate).size_bytes != st.st_size


@pytest.mark.parametrize("swap", ["symlink", "hard link"])
def test_the_worker_refuses_a_link_swapped_in_before_it_opens_the_source(tmp_path, media, swap):
    """A name that became a symlink (even to the same file) or gained a hard link since the job was queued
    is refused when the worker opens it, before anything is read."""
    plate = copy_plate(media, tmp_path / "shot")
    st = plate.stat()
    if swap == "symlink":
        os.replace(plate, tmp_path / "moved.mp4")
        os.symlink(tmp_path / "moved.mp4", plate)
    else:
        os.link(plate, tmp_path / "elsewhere.mp4")
    with pytest.raises(MediaError) as caught, \
            opened_source(plate, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns):
        pass
    assert "after the render was queued" in str(caught.value)
