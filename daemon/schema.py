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
def m006_chunk_rendered_by(db: Database) -> None:
    """Where each chunk was rendered (node and worker, as JSON), for the Render Info of a render resumed
    elsewhere."""
    db["chunks"].add_column("rendered_by", str)
