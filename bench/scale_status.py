"""Facility scale, status part: `hotshot status` with 100,000 jobs, paging, the archive pass, the web queries.

The database is built directly in SQLite through the Store's schema (only its size matters here; built
"sqlite"), cached under var/bench/scale-status/: 1,000 shots, a year of 90,000 finished jobs (85 % done with
their render registered, 10 % failed, 5 % cancelled; four events each, as the daemon writes), then a
sequence drop of 10,000 jobs in 100 shots (2 running, 8,998 queued, 1,000 waiting for a render window).

    .venv/bin/python bench/scale.py status
    .venv/bin/python bench/scale_status.py           # this part alone
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import PROJECT, WORK
from scale_common import Figure

from daemon.archive import BATCH, archive_batch
from daemon.store import Store
from daemon.web import queries

STATE_DIR = WORK / "scale-status"
VERSION = "v3"  # bump when the data built changes
SHOTS, BUSY_SHOTS = 1000, 100
FINISHED, ACTIVE = 90_000, 10_000
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = {name: {"value": value, "from": origin} for name, value, origin in (
    ("model", "tiny-wan-vace", "default"), ("source", "plate.mov", "shot"), ("frame_range", [0, 47], "request"),
    ("prompt", "oil painting of a street at dusk, heavy brush strokes", "request"),
    ("negative_prompt", "blurry, low quality", "model"), ("steps", 30, "model"), ("cfg", 5.0, "model"),
    ("seed", 1234567, "request"), ("strength", 0.7, "preset"), ("output_size", [1280, 720], "source"),
    ("context.size", 81, "model"), ("context.overlap", 16, "model"), ("output_codec", "h264", "default"),
    ("style_frame", None, "default"), ("reference_frame", None, "default"), ("keyframes", [], "default"),
    ("mask", None, "default"), ("controlnets", [], "default"), ("image_sequence", False, "default"),
    ("priority", 0, "default"))}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def build() -> Path:
    """The cached state folder with the 100,000-job database (built once)."""
    database = STATE_DIR / "hotshot.db"
    stamp = STATE_DIR / f"built-{VERSION}"
    if stamp.exists():
        return STATE_DIR
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    store = Store.open(database)
    db = store.db.conn
    rng = random.Random(16)
    root = "/facility/shots"
    probe = json.dumps({"width": 1920, "height": 1080, "fps": "24/1", "frame_count": 240, "duration": 10.0})
    settings = json.dumps(SETTINGS)
    estimate = json.dumps({"seconds": 310.0, "seconds_low": 250.0, "seconds_high": 390.0, "credits": 3.1,
                           "device": "cuda", "parts": {"model_load": 20.0, "diffusion": 270.0, "frames": 20.0}})
    with db:
        db.executemany("INSERT INTO shots (id, root, path, rel, created_at) VALUES (?, ?, ?, ?, ?)",
                       [(shot, root, f"{root}/seq{shot // 100:02d}/sh{shot:04d}", f"seq{shot // 100:02d}/sh{shot:04d}",
                         _iso(NOW - timedelta(days=365))) for shot in range(1, SHOTS + 1)])
        db.executemany("INSERT INTO media (id, shot_id, path, name, kind, state, size, mtime_ns, probe, created_at, "
                       "updated_at) VALUES (?, ?, ?, ?, 'original', 'ready', 1, 1, ?, ?, ?)",
                       [(shot, shot, f"{root}/seq{shot // 100:02d}/sh{shot:04d}/plate.mov", "plate.mov", probe,
                         _iso(NOW - timedelta(days=365)), _iso(NOW - timedelta(days=365)))
                        for shot in range(1, SHOTS + 1)])
    costs = json.dumps({"model": "tiny-wan-vace", "device": "cuda", "frames": 48, "seconds": 300.0})
    jobs, requests, media, events = [], [], [], []
    renders = dict.fromkeys(range(1, SHOTS + 1), 0)
    for number in range(1, FINISHED + ACTIVE + 1):
        if number <= FINISHED:
            shot = rng.randrange(1, SHOTS + 1)
            ended = NOW - timedelta(days=365 * (FINISHED - number) / FINISHED, minutes=1)
            state = "done" if rng.random() < 0.85 else "failed" if rng.random() < 2 / 3 else "cancelled"
        else:
            shot = 1 + (number - FINISHED - 1) % BUSY_SHOTS
            ended = None
            index = number - FINISHED
            state = "running" if index <= 2 else "waiting" if index > ACTIVE - 1000 else "queued"
        folder = f"{root}/seq{shot // 100:02d}/sh{shot:04d}"
        request_path = f"{folder}/r{number:06d}.render.json"
        created = (ended or NOW) - timedelta(minutes=10)
        output = render_number = None
        if state == "done":
            renders[shot] += 1
            render_number = renders[shot]
            output = f"{folder}/plate_r{render_number:03d}.mp4"
            media.append((SHOTS + number, shot, output, Path(output).name, probe, shot, shot, number,
                          _iso(ended), _iso(ended)))
        outputs = json.dumps({"video": Path(output).name, "render_info": Path(output).stem + ".render-info.json",
                              "seconds": 300.0}) if output else None
        requests.append((number, shot, request_path, f"{number:064x}", 120, 1, '{"prompt": "oil painting"}',
                         _iso(created)))
        jobs.append((number, number, shot, request_path, state, rng.choice((0, 0, 0, 5)), rng.random() < 0.3,
                     1 if ended else 0, _iso(created), _iso(ended or created), _iso(ended) if ended else None,
                     created.timestamp(), settings, estimate, outputs, render_number, output,
                     "night" if state == "waiting" else None,
                     (NOW + timedelta(hours=8)).timestamp() if state == "waiting" else None,
                     "the job failed" if state in ("failed", "cancelled") else None,
                     "worker-0" if state == "running" else None))
        for kind in ("job created", "claimed", state) if ended else ("job created",):
            events.append((_iso(created), kind, number, shot, request_path, state, None))
        if state == "done":
            events.append((_iso(ended), "costs", number, None, None, None, costs))
    with db:
        db.executemany("INSERT INTO requests (id, shot_id, path, content_hash, size, mtime_ns, raw, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", requests)
        db.executemany("INSERT INTO jobs (id, request_id, shot_id, request_path, state, priority, full_clip, attempts, "
                       "created_at, updated_at, finished_at, created_ts, settings, estimate, outputs, render_number, "
                       "output_path, window, start_at, error, worker) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", jobs)
        db.executemany("INSERT INTO media (id, shot_id, path, name, kind, state, size, mtime_ns, probe, parent_id, "
                       "root_id, job_id, created_at, updated_at) VALUES (?, ?, ?, ?, 'render', 'ready', 1, 1, ?, ?, ?, "
                       "?, ?, ?)", media)
        db.executemany("INSERT INTO events (at, kind, job_id, shot_id, path, message, data) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", events)
    db.execute("ANALYZE")
    store.close()
    stamp.touch()
    return STATE_DIR


def _timed(args: list[str], repeats: int = 5) -> tuple[float, float]:
    """Best wall time and best CPU time (user + system) of `hotshot ARGS` as a fresh process (Python start
    included). On a loaded machine the CPU time is the steadier of the two."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=PROJECT, check=True,
                       stdout=subprocess.DEVNULL)
        wall = min(wall, time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = min(cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def _both(name: str, args: list[str]) -> list[Figure]:
    wall, cpu = _timed(args)
    return [Figure(name, wall, 0.3, "s", built="sqlite"), Figure(f"{name}, CPU time", cpu, 0.3, "s", built="sqlite")]


def _best(action, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def figures() -> list[Figure]:
    state = build()
    at = ["--state", str(state)]
    rows = [
        Figure("python start alone (for reference)", _best(lambda: subprocess.run([sys.executable, "-c", "pass"]),
                                                            5), None, "s", built="sqlite"),
        *_both("status, 100,000 jobs (10,000 in line)", ["status", *at]),
        *_both("status --json, 100,000 jobs", ["status", "--json", *at]),
        *_both("status --jobs queued --offset 5000 --limit 50",
               ["status", "--jobs", "queued", "--offset", "5000", "--limit", "50", *at]),
        *_both("status --shot seq05/sh0500 --jobs done (a year of it)",
               ["status", "--shot", "seq05/sh0500", "--jobs", "done", *at]),
    ]
    store = Store.open(state / "hotshot.db", read_only=True)
    try:
        rows.append(Figure("web: shot list (1,000 shots)", _best(lambda: queries.shot_list(store)), 0.3, "s",
                           built="sqlite"))
        rows.append(Figure("web: timeline of a busy shot", _best(lambda: queries.timeline(store, 1)), 0.3, "s",
                           built="sqlite"))
    finally:
        store.close()
    copy = WORK / "scale-status-archive"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    shutil.copy(state / "hotshot.db", copy / "hotshot.db")
    store = Store.open(copy / "hotshot.db")
    claim = _best(lambda: store.claim_next("bench", now=NOW.timestamp(), loaded_models=frozenset({"tiny-wan-vace"})))
    history = _best(lambda: store.cost_history("tiny-wan-vace", "cuda"))
    batches, moved, started = [], 0, time.perf_counter()
    try:
        while True:
            batch_started = time.perf_counter()
            count = archive_batch(store, (NOW - timedelta(days=30)).timestamp(), BATCH)
            batches.append(time.perf_counter() - batch_started)
            moved += count
            if count < BATCH:
                break
    finally:
        store.close()
    seconds = time.perf_counter() - started
    rows += [
        Figure("claim the next job (model affinity, 9,000 queued)", claim, 0.05, "s", built="sqlite"),
        Figure("cost history of a model (76,000 measured renders)", history, 0.05, "s", built="sqlite"),
        Figure(f"archive: a batch of {BATCH} jobs (one transaction), median", statistics.median(batches), 0.1, "s",
               built="sqlite"),
        Figure(f"archive: a batch of {BATCH} jobs, longest of {len(batches)}", max(batches), 0.3, "s",
               built="sqlite"),
        Figure(f"archive: {moved:,} jobs older than 30 days, rate", moved / seconds, 1000, "/s", at_most=False,
               built="sqlite"),
        *_both("status after archiving", ["status", "--state", str(copy)]),
    ]
    shutil.rmtree(copy, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for row in figures():
        print(row.line(), flush=True)
