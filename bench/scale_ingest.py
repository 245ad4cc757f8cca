"""Facility scale, registration, reconcile and idle (issue 16): a sequence drop, the scan, an idle daemon.

A real `hotshot run` process (claiming paused, so the figures are registration's alone) watches a root
that already holds image-sequence frames; 10,000 requests with one small clip per shot are then written into
100 shots, and the time until every request has its status file is measured from the first and from the
last write (through watchdog's real events and the daemon's own registration path: built "daemon"), with
the daemon's resident memory before and after and the CPU it used meanwhile (per request: the figure that
does not depend much on how loaded the machine is; 2 ms is what 500 requests a second on one core allow).
Once it has settled, the daemon's own CPU ticks (/proc/<pid>/stat) are counted while it watches the 100,000
files. The reconcile scan is timed against
`find ROOT -printf '%p %s %T@\\n'` on a tree of 50,000 plain files (built "files"), the two alternating,
best of five.

    .venv/bin/python bench/scale.py ingest
    HOTSHOT_SCALE_INGEST=0.1 .venv/bin/python bench/scale.py ingest     # a tenth of every size, quick
    HOTSHOT_SCALE_PROFILE=/tmp/daemon.prof ...                             # the daemon under cProfile
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import PROJECT, WORK
from scale_common import Figure

from daemon.scan import changed_files

SCALE = float(os.environ.get("HOTSHOT_SCALE_INGEST", "1"))
SHOTS = max(1, round(100 * SCALE))
PER_SHOT = 100
WATCHED_FILES = round(100_000 * SCALE)
SCAN_FILES = round(50_000 * SCALE)
IDLE_SECONDS = 60.0 if SCALE >= 1 else 20.0
TICKS = os.sysconf("SC_CLK_TCK")
REQUEST = {"model": "passthrough", "frame_range": [0, 4], "output_size": 64}


def daemon_ticks(pid: int, task: int | None = None) -> int:
    """User plus system clock ticks of the process itself (all its threads, not its workers), or of one of its
    threads (`task`: its thread id; the main thread's is the pid)."""
    stat = f"/proc/{pid}/task/{task}/stat" if task is not None else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def settle(pid: int, most_ticks: int = 2, timeout: float = 120.0) -> None:
    """Wait until the daemon used at most `most_ticks` in a second (its start-up scan or a batch is over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = daemon_ticks(pid)
        time.sleep(1.0)
        if daemon_ticks(pid) - before <= most_ticks:
            return


def make_clip(path: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=64x32:rate=25", "-frames:v", "8", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    return path


def frames(root: Path, count: int) -> None:
    """`count` empty image-sequence frames spread over the shots (files the daemon watches but never reads)."""
    per_shot = max(1, -(-count // SHOTS))
    made = 0
    for shot in range(SHOTS):
        folder = root / f"seq/sh{shot:03d}/plate"
        folder.mkdir(parents=True, exist_ok=True)
        for frame in range(min(per_shot, count - made)):
            (folder / f"plate.{1001 + frame:05d}.exr").touch()
        made += per_shot


def config(tmp: Path) -> Path:
    values = {"roots": [str(tmp / "root")], "state_dir": str(tmp / "state"),
              "models_dir": str(PROJECT / "var" / "models"), "catalogs": [str(PROJECT / "config" / "models.toml")],
              "devices": ["cpu"], "default_model": "passthrough", "log_format": "json", "log_level": "warning"}
    path = tmp / "hotshot.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return path


def hotshot(*args: str, **popen) -> subprocess.Popen:
    """`hotshot ...`; `run` under cProfile when HOTSHOT_SCALE_PROFILE names a file for its figures."""
    profile = os.environ.get("HOTSHOT_SCALE_PROFILE")
    python = [sys.executable, "-m", "cProfile", "-o", profile] if profile and args[0] == "run" else [sys.executable]
    return subprocess.Popen([*python, "-m", "daemon.cli", *args], cwd=PROJECT, **popen)


def status_count(root: Path) -> int:
    count = 0
    for shot in range(SHOTS):
        with os.scandir(root / f"seq/sh{shot:03d}") as entries:
            count += sum(entry.name.endswith(".render.status.json") for entry in entries)
    return count


def registration_and_idle(tmp: Path) -> list[Figure]:
    root = tmp / "root"
    requests = SHOTS * PER_SHOT
    clip = make_clip(tmp / "clip.mp4")
    frames(root, WATCHED_FILES - 2 * requests - SHOTS)  # with the requests, their status files and clips
    settings = config(tmp)
    if hotshot("pause", "--config", str(settings), stdout=subprocess.DEVNULL).wait() != 0:
        raise RuntimeError("hotshot pause failed")
    with open(tmp / "daemon.log", "w") as log:
        daemon = hotshot("run", "--config", str(settings), stdout=subprocess.DEVNULL, stderr=log,
                         start_new_session=True)
    try:
        time.sleep(2.0)
        settle(daemon.pid)
        rss_before = rss_mib(daemon.pid)
        ticks, loop_ticks = daemon_ticks(daemon.pid), daemon_ticks(daemon.pid, daemon.pid)
        first = time.monotonic()
        body = json.dumps(REQUEST).encode()
        for shot in range(SHOTS):
            folder = root / f"seq/sh{shot:03d}"
            shutil.copyfile(clip, folder / "plate.mp4")
            for index in range(PER_SHOT):
                (folder / f"r{index:03d}.render.json").write_bytes(body)
        last = time.monotonic()
        deadline = last + 600
        while status_count(root) < requests:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon ended or stalled; see {tmp / 'daemon.log'}")
            time.sleep(0.2)
        done = time.monotonic()
        busy = (daemon_ticks(daemon.pid) - ticks) / TICKS
        loop = (daemon_ticks(daemon.pid, daemon.pid) - loop_ticks) / TICKS  # the rest: watcher, status writers
        rss_after = rss_mib(daemon.pid)
        settle(daemon.pid)
        ticks = daemon_ticks(daemon.pid)
        started = time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle = (daemon_ticks(daemon.pid) - ticks) / TICKS / (time.monotonic() - started) * 100
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
    print(f"   {requests} requests written in {last - first:.1f} s; all with a status file {done - last:.1f} s "
          f"after the last write, the daemon busy for {busy:.1f} s of CPU ({loop / requests * 1000:.2f} ms a request "
          f"on its loop's thread); RSS {rss_before:.0f} -> {rss_after:.0f} MiB", flush=True)
    return [
        Figure(f"registration: {requests:,} requests in {SHOTS} shots, per second", requests / (done - first),
               500, "/s", at_most=False),
        Figure("registration: every status file, s after the last write", done - last, 20, "s"),
        Figure("registration: daemon CPU per request (all its threads)", busy / requests * 1000, 2.0, "ms"),
        Figure("registration: daemon RSS growth over the drop", rss_after - rss_before, 64, "MiB"),
        Figure(f"idle daemon watching {WATCHED_FILES:,} files, CPU of one core", idle, 1.0, "%"),
    ]


def scan_tree(root: Path) -> dict[str, tuple[int, int]]:
    """SCAN_FILES plain files in folders of 100 (a clip, 49 requests, 50 frames each); return what a
    database that registered every video and request would know of them."""
    known = {}
    for index in range(-(-SCAN_FILES // 100)):
        folder = root / f"seq/sh{index:04d}"
        folder.mkdir(parents=True)
        names = ["plate.mp4", *(f"r{n:02d}.render.json" for n in range(49)),
                 *(f"plate.{1001 + n}.exr" for n in range(50))]
        for name in names:
            path = folder / name
            path.write_bytes(b"x")
            if not name.endswith(".exr"):
                st = path.stat()
                known[str(path)] = (st.st_size, st.st_mtime_ns)
    return known


def scan_against_find(tmp: Path) -> list[Figure]:
    root = tmp / "scan"
    known = scan_tree(root)
    scans, finds = [], []
    for _ in range(5):
        started = time.perf_counter()
        changed = list(changed_files([root], known))
        scans.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run(["find", str(root), "-printf", r"%p %s %T@\n"], stdout=subprocess.DEVNULL, check=True)
        finds.append(time.perf_counter() - started)
    if changed:
        raise RuntimeError(f"the scan reported {len(changed)} unchanged files as changed")
    print(f"   scan {min(scans) * 1000:.0f} ms, find {min(finds) * 1000:.0f} ms (best of 5)", flush=True)
    return [Figure(f"reconcile scan / find -printf, {SCAN_FILES:,} files", min(scans) / min(finds), 1.5, "x",
                   built="files")]


def figures() -> list[Figure]:
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="scale-ingest-", dir=WORK))
    try:
        return [*scan_against_find(tmp), *registration_and_idle(tmp)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    for row in figures():
        print(row.line())
