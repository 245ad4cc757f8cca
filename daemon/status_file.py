"""The status file beside each request: what a user sees without opening anything else."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import structlog

from daemon.conventions import shown, status_path
from daemon.db import utc_iso, utc_now
from daemon.progress import describe
from daemon.states import Job, JobState
from engine.errors import DiskFullError
from engine.files import fsync_dir, write_json_atomic

log = structlog.get_logger("hotshot.status")
# Status files written at once after a batch of registrations. Each is still written to a temporary name,
# flushed to disk and renamed; the flushes wait on the disk, not the CPU, and many at once share its work.
WRITERS = 16

MESSAGES = {
    JobState.WAITING: "waiting",
    JobState.QUEUED: "queued",
    JobState.RUNNING: "rendering",
    JobState.DONE: "done",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


def status_document(job: Job) -> dict:
    """The JSON a user reads to learn where their request stands."""
    state = job.state
    settings = job.settings or {}
    doc: dict = {
        "request": Path(job.request_path).name,
        "job": job.id,
        "state": state,
        "message": MESSAGES.get(state, state),
        "updated": utc_now(),
        "attempts": job.attempts or 0,
        "priority": job.priority or 0,
    }
    for name in ("source", "model", "frame_range"):
        if name in settings:
            doc[name] = settings[name]["value"]
    if job.window:
        doc["window"] = job.window
    if job.estimate:
        doc["estimate"] = job.estimate
    if state == JobState.WAITING:
        doc["message"] = job.wait_reason or "waiting"
        if job.start_at is not None:
            doc["starts_at"] = utc_iso(job.start_at)
        elif job.wait_deadline:
            doc["gives_up_at"] = utc_iso(job.wait_deadline)
    if state in (JobState.QUEUED, JobState.RUNNING) and job.error:
        doc["last_error"] = job.error
    if state == JobState.QUEUED and job.not_before:
        doc["retry_at"] = utc_iso(job.not_before)
    if state == JobState.RUNNING:
        doc["worker"] = job.worker
        if job.progress:
            doc["progress"] = job.progress
            doc["message"] = _running_message(job.progress)
            doc["timing"] = _timing(job, job.progress.get("elapsed_seconds"), job.progress.get("eta_seconds"))
        if job.cancel_reason:
            doc["message"] = f"stopping: {job.cancel_reason}"
    if state == JobState.DONE:
        doc["outputs"] = job.outputs or {}
        doc["message"] = f"done: {doc['outputs'].get('video', '')}"
        doc["timing"] = _timing(job, doc["outputs"].get("seconds"), 0)
    if state in (JobState.FAILED, JobState.CANCELLED):
        doc["error"] = job.error or state
        doc["message"] = f"{state}: {doc['error']}"
    return doc


def write_status(job: Job, sync_folder: bool = True) -> tuple[Path, dict]:
    """Write the status file of `job`; return its path and what was written. Without `sync_folder` the caller
    makes its rename durable (`fsync_dir` of its folder) before counting it written."""
    path = status_path(Path(job.request_path))
    document = status_document(job)
    write_json_atomic(path, document, fault_point="status", sync_folder=sync_folder)
    return path, document


def write_refusal(request: Path, error: str) -> None:
    """The status of a request that could not be registered, so no job holds it; best effort."""
    document = {"request": shown(request.name), "job": None, "state": JobState.FAILED, "message": f"failed: {error}",
                "updated": utc_now(), "error": error}
    try:
        write_json_atomic(status_path(request), document, fault_point="status")
    except (OSError, DiskFullError) as exc:
        log.warning("status file not written", path=shown(request), error=str(exc))


def publish_newest(store, job_id: int) -> tuple[Job, Path, dict] | None:
    """Write a job's status file if it is the newest job of its request; return the job, path and document.

    An older version of an edited request never overwrites the status of the newer one. A status file
    that cannot be written (the shot folder is gone, the share is read-only) is logged, not raised.
    """
    newest = store.newest_jobs([job_id])
    return _write_logged(newest[0]) if newest else None


def publish_newest_many(store, job_ids: list[int]) -> list[tuple[Job, Path, dict]]:
    """`publish_newest` for many jobs (a batch of registrations), their files written WRITERS at a time."""
    jobs = store.newest_jobs(job_ids)
    if len(jobs) <= 1:
        written = [_write_logged(job) for job in jobs]
    else:
        with ThreadPoolExecutor(min(WRITERS, len(jobs)), thread_name_prefix="status-writer") as pool:
            written = list(pool.map(_write_logged, jobs))
    return [item for item in written if item is not None]


class BatchWrites:
    """The status files of registered batches, written on WRITERS threads while the loop registers the next
    batch (the CPU of registering and the disk time of the flushes overlap instead of adding up).

    A batch's jobs are read on the loop's thread when it is handed over, so the writers never touch the
    database. The store's note of the first job without a status file (`Store.note_unpublished`) always names
    the first job of the oldest batch still being written: when a batch is done and a later one is still
    being written, the note is moved on to the later batch's first job, and only when none is left is it
    cleared. A crash in between leaves the note, and the next start writes every status file from there on.
    A job whose status changes again before its batch's file is written waits for it first (`wait_for`), so an
    older document never lands over a newer one."""

    IN_FLIGHT = 2  # batches handed over and not yet written, at most: the loop waits for the oldest beyond

    def __init__(self, store) -> None:
        self.store = store
        self._pool: ThreadPoolExecutor | None = None
        self._batches: deque[tuple[list[int], list[Future]]] = deque()
        self._pending: set[int] = set()

    def __len__(self) -> int:
        return len(self._batches)

    def submit(self, job_ids: list[int]) -> list[tuple[Job, Path, dict]]:
        """Start writing the status files of a committed batch whose note names `job_ids[0]`; return what
        earlier batches finished meanwhile (to announce)."""
        done = self.wait(len(self._batches) - self.IN_FLIGHT + 1)
        jobs = self.store.newest_jobs(job_ids)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="status-writer")
        # Each file is flushed before its rename; the renames are made durable with one fsync of each folder
        # once its files are written (a folder fsync a file cost as much CPU as the rest of its write but the
        # flush), on the writer threads too: the batch counts as written when those are done.
        files = [self._pool.submit(_write_logged, job, False) for job in jobs]
        folders: dict[Path, list[Future]] = {}
        for job, file in zip(jobs, files, strict=True):
            folders.setdefault(Path(job.request_path).parent, []).append(file)
        syncs = [self._pool.submit(_sync_folder, folder, written) for folder, written in folders.items()]
        self._batches.append((job_ids, [*files, *syncs]))
        self._pending.update(job_ids)
        return done

    def finished(self) -> list[tuple[Job, Path, dict]]:
        """Retire the batches whose files are all written, oldest first, without waiting."""
        count = 0
        for _ids, futures in self._batches:
            if not all(future.done() for future in futures):
                break
            count += 1
        return self.wait(count)

    def wait_for(self, job_id: int) -> list[tuple[Job, Path, dict]]:
        """Wait until the status file `job_id`'s batch is writing (if any) is written."""
        if job_id not in self._pending:
            return []
        count = next(index for index, (ids, _futures) in enumerate(self._batches) if job_id in ids) + 1
        return self.wait(count)

    def wait(self, count: int | None = None) -> list[tuple[Job, Path, dict]]:
        """Wait for the oldest `count` batches (all by default) and retire them: move the store's note on."""
        written = []
        for _ in range(len(self._batches) if count is None else max(0, min(count, len(self._batches)))):
            job_ids, futures = self._batches[0]
            wait(futures)
            self._batches.popleft()
            self._pending.difference_update(job_ids)
            results = [future.result() for future in futures]  # an unexpected error: the note stays
            self.store.published(job_ids[0], self._batches[0][0][0] if self._batches else None)
            written.extend(item for item in results if item is not None)
        if not self._batches and self._pool is not None:
            self._pool.shutdown()  # no threads are left behind between drops (they are all idle now)
            self._pool = None
        return written

    def close(self) -> list[tuple[Job, Path, dict]]:
        return self.wait()


def _sync_folder(folder: Path, files: list[Future]) -> None:
    """Once `folder`'s status files are written, make their renames durable. They were submitted to the same
    pool before this, so they never wait behind it."""
    wait(files)
    fsync_dir(folder)


def _write_logged(job: Job, sync_folder: bool = True) -> tuple[Job, Path, dict] | None:
    try:
        path, document = write_status(job, sync_folder)
    except (OSError, DiskFullError) as exc:
        log.warning("status file not written", job=job.id, error=str(exc))
        return None
    return job, path, document


def _running_message(progress: dict) -> str:
    text = describe(progress)  # "loading model" before the first chunk, not "chunk 0/4"
    text = f"rendering {text}" if text.startswith("chunk") else text
    if progress.get("percent") is not None:
        text += f", {progress['percent']:.0f}%"
    if progress.get("eta_seconds") is not None:
        text += f", about {progress['eta_seconds']:.0f} s left"
    return text


def _timing(job: Job, elapsed: float | None, eta: float | None) -> dict:
    """The estimate beside the time taken so far and the time it is now expected to take."""
    expected = None if elapsed is None or eta is None else round(elapsed + eta, 1)
    return {"estimate_seconds": (job.estimate or {}).get("seconds"), "elapsed_seconds": elapsed,
            "expected_seconds": expected}


