"""What a stop or a crash leaves behind, made good: status files not written, jobs left running, half-written
files, and checkpoints nobody can use any more."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from daemon.config import Settings
from daemon.control import remove_job_files, remove_stale_temporaries
from daemon.jobs import Jobs
from daemon.publishing import Publisher
from daemon.states import JobState
from daemon.status_file import publish_newest
from daemon.store import Store

log = structlog.get_logger("hotshot.daemon")
EXIT_BUSY_SECONDS = 2.0


def recover(store: Store, jobs: Jobs, publisher: Publisher) -> None:
    """After a stop or a crash: write the status files a crash kept from being written, finish cancels
    that were under way, put running jobs back in the queue."""
    first = store.unpublished_since()
    if first is not None:
        job_ids = store.job_ids_since(first)
        log.info("writing the status files of jobs registered just before the last stop", jobs=len(job_ids))
        publisher.publish_many(job_ids)
        store.published(first)
    jobs.requeue_orphans("the daemon restarted while this job ran; it resumes")


def remove_leftover_temporaries(settings: Settings) -> None:
    """Half-written files of a daemon or worker that crashed are deleted, never published."""
    remove_stale_temporaries([*settings.roots, settings.work_dir])


def remove_job_temporaries(store: Store, settings: Settings, job_id: int) -> None:
    """What the worker of a job that died was writing stays half-written under hidden names: remove it now,
    not at the next start."""
    job = store.job(job_id)
    folders = [settings.work_dir / f"job-{job_id:06d}"]
    if job and job.output_path:
        folders.append(Path(job.output_path).parent)
    remove_stale_temporaries(folders)


def sweep_work_folders(store: Store, settings: Settings) -> None:
    """Checkpoints nobody can use any more: of finished jobs, and of failed ones kept long enough for a retry."""
    kept_since = datetime.now(UTC) - timedelta(hours=settings.keep_failed_checkpoints_hours)
    for folder in settings.work_dir.glob("job-*"):
        job_id = folder.name.removeprefix("job-")
        job = store.job(int(job_id)) if job_id.isdigit() else None
        if job is None or job.state in (JobState.DONE, JobState.CANCELLED) or (job.state == JobState.FAILED and (
                not job.finished_at or datetime.fromisoformat(job.finished_at) <= kept_since)):
            if job is not None:
                remove_job_files(job, settings.work_dir)
            else:
                shutil.rmtree(folder, ignore_errors=True)
            log.info("removed checkpoints", job=job and job.id, state=job and job.state)


def requeue_before_exit(database: Path) -> None:
    """On a second signal: put the running jobs back in the queue and say so in their status files, so
    nobody reads "about 2 s left" until the next start. Through a connection of its own, since the
    signal may have interrupted the loop inside a transaction; given up after a moment if it cannot."""
    try:
        store = Store.open(database)
        store.db.execute(f"PRAGMA busy_timeout = {int(EXIT_BUSY_SECONDS * 1000)}")
        try:
            for job in store.jobs((JobState.RUNNING,)):
                if job.cancel_reason:
                    continue  # the next start finishes the cancel
                store.requeue(job.id, "interrupted", "stopped at once by a second signal",
                              error="stopped at once by a second signal; resumes from its last chunk")
                publish_newest(store, job.id)
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - exiting now matters more; the next start requeues them anyway
        log.warning("running jobs not requeued before exiting; the next start does it", exc_info=True)
