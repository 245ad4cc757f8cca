"""Archiving finished jobs older than `archive_after_days`: what moves, what stays, and that it stays findable."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from daemon import schema
from daemon.archive import archive_batch
from daemon.cli import main
from daemon.control import run_command
from daemon.errors import CommandRefused
from daemon.store import Store
from tests.harness import drain, settings_for, status_of, write_request
from tests.helpers import make_clip

DAY = 86400.0


def ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")


def add(store: Store, shot: Path, root: Path, name: str, state: str = "queued", **job) -> int:
    """A job of the request `name` in `shot`, recorded as the daemon records one."""
    shot_id = store.shot_id(shot, root)
    path = str(shot / f"{name}.render.json")
    return store.enqueue({"shot_id": shot_id, "path": path, "content_hash": f"{name}{job.get('priority', 0)}",
                          "size": 1, "mtime_ns": 1, "raw": "{}"},
                         {"shot_id": shot_id, "request_path": path, "state": state, **job})


def done_job(store: Store, shot: Path, root: Path, name: str, number: int, ended_days_ago: float) -> int:
    """A job rendered `plate_rNNN.mp4` (its render registered) that ended `ended_days_ago` days ago."""
    job_id = add(store, shot, root, name)
    store.claim_next("w", now=1e10)
    output = shot / f"plate_r{number:03d}.mp4"
    store.record_render(job_id, {}, number, str(output), str(output.with_suffix("")) + ".render-info.json")
    store.add_chunk(job_id, {"index": 0, "start": 0, "end": 7, "seed": 1, "seconds": 1.0, "raw_path": "r",
                             "segment_path": "s"})
    store.finish(job_id, {"video": output.name}, {})
    store.record_costs(job_id, {"model": "tiny", "device": "cpu"})
    store.db.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (ago(ended_days_ago), job_id))
    store.save_media(output, store.shot_id(shot, root), kind="render", state="ready", job_id=job_id)
    return job_id


@pytest.fixture
def history(tmp_path):
    """A shot with two renders done 40 and 35 days ago, one done yesterday, a job failed 40 days ago, a job
    cancelled 40 days ago whose request has a newer queued version, and queued, waiting and running jobs
    created long ago."""
    root, state = tmp_path / "root", tmp_path / "state"
    shot = root / "sh010"
    store = Store.open(state / "hotshot.db")
    jobs = {"old": done_job(store, shot, root, "old", 1, 40), "older": done_job(store, shot, root, "older", 2, 35),
            "recent": done_job(store, shot, root, "recent", 3, 1)}
    jobs["failed"] = add(store, shot, root, "failed", state="failed", error="bad request", finished_at=ago(40))
    jobs["edited"] = add(store, shot, root, "edited", state="cancelled", error="x", finished_at=ago(40))
    jobs["running"] = add(store, shot, root, "running")
    store.claim_next("w", now=1e10)
    jobs["edited-again"] = add(store, shot, root, "edited", priority=1)
    jobs["waiting"] = add(store, shot, root, "waiting", state="waiting", window="night", start_at=2e9)
    store.db.execute("UPDATE jobs SET created_at = ?", (ago(400),))
    store.close()
    return tmp_path, jobs


def test_archiving_moves_only_old_finished_jobs_in_batches(history):
    """Done, failed and cancelled jobs that ended before the cut-off move to the archive a batch at a time,
    with their events (not their cost samples) and without their chunk rows; recent, waiting, queued and
    running jobs stay, and so does an old job whose request has an active newer version."""
    tmp_path, jobs = history
    store = Store.open(tmp_path / "state" / "hotshot.db")
    cut = time.time() - 30 * DAY
    moved = [archive_batch(store, cut, limit=2) for _ in range(3)]
    assert moved == [2, 1, 0]
    archived = {row[0] for row in store.db.execute("SELECT id FROM jobs_archive")}
    assert archived == {jobs["old"], jobs["older"], jobs["failed"]}
    hot = {job.id for job in store.jobs()}
    assert hot == set(jobs.values()) - archived
    assert store.job(jobs["recent"]).state == "done" and store.job(jobs["edited"]).state == "cancelled"
    assert store.chunks(jobs["old"]) == [] and store.chunks(jobs["recent"]) != []
    kinds = [row[0] for row in store.db.execute("SELECT kind FROM events WHERE job_id = ?", (jobs["old"],))]
    assert kinds == ["costs"]
    assert [row[0] for row in store.db.execute("SELECT kind FROM events_archive WHERE job_id = ? ORDER BY id",
                                               (jobs["old"],))] == ["job created", "claimed", "done"]
    assert store.next_render_number(1) == 4 and str(tmp_path / "root/sh010/plate_r001.mp4") in store.output_paths(1)
    assert store.claim_next("w", now=1e10).id == jobs["edited-again"]
    store.close()


def test_archived_jobs_stay_findable(history, capsys):
    """`hotshot status --archived` lists archived jobs (by state and shot), the totals count them, `hotshot info
    N` prints an archived render's Render Info, and `hotshot retry N` says the job is archived."""
    tmp_path, jobs = history
    store = Store.open(tmp_path / "state" / "hotshot.db")
    archive_batch(store, time.time() - 30 * DAY)
    store.close()
    (tmp_path / "root/sh010").mkdir(parents=True)
    (tmp_path / "root/sh010/plate_r001.render-info.json").write_text(json.dumps(
        {"render_id": "plate_r001", "output": {"video": "plate_r001.mp4"}, "lineage": {"chain": ["plate.mov"]}}))
    at = ["--state", str(tmp_path / "state")]
    capsys.readouterr()
    assert main(["status", "--json", "--archived", *at]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [job["job"] for job in data["jobs"]] == [jobs["older"], jobs["failed"], jobs["old"]]  # newest end first
    assert data["totals"]["archived"] == {"waiting": 0, "queued": 0, "running": 0, "done": 2, "failed": 1,
                                          "cancelled": 0}
    assert data["totals"]["jobs"]["done"] == 1
    assert main(["status", "--json", "--archived", "--jobs", "failed", "--shot", "root/sh010", *at]) == 0
    assert [job["job"] for job in json.loads(capsys.readouterr().out)["jobs"]] == [jobs["failed"]]
    assert main(["status", "--archived", "--jobs", "queued", *at]) == 2
    assert "archived jobs are finished" in capsys.readouterr().err
    assert main(["info", str(jobs["old"]), *at]) == 0
    assert capsys.readouterr().out.startswith("plate_r001  (plate_r001.mp4")
    settings = settings_for(tmp_path, tmp_path / "models")
    with pytest.raises(CommandRefused, match=f"job {jobs['failed']} is archived"):
        run_command(settings, "retry", str(jobs["failed"]))


def test_the_migration_applies_to_a_database_of_the_previous_version(tmp_path, capsys):
    """A database made by the previous schema (m001-m005) is read by `hotshot status` as it is (no archive yet),
    then gains the archive tables and indexes when the daemon opens it; its jobs are kept, claimed in the same
    order (through the new index) and can be archived."""
    path = tmp_path / "hotshot.db"
    previous = Migrations("hotshot")
    for step in (schema.m001_initial, schema.m002_calibration, schema.m003_operations, schema.m004_media_identity,
                 schema.m005_job_source_identity):
        previous()(step)
    old = Database(path)
    previous.apply(old)
    for number, (priority, full_clip, state, finished) in enumerate(
            [(0, 1, "queued", None), (0, 0, "queued", None), (3, 1, "queued", None),
             (0, 0, "done", ago(90)), (0, 0, "failed", ago(2))], start=1):
        old["jobs"].insert({"id": number, "request_path": f"/r/{number}.render.json", "state": state,
                            "priority": priority, "full_clip": full_clip, "finished_at": finished})
    old.close()
    capsys.readouterr()
    assert main(["status", "--json", "--state", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["jobs"]["queued"] == 3 and sum(data["totals"]["archived"].values()) == 0
    assert main(["status", "--json", "--archived", "--state", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"] == []

    store = Store.open(path)
    applied = [row[0] for row in store.db.execute("SELECT name FROM _sqlite_migrations")]
    assert "m006_archive_and_indexes" in applied and applied[-1] == "m007_chunk_rendered_by"
    plan = " ".join(row[3] for row in store.db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'queued' ORDER BY priority DESC, full_clip, id"))
    assert "idx_jobs_claim_order" in plan and "TEMP B-TREE" not in plan
    assert [store.claim_next("w", now=1e10).id for _ in range(3)] == [3, 2, 1]
    assert archive_batch(store, time.time() - 30 * DAY) == 1
    assert store.job(4) is None and store.job(5).state == "failed"
    store.close()


def test_the_newest_job_is_archived_and_its_number_never_given_again(tmp_path, capsys):
    """Every job due is archived, the newest one too; a request registered afterwards gets a job number above
    every archived one (not the number SQLite would give again), and `hotshot info N` finds the archived job
    and the new one."""
    root, state = tmp_path / "root", tmp_path / "state"
    shot = root / "sh010"
    shot.mkdir(parents=True)
    store = Store.open(state / "hotshot.db")
    old = [done_job(store, shot, root, f"old{number}", number, 100 - number) for number in (1, 2, 3)]
    assert archive_batch(store, time.time() - 30 * DAY) == 3
    assert store.jobs() == []
    new = add(store, shot, root, "new")
    assert new == max(old) + 1
    store.claim_next("w", now=1e10)
    output = shot / "plate_r004.mp4"
    store.record_render(new, {}, 4, str(output), str(shot / "plate_r004.render-info.json"))
    store.finish(new, {"video": output.name}, {})
    store.close()
    for number in (3, 4):
        (shot / f"plate_r{number:03d}.render-info.json").write_text(json.dumps(
            {"render_id": f"plate_r{number:03d}", "output": {"video": f"plate_r{number:03d}.mp4"}}))
    capsys.readouterr()
    for job_id, render in ((old[2], "plate_r003"), (new, "plate_r004")):
        assert main(["info", str(job_id), "--state", str(state)]) == 0
        assert capsys.readouterr().out.startswith(f"{render}  ({render}.mp4"), job_id


def test_the_daemon_archives_periodically_and_the_queue_keeps_working(tmp_path, models_dir, worker_kind):
    """With archive_after_days set, the running daemon archives last year's jobs of a shot (the newest too)
    and renders a new request there, numbered after the archived renders and jobs (their names and numbers
    are never taken again)."""
    settings = settings_for(tmp_path, models_dir, archive_after_days=30, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    store = Store.open(settings.database)
    old = [done_job(store, shot, settings.roots[0], f"old{number}", number, 300 - number) for number in (1, 2, 3)]
    store.close()
    make_clip(shot / "plate.mov", frames=9, size="96x64")
    request = write_request(shot / "new.render.json", output_size=64)
    drain(settings)
    status = status_of(request)
    assert status["state"] == "done" and status["outputs"]["video"] == "plate_r004.mp4", status
    assert (shot / "plate_r004.mp4").is_file()
    store = Store.open(settings.database, read_only=True)
    try:
        assert [row[0] for row in store.db.execute("SELECT id FROM jobs_archive ORDER BY id")] == old
        assert [(job.id, job.state) for job in store.jobs()] == [(old[2] + 1, "done")]
    finally:
        store.close()
