"""The render loop's stages side by side: decoding and encoding beside diffusion, same bytes, same errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from itertools import pairwise
from pathlib import Path

import pytest

from engine.catalog import ModelSpec, load_catalog
from engine.errors import DiskFullError, Interrupted, MediaError
from engine.models import ModelCache
from engine.render import render
from tests.conftest import CATALOG
from tests.harness import drain, settings_for, sha, write_request
from tests.helpers import Recorder, make_clip, make_job

CACHE = ModelCache()
# Each step of a 17-frame 64x32 window sleeps 17 * 64 * 32 / 1e6 * 8.0 = 0.28 s: far longer than decoding or
# encoding such a window, so the waits are where the other stages must run.
SLEEP = ModelSpec(id="sleep-test", name="Sleeps instead of diffusing", backend="sleep", frame_constraint="4k+1",
                  context_default=17, context_overlap_default=5, steps=2, cfg=1.0,
                  calibration={"cpu": 8.0, "cuda": 8.0},
                  capabilities={"reference_frame": True, "style_frame": True, "keyframes": True, "mask": True})


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("overlap") / "plate.mp4", 60, audio=True)


def spans(manifest_path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """(stage, chunk) -> (start, end) from the Render Info's stage timings (first span of each)."""
    timing = json.loads(manifest_path.read_text())["timing"]["stages"]
    found: dict[tuple[str, int], tuple[float, float]] = {}
    for span in timing["spans"]:
        found.setdefault((span["stage"], span["chunk"]), (span["start"], span["end"]))
    return found


def hotshot_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("hotshot-")]


def test_decoding_and_encoding_run_beside_diffusion_with_identical_output(tmp_path, clip):
    """With the sleeping backend, the next chunk is decoded before the current one's diffusion ends (it does not
    wait for it) and the previous chunk is encoded during it; one stage at a time (overlap off), each waits for
    the one before; both give the same bytes."""
    overlapped = render(make_job(tmp_path, SLEEP, clip, "on"), None, CACHE)
    serial = render(make_job(tmp_path, SLEEP, clip, "off", overlap=False), None, CACHE)
    assert sha(Path(overlapped.output)) == sha(Path(serial.output))
    assert overlapped.frames == 48 and not hotshot_threads()

    on, off = spans(Path(overlapped.manifest)), spans(Path(serial.manifest))
    chunks = {chunk for _, chunk in on}
    assert chunks == {0, 1, 2, 3}
    for k in (1, 2):
        diffusing = on[("diffuse", k)]
        assert on[("decode", k + 1)][1] < diffusing[1], f"chunk {k + 1} was decoded after chunk {k} diffused"
        assert on[("encode", k - 1)][0] < diffusing[1], f"chunk {k - 1} was encoded after chunk {k} diffused"
        assert on[("encode", k - 1)][1] > diffusing[0], f"chunk {k - 1} was encoded before chunk {k} diffused"
        assert off[("decode", k + 1)][0] >= off[("diffuse", k)][1]
        assert off[("encode", k - 1)][1] <= off[("diffuse", k)][0]
    stages = json.loads(Path(overlapped.manifest).read_text())["timing"]["stages"]
    assert stages["overlap"] is True and set(stages["seconds"]) == {"decode", "diffuse", "blend", "checkpoint",
                                                                   "encode"}


def test_stop_after_a_chunk_and_resume_are_exact_with_the_overlap(tmp_path, clip):
    """Asked to stop once two chunks are done, the overlapped render stops after exactly two, and the resumed
    render finishes the other two and gives the bytes of an uninterrupted one."""
    whole = render(make_job(tmp_path, SLEEP, clip, "whole", overlap=False), None, CACHE)
    job = make_job(tmp_path, SLEEP, clip, "resumed")
    stopper = Recorder(stop_after=2)
    with pytest.raises(Interrupted) as stopped:
        render(job, stopper, CACHE)
    assert stopped.value.chunks_done == 2 and [record.index for record in stopper.chunks] == [0, 1]
    assert not hotshot_threads()
    finisher = Recorder()
    render(job.model_copy(update={"done_chunks": {0: 1.0, 1: 1.0}}), finisher, CACHE)
    assert [record.index for record in finisher.chunks] == [2, 3]
    assert sha(job.output) == sha(Path(whole.output))


def test_a_decoding_error_ahead_is_raised_as_it_is_one_stage_at_a_time(tmp_path):
    """A source whose second half is cut off (its index, at the front, still lists every frame) fails the
    overlapped render with the decoder's own message, as one stage at a time does, after the same chunks."""
    whole = make_clip(tmp_path / "whole.mp4", 60)
    plate = tmp_path / "cut.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(whole), "-c", "copy",
                    "-movflags", "+faststart", str(plate)], check=True)
    plate.write_bytes(plate.read_bytes()[: plate.stat().st_size * 2 // 3])
    errors, done = [], []
    for overlap in (True, False):
        events = Recorder()
        with pytest.raises(MediaError) as failed:
            render(make_job(tmp_path, SLEEP, plate, f"cut-{overlap}", overlap=overlap, frame_range=(0, 59)), events,
                   CACHE)
        errors.append(re.sub(r"@ 0x[0-9a-f]+", "@ …", str(failed.value)))  # ffmpeg's addresses differ
        done.append([record.index for record in events.chunks])
    assert errors[0] == errors[1] and "decoding stopped at frame" in errors[0]
    assert done[0] == done[1] and done[0]
    assert not hotshot_threads()


def test_an_encoding_error_behind_stops_the_render_with_its_message(tmp_path, clip):
    """A full disk while the second chunk's segment is written stops the overlapped render with the same
    error as one stage at a time, after the first chunk was reported, with no thread left running."""
    messages = []
    for overlap in (True, False):
        job = make_job(tmp_path, SLEEP, clip, f"full-{overlap}", overlap=overlap)
        job.work_dir.mkdir(parents=True)
        (job.work_dir / "segment-0001.mp4").mkdir()  # the segment cannot be put in place
        events = Recorder()
        with pytest.raises((DiskFullError, OSError)) as failed:
            render(job, events, CACHE)
        messages.append((type(failed.value), str(failed.value).replace(f"full-{overlap}", "")))
        assert [record.index for record in events.chunks] == [0]
    assert messages[0] == messages[1]
    assert not hotshot_threads()


def test_the_render_overlap_setting_reaches_the_render(tmp_path, media, models_dir):
    """`render_overlap = false` in the daemon's settings renders one stage at a time: the Render Info says so and
    no stage of a chunk starts before the previous stage of the loop ended."""
    settings = settings_for(tmp_path, models_dir, render_overlap=False)
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    write_request(shot / "r.render.json", model="passthrough", frame_range=[0, 40], output_size=64,
                  context={"size": 17, "overlap": 5})
    drain(settings)
    stages = json.loads((shot / "plate_r001.render-info.json").read_text())["timing"]["stages"]
    assert stages["overlap"] is False
    loop = sorted((span["start"], span["end"]) for span in stages["spans"])
    assert len(loop) >= 12 and all(later[0] >= earlier[1] for earlier, later in pairwise(loop))


def test_a_stop_drops_the_chunks_encoding_behind_it(tmp_path, clip, models_dir):
    """With a model that takes no time, later chunks are blended and being encoded when the first is reported; asked
    to stop then, the render stops after that chunk: none of the later ones is reported, leaves a segment, a
    checkpoint or a temporary file, or an encoder running, and the resumed render gives the uninterrupted bytes."""
    passthrough = load_catalog([CATALOG], models_dir)["passthrough"]
    whole = render(make_job(tmp_path, passthrough, clip, "whole", context_size=9, context_overlap=1), None, CACHE)
    job = make_job(tmp_path, passthrough, clip, "stopped", context_size=9, context_overlap=1)
    stopper = Recorder(stop_after=1)
    with pytest.raises(Interrupted) as stopped:
        render(job, stopper, CACHE)
    assert stopped.value.chunks_done == 1 and [record.index for record in stopper.chunks] == [0]
    left = sorted(path.name for path in job.work_dir.iterdir())
    assert [name for name in left if name.startswith("segment-")] == ["segment-0000.mp4"]
    assert not [name for name in left if name.endswith(".part") or name in ("chunk-0001.npy", "final-0001.npy")]
    assert not hotshot_threads() and not encoders_running(job.work_dir)
    render(job.model_copy(update={"done_chunks": {0: 1.0}}), Recorder(), CACHE)
    assert sha(job.output) == sha(Path(whole.output))


def encoders_running(work_dir: Path) -> list[str]:
    """The command lines of ffmpeg processes writing into `work_dir`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            if "ffmpeg" in text and str(work_dir) in text:
                found.append(text)
    return found


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"), reason="needs two cores")
@pytest.mark.parametrize("last", [False, True], ids=["segment", "last-segment"])
def test_a_segment_is_the_same_bytes_on_one_core_as_on_two(tmp_path, last):
    """x264's output follows its thread count, which it would take from the machine: the same frames encoded
    on one core and on two give the same segment, so a render resumed on another machine joins the same bytes
    (the last segment, encoded with more threads, too)."""
    script = ("import sys, numpy as np; from pathlib import Path; from engine.encode import encode_segment; "
              "rng = np.random.default_rng(3); base = rng.integers(0, 256, (240, 320, 3), np.uint8); "
              "encode_segment([np.roll(base, 4 * n, axis=1) for n in range(24)], 320, 240, '25', Path(sys.argv[1]), "
              f"last={last})")
    digests = []
    for cores in ("0", ",".join(str(core) for core in sorted(os.sched_getaffinity(0)))):
        segment = tmp_path / f"cores-{cores.count(',') + 1}.mp4"
        subprocess.run(["taskset", "-c", cores, sys.executable, "-c", script, str(segment)], check=True)
        digests.append(sha(segment))
    assert digests[0] == digests[1]
