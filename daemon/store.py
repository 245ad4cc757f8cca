"""The state database: shots, media, requests, jobs, chunks and an audit trail.

The daemon is its only writer. Multi-step changes happen in one transaction;
claims take the write lock up front (`BEGIN IMMEDIATE`). The CLI opens the same
file read-only and never writes behind the daemon's back.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from daemon.schema import migrations

BUSY_TIMEOUT_SECONDS = 30.0
ACTIVE_STATES = ("waiting", "queued", "running")
FINISHED_STATES = ("done", "failed", "cancelled")
JSON_COLUMNS = ("probe", "settings", "spec", "estimate", "progress", "outputs", "data")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def utc_iso(epoch: float) -> str:
    """An epoch time as ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    for column in JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def _encode(values: dict) -> dict:
    return {
        key: json.dumps(value, default=str) if key in JSON_COLUMNS and value is not None else value
        for key, value in values.items()
    }


def connect(path: Path | None, read_only: bool = False) -> Database:
    """Open (and for writers, migrate) the database; `None` means in memory."""
    if path is None:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
    elif read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS,
                               check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    db = Database(conn)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    if not read_only:
        if path is not None:
            db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        migrations.apply(db)
    return db


class Store:
    """Queries and state changes, each a complete unit of work."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path | None, read_only: bool = False) -> Store:
        return cls(connect(path, read_only))

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def immediate(self) -> Iterator[None]:
        """A write transaction that takes the lock at once, so a claim cannot race."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _one(self, sql: str, params: tuple | list = ()) -> dict | None:
        row = self.db.execute(sql, params).fetchone()
        return _decode(dict(row)) if row else None

    def _all(self, sql: str, params: tuple | list = ()) -> list[dict]:
        return [_decode(dict(row)) for row in self.db.execute(sql, params).fetchall()]

    # -- shots ---------------------------------------------------------------

    def shot_id(self, folder: Path, root: Path) -> int:
        row = self._one("SELECT id FROM shots WHERE path = ?", (str(folder),))
        if row:
            return row["id"]
        rel = str(folder.relative_to(root)) if folder != root else "."
        with self.db.atomic():
            return self.db["shots"].insert(
                {"root": str(root), "path": str(folder), "rel": rel, "created_at": utc_now()}
            ).last_pk

    def shot(self, shot_id: int) -> dict | None:
        return self._one("SELECT * FROM shots WHERE id = ?", (shot_id,))

    def shots(self) -> list[dict]:
        return self._all("SELECT * FROM shots ORDER BY root, rel")

    # -- media ---------------------------------------------------------------

    def media_at(self, path: Path) -> dict | None:
        return self._one("SELECT * FROM media WHERE path = ?", (str(path),))

    def media(self, media_id: int) -> dict | None:
        return self._one("SELECT * FROM media WHERE id = ?", (media_id,))

    def media_in_shot(self, shot_id: int) -> list[dict]:
        return self._all("SELECT * FROM media WHERE shot_id = ? ORDER BY name", (shot_id,))

    def save_media(self, path: Path, shot_id: int, **values: Any) -> int:
        """Insert or update the media row for `path`; return its id."""
        now = utc_now()
        values = _encode({**values, "updated_at": now})
        with self.db.atomic():
            existing = self._one("SELECT id FROM media WHERE path = ?", (str(path),))
            if existing:
                self.db["media"].update(existing["id"], values)
                return existing["id"]
            return self.db["media"].insert(
                {"path": str(path), "name": path.name, "shot_id": shot_id, "created_at": now, **values}
            ).last_pk

    # -- requests ------------------------------------------------------------

    def request_version(self, path: Path, content_hash: str) -> dict | None:
        return self._one("SELECT * FROM requests WHERE path = ? AND content_hash = ?", (str(path), content_hash))

    def latest_request(self, path: Path) -> dict | None:
        return self._one("SELECT * FROM requests WHERE path = ? ORDER BY id DESC LIMIT 1", (str(path),))

    def request(self, request_id: int) -> dict | None:
        return self._one("SELECT * FROM requests WHERE id = ?", (request_id,))

    def touch_request(self, request_id: int, size: int, mtime_ns: int) -> None:
        with self.db.atomic():
            self.db["requests"].update(request_id, {"size": size, "mtime_ns": mtime_ns})

    def known_files(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every media file and the latest version of every request, by path."""
        seen = {row["path"]: (row["size"], row["mtime_ns"]) for row in
                self._all("SELECT path, size, mtime_ns FROM media")}
        for row in self._all(
            "SELECT path, size, mtime_ns FROM requests WHERE id IN (SELECT MAX(id) FROM requests GROUP BY path)"
        ):
            seen[row["path"]] = (row["size"], row["mtime_ns"])
        return seen

    # -- jobs ----------------------------------------------------------------

    def add_request_and_job(self, request: dict, job: dict, cancels_older: str | None = None) -> int:
        """Record a new request version and its job; return the job id.

        In the same transaction, so that a crash cannot leave two versions alive, the older versions' jobs
        that have not started are superseded, or with `cancels_older` (the new version says "cancel": true)
        cancelled for that reason, and their running jobs marked for cancelling.
        """
        now = utc_now()
        with self.db.atomic():
            request_id = self.db["requests"].insert({**request, "created_at": now}).last_pk
            job_id = self.db["jobs"].insert(_encode({
                **job, "request_id": request_id, "created_at": now, "updated_at": now,
            })).last_pk
            self._event("job created", job_id=job_id, shot_id=job.get("shot_id"), path=job["request_path"],
                        message=job["state"])
            if cancels_older:
                for older in self._all("SELECT id, state FROM jobs WHERE request_path = ? AND id != ? AND "
                                       "state IN ('waiting', 'queued', 'running')", (job["request_path"], job_id)):
                    if older["state"] == "running":
                        self.update_job(older["id"], "cancelling", cancels_older, cancel_reason=cancels_older)
                    else:
                        self.cancel_job(older["id"], cancels_older)
            else:
                self.supersede(job["request_path"], keep_job=job_id)
        return job_id

    def job(self, job_id: int) -> dict | None:
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def jobs(self, states: tuple[str, ...] | None = None) -> list[dict]:
        if states is None:
            return self._all("SELECT * FROM jobs ORDER BY id")
        marks = ",".join("?" * len(states))
        return self._all(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states)

    def queue(self) -> list[dict]:
        """Active jobs: running, then queued in the order they will be claimed, then waiting by start time."""
        return self._all(
            "SELECT * FROM jobs WHERE state IN ('running', 'queued', 'waiting') "
            "ORDER BY CASE state WHEN 'running' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END, "
            "CASE WHEN state = 'waiting' THEN COALESCE(start_at, 0) ELSE 0 END, priority DESC, full_clip, id"
        )

    def active_jobs_for(self, request_path: str) -> list[dict]:
        return self._all("SELECT * FROM jobs WHERE request_path = ? AND state IN ('waiting', 'queued', 'running') "
                         "ORDER BY id", (request_path,))

    def in_windows(self, state: str) -> list[dict]:
        """Jobs in `state` that belong to a render window."""
        return self._all("SELECT * FROM jobs WHERE state = ? AND window IS NOT NULL ORDER BY id", (state,))

    def latest_job_for(self, request_path: str) -> dict | None:
        return self._one("SELECT * FROM jobs WHERE request_path = ? ORDER BY id DESC LIMIT 1", (request_path,))

    def update_job(self, job_id: int, event: str | None = None, message: str | None = None, **values: Any) -> None:
        with self.db.atomic():
            self.db["jobs"].update(job_id, _encode({**values, "updated_at": utc_now()}))
            if event:
                self._event(event, job_id=job_id, message=message or values.get("state"))

    def set_progress(self, job_id: int, progress: dict) -> None:
        with self.db.atomic():
            self.db["jobs"].update(job_id, _encode({"progress": progress, "updated_at": utc_now()}))

    def supersede(self, request_path: str, keep_job: int) -> list[int]:
        """Cancel the not-yet-started jobs of older versions of a request; return their ids."""
        older = [row["id"] for row in self._all(
            "SELECT id FROM jobs WHERE request_path = ? AND id != ? AND state IN ('waiting', 'queued')",
            (request_path, keep_job),
        )]
        for job_id in older:
            self.update_job(job_id, "superseded", "the request file was edited; its new version is a new job",
                            state="cancelled", error="superseded by a newer version of the request",
                            finished_at=utc_now())
        return older

    def claim_next(self, worker: str, now: float, loaded_models: frozenset[str] = frozenset(),
                   skip_roots: list[str] | tuple[str, ...] = ()) -> dict | None:
        """Atomically move the first claimable queued job to running for `worker`.

        The order is priority (higher first), range renders before full clips,
        then jobs whose model the worker has loaded, then age: a loaded model
        only breaks ties, so it never holds back a more urgent job. Jobs of
        shots under `skip_roots` (watch roots that are away) are not claimed.
        """
        models = sorted(loaded_models)
        affinity = (f"json_extract(settings, '$.model.value') IN ({','.join('?' * len(models))}) DESC, "
                    if models else "")
        skip = (f"AND shot_id NOT IN (SELECT id FROM shots WHERE root IN ({','.join('?' * len(skip_roots))})) "
                if skip_roots else "")
        with self.immediate():
            row = self.db.execute(
                f"SELECT id FROM jobs WHERE state = 'queued' AND (not_before IS NULL OR not_before <= ?) {skip}"
                f"ORDER BY priority DESC, full_clip, {affinity}id LIMIT 1",
                (now, *skip_roots, *models),
            ).fetchone()
            if row is None:
                return None
            stamp = utc_now()
            self.db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = ?, started_at = ?, "
                "updated_at = ?, not_before = NULL, error = NULL, error_kind = NULL WHERE id = ? AND state = 'queued'",
                (worker, stamp, stamp, row["id"]),
            )
            self._event("claimed", job_id=row["id"], message=worker)
        return self.job(row["id"])

    def next_render_number(self, shot_id: int) -> int:
        row = self._one(
            "SELECT MAX(n) AS n FROM (SELECT MAX(render_number) AS n FROM jobs WHERE shot_id = ? "
            "UNION ALL SELECT 0)",
            (shot_id,),
        )
        return (row["n"] or 0) + 1

    def uncount_attempt(self, job_id: int) -> None:
        """An attempt that was paused rather than failed does not count against the limit."""
        with self.db.atomic():
            self.db.execute("UPDATE jobs SET attempts = MAX(attempts - 1, 0) WHERE id = ?", (job_id,))

    def cancel_job(self, job_id: int, reason: str) -> None:
        """Mark a job cancelled; its checkpoints are gone, so a retry starts from the first chunk."""
        with self.db.atomic():
            self.db["jobs"].update(job_id, _encode({
                "state": "cancelled", "error": reason, "error_kind": "cancelled", "worker": None,
                "cancel_reason": None, "finished_at": utc_now(), "updated_at": utc_now(),
            }))
            self.db.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
            self._event("cancelled", job_id=job_id, message=reason)

    def retry_job(self, job_id: int, state: str, **values: Any) -> None:
        """Put a failed or cancelled job back in line with a fresh count of attempts."""
        self.update_job(job_id, "retried", state, state=state, attempts=0, error=None, error_kind=None,
                        cancel_reason=None, not_before=None, finished_at=None, progress=None, worker=None,
                        **values)

    # -- chunks --------------------------------------------------------------

    def add_chunk(self, job_id: int, record: dict) -> None:
        with self.db.atomic():
            self.db["chunks"].upsert({
                "job_id": job_id, "idx": record["index"], "first_frame": record["start"],
                "last_frame": record["end"], "seed": record["seed"], "seconds": record["seconds"],
                "raw_path": record["raw_path"], "segment_path": record["segment_path"], "created_at": utc_now(),
            }, pk=("job_id", "idx"))

    def chunks(self, job_id: int) -> list[dict]:
        return self._all("SELECT * FROM chunks WHERE job_id = ? ORDER BY idx", (job_id,))

    def clear_chunks(self, job_id: int) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))

    # -- cost history --------------------------------------------------------

    def record_costs(self, job_id: int, sample: dict) -> None:
        """Keep what a finished render did and how long each part took (`cost_sample`), for the estimates."""
        with self.db.atomic():
            self._event("costs", job_id=job_id, data=sample)

    def cost_history(self, model: str, device: str, limit: int = 40) -> list[dict]:
        """The recorded costs of the latest renders of a model on a device kind, newest first."""
        rows = self._all(
            "SELECT data FROM events WHERE kind = 'costs' AND json_extract(data, '$.model') = ? "
            "AND json_extract(data, '$.device') = ? ORDER BY id DESC LIMIT ?", (model, device, limit))
        return [row["data"] for row in rows]

    # -- flags and commands --------------------------------------------------

    def flag(self, name: str) -> str | None:
        row = self._one("SELECT value FROM flags WHERE name = ?", (name,))
        return row["value"] if row else None

    def set_flag(self, name: str, value: str) -> None:
        with self.db.atomic():
            self.db["flags"].upsert({"name": name, "value": value, "updated_at": utc_now()}, pk="name")
            self._event("flag", message=f"{name}={value}")

    def submit_command(self, command: str, target: str | None) -> int:
        """Leave a command for the running daemon (the CLI's only write while a daemon runs)."""
        with self.db.atomic():
            return self.db["commands"].insert({"command": command, "target": target, "state": "pending",
                                               "created_at": utc_now()}).last_pk

    def pending_commands(self) -> list[dict]:
        return self._all("SELECT * FROM commands WHERE state = 'pending' ORDER BY id")

    def command(self, command_id: int) -> dict | None:
        return self._one("SELECT * FROM commands WHERE id = ?", (command_id,))

    def finish_command(self, command_id: int, state: str, result: str) -> None:
        with self.db.atomic():
            self.db["commands"].update(command_id, {"state": state, "result": result, "handled_at": utc_now()})
            self._event(f"command {state}", message=result)

    # -- events --------------------------------------------------------------

    def event(self, kind: str, **values: Any) -> None:
        with self.db.atomic():
            self._event(kind, **values)

    def _event(self, kind: str, job_id: int | None = None, shot_id: int | None = None, path: str | None = None,
               message: str | None = None, data: dict | None = None) -> None:
        self.db["events"].insert(_encode({
            "at": utc_now(), "kind": kind, "job_id": job_id, "shot_id": shot_id, "path": path,
            "message": message, "data": data,
        }))

    def events(self, job_id: int | None = None) -> list[dict]:
        if job_id is None:
            return self._all("SELECT * FROM events ORDER BY id")
        return self._all("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,))
