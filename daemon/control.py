"""Operator commands: cancel, retry, pause and resume.

The CLI never changes job state behind a running daemon's back. While a daemon
holds the state lock, a command is left in the `commands` table; the daemon
carries it out on its loop and answers in the same row. With no daemon
running, the CLI takes the lock itself and carries the command out on the
database directly, with the same code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from daemon.config import Settings
from daemon.errors import CommandRefused, ConfigError
from daemon.listing import archived_job
from daemon.notify import RootNotifiers
from daemon.pidfile import LOCK_FILE
from daemon.roots import ROOT_LOCK_FILE
from daemon.scan import stale_temporaries
from daemon.schedule import Schedule
from daemon.sources import queued_identity, same_as_queued
from daemon.states import ACTIVE_STATES, CommandState, Job, JobState
from daemon.status_file import publish_newest
from daemon.store import Store
from engine.files import FileLock, temp_stem

log = structlog.get_logger("hotshot.control")
COMMANDS = ("cancel", "retry", "pause", "resume")
PAUSED = "paused"
ANSWER_SECONDS = 15.0


@dataclass
class Outcome:
    """What a command did, for the operator; `stopping` lists running jobs still winding down."""

    message: str
    stopping: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class Commands:
    """Carries out operator commands on the store.

    `stop_running(job, reason)` asks a worker to drop a running job and returns
    True when one will (the daemon finishes the cancel when the worker stops);
    without it, as with no daemon running, a running job is cancelled at once.
    """

    def __init__(self, store: Store, settings: Settings, schedule: Schedule, publish: Callable[[int], None],
                 stop_running: Callable[[Job, str], bool] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.schedule = schedule
        self.publish = publish
        self.stop_running = stop_running

    def apply(self, command: str, target: str | None) -> Outcome:
        match command:
            case "cancel":
                return self.cancel(target or "")
            case "retry":
                return self.retry(target or "")
            case "pause":
                return self.pause()
            case "resume":
                return self.resume()
            case _:
                raise CommandRefused(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")

    # -- cancel ---------------------------------------------------------------

    def cancel(self, target: str, reason: str = "cancelled with `hotshot cancel`") -> Outcome:
        """Cancel a job by id, or the active jobs of a request file."""
        if target.isdigit():
            job = self._job(target)
            if job.state not in ACTIVE_STATES:
                raise CommandRefused(f"job {job.id} is {job.state}, not waiting, queued or running; "
                                     "only those can be cancelled")
            jobs = [job]
        else:
            jobs = self.store.active_jobs_for(target)
            if not jobs:
                raise CommandRefused(f"{target} has no waiting, queued or running job")
        return self._cancel_all(jobs, reason)

    def cancel_request(self, request_path: str, reason: str) -> Outcome:
        """Cancel every active job of a request file (it was deleted, or says "cancel": true)."""
        return self._cancel_all(self.store.active_jobs_for(request_path), reason)

    def _cancel_all(self, jobs: list[Job], reason: str) -> Outcome:
        stopping = [job.id for job in jobs if self.cancel_job(job, reason)]
        done = [job.id for job in jobs if job.id not in stopping]
        parts = []
        if done:
            parts.append(f"cancelled job{'s' if len(done) > 1 else ''} {', '.join(map(str, done))}")
        if stopping:
            parts.append(f"job{'s' if len(stopping) > 1 else ''} {', '.join(map(str, stopping))} stopping "
                         "at the next diffusion step")
        return Outcome("; ".join(parts) or "nothing to cancel", stopping)

    def cancel_job(self, job: Job, reason: str) -> bool:
        """Cancel one job; True when a worker is still stopping it."""
        if job.state == JobState.RUNNING and self.stop_running is not None and self.stop_running(job, reason):
            return True
        self.finish_cancel(job, reason)
        return False

    def finish_cancel(self, job: Job, reason: str) -> None:
        """Record the cancel, remove the job's checkpoints and temporary files, and say so in its status."""
        self.store.cancel(job.id, reason)
        remove_job_files(job, self.settings.work_dir)
        log.info("job cancelled", job=job.id, reason=reason)
        self.publish(job.id)

    # -- retry ----------------------------------------------------------------

    def retry(self, target: str) -> Outcome:
        """Put a failed or cancelled job back in line; it resumes from its checkpoints."""
        job = self._job(target) if target.isdigit() else self.store.latest_job_for(target)
        if job is None:
            raise CommandRefused(f"{target} has no job")
        name = f"job {job.id}"
        if job.state in ACTIVE_STATES:
            raise CommandRefused(f"{name} is already {job.state}")
        if job.state == JobState.DONE:
            raise CommandRefused(f"{name} is done; to render again, change the request (a new seed, say) and save it")
        latest = self.store.latest_job_for(job.request_path)
        if latest.id != job.id:
            raise CommandRefused(f"{name} is an older version of {job.request_path}; "
                                 f"its newest version is job {latest.id}")
        if not Path(job.request_path).exists():
            raise CommandRefused(f"the request file {job.request_path} of {name} is gone; put it back, then retry")
        request = self.store.request(job.request_id)
        with contextlib.suppress(ValueError, TypeError, AttributeError, RecursionError):
            if json.loads(request["raw"]).get("cancel") is True:
                raise CommandRefused(f'the request of {name} says "cancel": true; edit the request instead')

        now = self.schedule.clock()
        changed = source_changed(job)
        if changed:
            # Its checkpoints come from a file that is not there any more: resolve and render it from the start.
            remove_job_files(job, self.settings.work_dir)
            self.store.retry(job.id, JobState.WAITING, from_start=True, created_ts=now, wait_deadline=now,
                             wait_reason="checking the request again", window=None, start_at=None)
            message = f"{name}'s source changed since it was queued; it will be checked again and rendered " \
                      "from the start"
        elif not job.settings:
            # Never resolved: its request or its source was at fault. Check it again from the start.
            self.store.retry(job.id, JobState.WAITING, created_ts=now, wait_deadline=now,
                             wait_reason="checking the request again", window=None, start_at=None)
            message = f"{name} will be checked again"
        elif job.scheduled:
            self.store.retry(job.id, JobState.WAITING,
                             wait_reason=self.schedule.describe(job.window, job.start_at))
            message = f"{name} is back in line for its start time"
        else:
            self.store.retry(job.id, JobState.QUEUED, wait_reason=None)
            message = f"{name} is queued again"
        chunks = len(self.store.chunks(job.id))
        if job.settings and not changed:
            message += f"; it resumes after {chunks} finished chunk(s)" if chunks else "; it starts at the first chunk"
        log.info("job retried", job=job.id, chunks_done=chunks)
        self.publish(job.id)
        return Outcome(message)

    # -- pause ----------------------------------------------------------------

    def pause(self) -> Outcome:
        if self.store.flag(PAUSED) == "1":
            return Outcome("claiming is already paused")
        self.store.set_flag(PAUSED, "1")
        log.warning("claiming paused")
        return Outcome("paused: no new job starts (running jobs finish); `hotshot resume` starts claiming again")

    def resume(self) -> Outcome:
        if self.store.flag(PAUSED) != "1":
            return Outcome("claiming was not paused")
        self.store.set_flag(PAUSED, "0")
        log.warning("claiming resumed")
        return Outcome("resumed: queued jobs start as workers become free")

    def _job(self, target: str) -> Job:
        job = self.store.job(int(target))
        if job is None:
            if archived_job(self.store, int(target)) is not None:
                raise CommandRefused(f"job {target} is archived (it ended more than archive_after_days ago); "
                                     "it is history now: save its request again to render again")
            raise CommandRefused(f"there is no job {target}")
        return job


def source_changed(job: Job) -> bool:
    """Whether the source a job was queued (or first claimed) for is gone, or is another file (or other bytes)
    now."""
    identity = queued_identity(job)
    if identity is None:
        return False
    try:
        st = os.lstat(identity["source_path"])
    except OSError:
        return True
    return not same_as_queued(st, identity)


def remove_job_files(job: Job, work_dir: Path, keep_checkpoints: bool = False) -> None:
    """Remove a job's checkpoints (unless kept for a retry) and the hidden temporary outputs it may have left
    beside its output; never a finished file."""
    if not keep_checkpoints:
        shutil.rmtree(work_dir / f"job-{job.id:06d}", ignore_errors=True)
    output = Path(job.output_path) if job.output_path else None
    if output is None:
        return
    manifest = Path(job.manifest_path) if job.manifest_path else None
    # Temporaries are named after a digest of the final name; the plain names are those of older versions.
    patterns = [f".{temp_stem(output.name)}.*.part", f".{output.name}.*.part", f".{output.stem}.frames.part"]
    if manifest is not None:
        patterns += [f".{temp_stem(manifest.name)}.*.part", f".{manifest.name}.*.part"]
    for pattern in patterns:
        for path in output.parent.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            log.info("removed a temporary file of a job that ended", path=str(path))


def remove_stale_temporaries(folders: list[Path]) -> None:
    """Remove hotshot's temporary files under `folders` whose writing process is gone (it crashed or was killed)."""
    for path in stale_temporaries([folder for folder in folders if folder.is_dir()]):
        with contextlib.suppress(OSError):
            path.unlink()
            log.info("removed a stale temporary file", path=str(path))


def state_lock(state_dir: Path, wait_seconds: float = 0.0) -> FileLock | None:
    """The state folder's lock, or None when another process (a daemon) holds it for `wait_seconds`."""
    lock = FileLock(state_dir / LOCK_FILE)
    return lock if lock.acquire(wait_seconds) else None


def root_lock(root: Path, state_dir: Path) -> FileLock | None:
    """The lock of a watch root, held while a daemon watches it: two daemons rendering one root would write
    the same render names over each other. Raises ConfigError naming the holder (host, pid, state folder);
    None where the root cannot hold a lock file (read-only), which is logged."""
    lock = FileLock(root / ROOT_LOCK_FILE)
    try:
        taken = lock.acquire(wait=0.0)
    except OSError as exc:
        log.warning("watch root cannot hold a lock file; another daemon on it would not be noticed",
                    root=str(root), error=str(exc))
        return None
    if not taken:
        try:
            who = json.loads(lock.path.read_text().strip() or "{}")
        except (OSError, ValueError):
            who = {}
        raise ConfigError(
            f"watch root {root} is watched by another hotshot daemon (host {who.get('host', '?')}, pid "
            f"{who.get('pid', '?')}, state dir {who.get('state_dir', '?')}; lock file {lock.path}): one root is "
            "rendered by one daemon, or both would write the same render names. Stop that daemon, or give "
            "this one other roots") from None
    lock.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "state_dir": str(state_dir)}))
    return lock


def run_command(settings: Settings, command: str, target: str | None = None,
                answer_seconds: float = ANSWER_SECONDS) -> Outcome:
    """Carry out a command: through the running daemon, or on the database when none is running."""
    lock = state_lock(settings.state_dir)
    if lock is not None:
        try:
            store = Store.open(settings.database)
            try:
                commands = Commands(store, settings, Schedule(settings.render_windows, time.time),
                                    _offline_publisher(store, settings))
                return commands.apply(command, target)
            finally:
                store.close()
        finally:
            lock.release()

    store = Store.open(settings.database)
    try:
        command_id = store.submit_command(command, target)
        row = _wait_for(lambda: (found := store.command(command_id))["state"] != CommandState.PENDING and found,
                        answer_seconds)
        if not row:
            return Outcome(f"the daemon has not taken the command within {answer_seconds:g} s; "
                           "it carries it out when it does")
        result = json.loads(row["result"])
        if row["state"] == CommandState.REFUSED:
            raise CommandRefused(result["message"])
        outcome = Outcome(**result)
        for job_id in outcome.stopping:
            ended = _wait_for(lambda job_id=job_id: store.job(job_id).state != JobState.RUNNING, answer_seconds)
            state = store.job(job_id).state
            outcome.message += (f"; job {job_id} {state}" if ended
                                else f"; job {job_id} is still stopping (its status file will say when)")
        return outcome
    finally:
        store.close()


def _wait_for(condition: Callable[[], object], seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.1)


def _offline_publisher(store: Store, settings: Settings) -> Callable[[int], None]:
    """Status files and notifications for commands carried out with no daemon running."""
    notifiers = RootNotifiers((route.root, route) for route in settings.notify)

    def publish(job_id: int) -> None:
        published = publish_newest(store, job_id)
        if published is None:
            return
        job, path, document = published
        for notifier in notifiers.for_request(Path(job.request_path)):
            notifier.notify(job.state, path, document)

    return publish
