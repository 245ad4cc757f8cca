"""The state database's schema, as ordered, named migrations."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("hotshot")


@migrations()
def m001_initial(db: Database) -> None:
    db["shots"].create(
        {"id": int, "root": str, "path": str, "rel": str, "created_at": str},
        pk="id", not_null={"root", "path"},
    )
    db["shots"].create_index(["path"], unique=True)

    db["media"].create(
        {
            "id": int, "shot_id": int, "path": str, "name": str,
            "kind": str,          # original | render
            "state": str,         # ready | unreadable | refused | missing
            "size": int, "mtime_ns": int,
            "probe": str, "error": str,
            "parent_id": int, "root_id": int, "job_id": int,
            "created_at": str, "updated_at": str,
        },
        pk="id", foreign_keys=[("shot_id", "shots", "id")], not_null={"shot_id", "path", "kind", "state"},
    )
    db["media"].create_index(["path"], unique=True)
    db["media"].create_index(["shot_id"])

    db["requests"].create(
        {
            "id": int, "shot_id": int, "path": str, "content_hash": str,
            "size": int, "mtime_ns": int, "raw": str, "created_at": str,
        },
        pk="id", foreign_keys=[("shot_id", "shots", "id")], not_null={"path", "content_hash"},
    )
    db["requests"].create_index(["path", "content_hash"], unique=True)

    db["jobs"].create(
        {
            "id": int, "request_id": int, "shot_id": int, "request_path": str,
            "state": str,         # waiting | queued | running | done | failed | cancelled
            "priority": int, "full_clip": int, "attempts": int,
            "created_at": str, "updated_at": str, "started_at": str, "finished_at": str,
            "created_ts": float, "not_before": float, "wait_deadline": float, "wait_reason": str,
            "source_media_id": int, "render_number": int,
            "output_path": str, "manifest_path": str,
            "settings": str, "spec": str, "estimate": str, "progress": str, "outputs": str,
            "error": str, "error_kind": str, "worker": str,
        },
        pk="id", foreign_keys=[("request_id", "requests", "id"), ("shot_id", "shots", "id")],
        not_null={"state", "request_path"}, defaults={"priority": 0, "full_clip": 0, "attempts": 0},
    )
    db["jobs"].create_index(["state", "priority", "full_clip", "id"])
    db["jobs"].create_index(["request_path"])

    db["chunks"].create(
        {
            "job_id": int, "idx": int, "first_frame": int, "last_frame": int, "seed": int,
            "seconds": float, "raw_path": str, "segment_path": str, "created_at": str,
        },
        pk=("job_id", "idx"), foreign_keys=[("job_id", "jobs", "id")],
    )

    db["events"].create(
        {"id": int, "at": str, "kind": str, "job_id": int, "shot_id": int, "path": str, "message": str, "data": str},
        pk="id",
    )
    db["events"].create_index(["job_id"])


@migrations()
def m002_calibration(db: Database) -> None:
    """Measured render speed per model and device kind, refining the catalog's calibration."""
    db["calibration"].create(
        {"model": str, "device": str, "seconds_per_unit": float, "samples": int, "updated_at": str},
        pk=("model", "device"),
    )


@migrations()
def m003_operations(db: Database) -> None:
    """Start times and render windows, cancels, the command box of the CLI, and the pause flag."""
    db["jobs"].add_column("window", str)          # the render window it runs in, or NULL
    db["jobs"].add_column("start_at", float)      # epoch seconds it may start (window opening or `when`)
    db["jobs"].add_column("cancel_reason", str)   # set while a running job is being cancelled
    db["jobs"].create_index(["request_path", "state"])

    db["commands"].create(
        {
            "id": int, "command": str, "target": str,
            "state": str,         # pending | done | refused
            "result": str, "created_at": str, "handled_at": str,
        },
        pk="id", not_null={"command", "state"},
    )
    db["commands"].create_index(["state"])

    db["flags"].create({"name": str, "value": str, "updated_at": str}, pk="name")


@migrations()
def m004_media_identity(db: Database) -> None:
    """Inode and change time of each video when probed: a file rewritten in place with its size and
    modification time put back is still noticed."""
    db["media"].add_column("inode", int)
    db["media"].add_column("ctime_ns", int)


@migrations()
def m005_job_source_identity(db: Database) -> None:
    """The source a job was queued with: its path, size, modification time, inode and change time, fixed
    when the job is queued so that a file swapped in later is refused, not rendered."""
    db["jobs"].add_column("source_path", str)
    db["jobs"].add_column("source_size", int)
    db["jobs"].add_column("source_mtime_ns", int)
    db["jobs"].add_column("source_inode", int)
    db["jobs"].add_column("source_ctime_ns", int)


@migrations()
def m006_archive_and_indexes(db: Database) -> None:
    """Archive tables for finished jobs kept past `archive_after_days` (and their events), and indexes for what
    the queue, `hotshot status` and the web pages ask: claim order, state counts, recent ends, per shot.

    The archive lives in the same file: one transaction moves a batch atomically (SQLite commits across
    ATTACHed databases atomically per file only, in WAL mode). `jobs_archive` has every column `jobs` has
    when this runs plus `archived_at`; a later migration that adds a column to `jobs` adds it here too (the
    archive pass copies by the column names of `jobs` and fails loudly otherwise).
    """
    db["jobs_archive"].create({**db["jobs"].columns_dict, "archived_at": str}, pk="id",
                              not_null={"state", "request_path"})
    # Event numbers are not kept apart from the hot table's (an event number may be given again), so the archive
    # numbers its rows itself and keeps the event's number as a plain column.
    db["events_archive"].create({**db["events"].columns_dict})
    for sql in (
        # Claim order (`claim_next`, the queue): priority is read high to low, so the index holds it that way.
        "DROP INDEX IF EXISTS idx_jobs_state_priority_full_clip_id",
        "CREATE INDEX idx_jobs_claim_order ON jobs (state, priority DESC, full_clip, id)",
        # Waiting jobs in the order their start comes.
        "CREATE INDEX idx_jobs_waiting_order ON jobs (state, COALESCE(start_at, 0), priority DESC, full_clip, id)",
        # Recent ends and the archive pass: only finished jobs have `finished_at`.
        "CREATE INDEX idx_jobs_finished_at ON jobs (finished_at, id) WHERE finished_at IS NOT NULL",
        # A shot's jobs (the web timeline, render numbers); active jobs by shot (shots with activity).
        "CREATE INDEX idx_jobs_shot_state ON jobs (shot_id, state)",
        "CREATE INDEX idx_jobs_state_shot ON jobs (state, shot_id)",
        # (request_path, state) from m003 serves every lookup by request path.
        "DROP INDEX IF EXISTS idx_jobs_request_path",
        "CREATE INDEX idx_media_shot_kind ON media (shot_id, kind)",
        # The estimates' cost history: the latest measured renders of one model on one device kind.
        "CREATE INDEX idx_events_costs ON events (json_extract(data, '$.model'), json_extract(data, '$.device'), id) "
        "WHERE kind = 'costs'",
        "CREATE INDEX idx_jobs_archive_finished_at ON jobs_archive (finished_at)",
        "CREATE INDEX idx_jobs_archive_shot_state ON jobs_archive (shot_id, state)",
        "CREATE INDEX idx_jobs_archive_state ON jobs_archive (state)",
        "CREATE INDEX idx_jobs_archive_request_path ON jobs_archive (request_path)",
        "CREATE INDEX idx_events_archive_job_id ON events_archive (job_id)",
    ):
        db.execute(sql)


@migrations()
def m007_chunk_rendered_by(db: Database) -> None:
    """Where each chunk was rendered (node and worker, as JSON), for the Render Info of a render resumed
    elsewhere."""
    db["chunks"].add_column("rendered_by", str)
