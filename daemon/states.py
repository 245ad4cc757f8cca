"""The daemon's words for states and kinds, as enums, and the typed job record.

The values are the strings stored in the database and written to status
files, so a member compares equal to its text (`StrEnum`); a misspelt member
is an `AttributeError` at the line that wrote it, not a state nobody handles.
Which state may follow which is written once, in `daemon/transitions.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a job is in its life: waiting → queued → running → done, failed or cancelled."""

    WAITING = "waiting"      # for its source, a still, a start time or a render window
    QUEUED = "queued"        # in line for a worker
    RUNNING = "running"      # a worker has it
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATES

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


ACTIVE_STATES = (JobState.WAITING, JobState.QUEUED, JobState.RUNNING)
FINISHED_STATES = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class ErrorKind(StrEnum):
    """Why a job ended badly (or last failed): decides whether a retry can help."""

    REQUEST = "request"      # the request itself is at fault
    SOURCE = "source"        # its source never arrived
    TRANSIENT = "transient"  # a crash, a full disk, a dead worker: worth retrying
    INPUT = "input"          # the engine refused its input
    CANCELLED = "cancelled"


class MediaKind(StrEnum):
    ORIGINAL = "original"
    RENDER = "render"


class MediaState(StrEnum):
    READY = "ready"
    UNREADABLE = "unreadable"
    REFUSED = "refused"      # not a file hotshot may read (a link out of the root, a hard link ...) until it changes
    MISSING = "missing"


class CommandState(StrEnum):
    """A command the CLI left for the daemon: pending until the daemon answers it."""

    PENDING = "pending"
    DONE = "done"
    REFUSED = "refused"


@dataclass(frozen=True)
class Job:
    """One row of the `jobs` table, typed; JSON columns are decoded."""

    id: int
    request_id: int | None
    shot_id: int | None
    request_path: str
    state: JobState
    priority: int = 0
    full_clip: int = 0
    attempts: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    created_ts: float | None = None
    not_before: float | None = None
    wait_deadline: float | None = None
    wait_reason: str | None = None
    source_media_id: int | None = None
    render_number: int | None = None
    output_path: str | None = None
    manifest_path: str | None = None
    settings: dict | None = None
    spec: dict | None = None
    estimate: dict | None = None
    progress: dict | None = None
    outputs: dict | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    worker: str | None = None
    window: str | None = None
    start_at: float | None = None
    cancel_reason: str | None = None
    source_path: str | None = None          # the source as queued: what the claim checks it still is
    source_size: int | None = None
    source_mtime_ns: int | None = None
    source_inode: int | None = None
    source_ctime_ns: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        """The record of a decoded row; a column this record does not know is an error, not dropped."""
        unknown = set(row) - _JOB_FIELDS
        if unknown:
            raise TypeError(f"jobs row has columns the Job record lacks: {sorted(unknown)}")
        values = dict(row)
        values["state"] = JobState(values["state"])
        if values.get("error_kind") is not None:
            values["error_kind"] = ErrorKind(values["error_kind"])
        return cls(**values)

    @property
    def scheduled(self) -> bool:
        """Whether it belongs to a render window or has a start time."""
        return self.window is not None or self.start_at is not None

    @property
    def estimate_seconds(self) -> float | None:
        return (self.estimate or {}).get("seconds")


_JOB_FIELDS = {field.name for field in fields(Job)}
