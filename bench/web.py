"""The web workspace's server time with 100 shots and 1,000 jobs.

Builds a state database (real SQLite through the daemon's own store) with 100
shot folders, each with one original and ten jobs (six done with their render
registered, then running, queued, waiting and failed), and times the two
requests the page repeats: the shot list (every 5 s) and one shot's timeline
(every second while it is open), through the ASGI app in process.

    .venv/bin/python bench/web.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time

from _common import PROJECT, WORK
from starlette.testclient import TestClient

from daemon.config import load_settings
from daemon.store import Store
from daemon.web import queries
from daemon.web.app import create_app
from daemon.web.guard import allowed_hosts

SHOTS = 100
JOBS_PER_SHOT = 10
REPEATS = 50
STATES = ("done",) * 6 + ("running", "queued", "waiting", "failed")


def build(root, database) -> None:
    store = Store.open(database)
    probe = {"width": 1920, "height": 1080, "fps": "24/1", "frame_count": 240, "duration": 10.0}
    try:
        for number in range(SHOTS):
            folder = root / "show" / f"sh{number:03d}"
            folder.mkdir(parents=True)
            shot = store.shot_id(folder, root)
            original = store.save_media(folder / "plate.mov", shot, kind="original", state="ready", size=1,
                                        mtime_ns=1, probe=probe)
            for index, state in enumerate(STATES[:JOBS_PER_SHOT]):
                request = folder / f"look{index}.render.json"
                raw = json.dumps({"prompt": f"look {index}", "frame_range": [index * 10, index * 10 + 47]})
                settings = {"source": {"value": "plate.mov", "from": "only source"},
                            "model": {"value": "wan-vace-14b", "from": "default"},
                            "frame_range": {"value": [index * 10, index * 10 + 47], "from": "request"}}
                # Running and done jobs get there as the daemon's would: queued, claimed, finished.
                claimed = state in ("running", "done")
                job = store.enqueue(
                    {"shot_id": shot, "path": str(request), "content_hash": hashlib.sha256(raw.encode()).hexdigest(),
                     "size": len(raw), "mtime_ns": 1, "raw": raw},
                    {"shot_id": shot, "request_path": str(request), "state": "queued" if claimed else state,
                     "priority": 1 if claimed else 0, "source_media_id": original,
                     "settings": settings, "estimate": {"seconds": 812.5, "credits": 8.1, "frames": 48},
                     "error": "out of memory" if state == "failed" else None, "wait_reason": "waiting for overnight"
                     if state == "waiting" else None})
                if claimed:
                    store.claim_next("bench", now=0.0)  # the only queued job of priority 1
                if state == "running":
                    store.set_progress(job, {"percent": 42.0, "chunk": 2, "chunks": 4, "eta_seconds": 300.0})
                if state == "done":
                    render = folder / f"plate_r{index + 1:03d}.mp4"
                    store.save_media(render, shot, kind="render", state="ready", size=1, mtime_ns=1,
                                     probe={**probe, "frame_count": 48}, parent_id=original, root_id=original,
                                     job_id=job)
                    store.finish(job, outputs={"video": render.name, "seconds": 700.0}, progress={})
    finally:
        store.close()


def timed(call) -> list[float]:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    print(f"{name:<44} median {statistics.median(times):6.2f} ms   p95 {ordered[int(0.95 * len(ordered)) - 1]:6.2f} ms")


def main() -> None:
    work = WORK / "web"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    settings = load_settings(None, roots=[root], state_dir=work / "state",
                             catalogs=[PROJECT / "config" / "models.toml"],
                             presets_file=PROJECT / "config" / "presets.toml")
    root.mkdir(parents=True)
    start = time.perf_counter()
    build(root, settings.database)
    print(f"built {SHOTS} shots and {SHOTS * JOBS_PER_SHOT} jobs in {time.perf_counter() - start:.1f} s")
    client = TestClient(create_app(settings, allowed_hosts("127.0.0.1", ["testserver"]), None))
    shots = client.get("/api/shots").json()["shots"]
    assert len(shots) == SHOTS
    middle = shots[SHOTS // 2]["id"]
    timeline = client.get(f"/api/shots/{middle}").json()
    assert len(timeline["groups"][0]["tracks"]) == 1 + JOBS_PER_SHOT
    store = Store.open(settings.database, read_only=True)
    try:
        report("shot list query (100 shots)", timed(lambda: queries.shot_list(store)))
        report("timeline query (1 shot of 100, 10 jobs)", timed(lambda: queries.timeline(store, middle)))
    finally:
        store.close()
    report("GET /api/shots (HTTP, JSON)", timed(lambda: client.get("/api/shots")))
    report("GET /api/shots/<id> (HTTP, JSON)", timed(lambda: client.get(f"/api/shots/{middle}")))
    report("GET / (the page)", timed(lambda: client.get("/")))


if __name__ == "__main__":
    main()
