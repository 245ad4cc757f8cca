"""The state database: migrations, claims, ordering, recovery. Real SQLite files."""

from __future__ import annotations

import threading

import pytest

from daemon.service import Daemon
from daemon.store import Store
from tests.harness import settings_for


def add_job(store: Store, name: str, **job):
    return store.enqueue(
        {"shot_id": None, "path": f"/r/{name}.render.json", "content_hash": name, "size": 1, "mtime_ns": 1,
         "raw": "{}"},
        {"request_path": f"/r/{name}.render.json", "state": "queued", **job},
    )


def test_migrations_apply_once(tmp_path):
    path = tmp_path / "hotshot.db"
    Store.open(path).close()
    store = Store.open(path)
    applied = store.db.execute("SELECT name FROM _sqlite_migrations").fetchall()
    names = [row[0] for row in applied]
    assert names == ["m001_initial", "m002_calibration", "m003_operations", "m004_media_identity",
                     "m005_job_source_identity", "m006_archive_and_indexes",
                     "m007_chunk_rendered_by"]
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_claims_follow_priority_then_range_before_full_clip_then_age(tmp_path):
    store = Store.open(tmp_path / "hotshot.db")
    old_full = add_job(store, "old-full", full_clip=1)
    newer_range = add_job(store, "newer-range", full_clip=0)
    urgent = add_job(store, "urgent", full_clip=1, priority=10)
    later = add_job(store, "later", full_clip=0, not_before=2000.0)
    order = [store.claim_next("w", now=1000.0).id for _ in range(3)]
    assert order == [urgent, newer_range, old_full]
    assert store.claim_next("w", now=1000.0) is None
    assert store.claim_next("w", now=2001.0).id == later
    store.close()


def test_a_job_is_claimed_once_even_by_racing_claimers(tmp_path):
    path = tmp_path / "hotshot.db"
    store = Store.open(path)
    ids = {add_job(store, f"job{i}") for i in range(40)}
    store.close()
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(name):
        own = Store.open(path)
        while (job := own.claim_next(name, now=0.0)) is not None:
            with lock:
                claimed.append(job.id)
        own.close()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)


def test_running_jobs_are_requeued_after_a_restart(tmp_path, models_dir):
    settings = settings_for(tmp_path, models_dir)
    store = Store.open(settings.database)
    job = add_job(store, "a")
    store.claim_next("w", now=0.0)
    store.close()
    daemon = Daemon(settings)
    try:
        daemon._recover()  # what a restarted daemon does first
        row = daemon.store.job(job)
        events = daemon.store.events(job)
    finally:
        daemon.store.close()
        daemon.release_locks()
    assert row.state == "queued" and row.attempts == 1
    assert [event["kind"] for event in events] == ["job created", "claimed", "recovered"]
    assert events[-1]["message"] == "the daemon restarted while this job ran; it resumes"


def test_superseded_versions_are_cancelled(tmp_path):
    """A new version of a request supersedes the older one's unstarted job in the transaction that records it."""
    store = Store.open(tmp_path / "hotshot.db")
    job = {"request_path": "/r/a.render.json", "state": "queued"}
    first = store.enqueue({"path": "/r/a.render.json", "content_hash": "1", "raw": "{}"}, job)
    second = store.enqueue({"path": "/r/a.render.json", "content_hash": "2", "raw": "{}"}, job)
    assert store.job(first).state == "cancelled" and store.job(second).state == "queued"
    assert store.job(first).error == "superseded by a newer version of the request"
    assert store.supersede("/r/a.render.json", keep_job=second) == []
    store.close()


def test_a_cancelling_version_cancels_older_jobs_with_it(tmp_path):
    """A version saying "cancel": true cancels the older unstarted jobs and marks the running one, atomically."""
    store = Store.open(tmp_path / "hotshot.db")
    path = "/r/a.render.json"
    running = store.enqueue({"path": path, "content_hash": "1", "raw": "{}"},
                            {"request_path": path, "state": "queued"})
    assert store.claim_next("w", now=0.0).id == running
    queued = store.enqueue({"path": path, "content_hash": "2", "raw": "{}"},
                           {"request_path": path, "state": "queued"})
    store.enqueue({"path": path, "content_hash": "3", "raw": "{}"},
                  {"request_path": path, "state": "cancelled"}, cancels_older="cancelled by the request")
    assert store.job(queued).state == "cancelled" and store.job(queued).error == "cancelled by the request"
    assert store.job(running).state == "running"
    assert store.job(running).cancel_reason == "cancelled by the request"
    store.close()


def test_each_transition_starts_only_from_its_states(tmp_path):
    """A state change asked of a job in a state it does not start from raises at the caller and changes nothing:
    a queued job cannot finish, a done job cannot be retried or cancelled; the allowed path works."""
    from daemon.states import JobState
    from daemon.transitions import JobStateError

    store = Store.open(tmp_path / "hotshot.db")
    job = add_job(store, "a")
    with pytest.raises(JobStateError, match="job 1 is queued; finish starts from running"):
        store.finish(job, outputs={}, progress={})
    assert store.claim_next("w", now=0.0).state == JobState.RUNNING
    store.finish(job, outputs={"video": "plate_r001.mp4"}, progress={})
    for refused in (lambda: store.retry(job, JobState.QUEUED), lambda: store.cancel(job, "no"),
                    lambda: store.requeue(job, "retry", "again")):
        with pytest.raises(JobStateError):
            refused()
    done = store.job(job)
    assert done.state == JobState.DONE and done.outputs == {"video": "plate_r001.mp4"}
    assert [event["kind"] for event in store.events(job)] == ["job created", "claimed", "done"]
    store.close()
