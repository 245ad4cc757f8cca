"""A job's source: its identity fixed when the job is queued, and checked again when it is claimed.

Ingest records a video's size, modification time, inode and change time when
it probes it. A job copies them when it is queued, so what it renders is that
file and no other: at the claim the source must still be `ready` (ingest marks
a file swapped for a link out of the root, a hard link or a non-video
`unreadable`), and the name must still hold a regular file with the same
identity. The worker checks once more on the file it opens (engine/source_file.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from daemon.conventions import refusal
from daemon.states import Job, MediaState
from engine.files import same_file
from engine.source_file import REPLACED

IDENTITY = ("source_size", "source_mtime_ns", "source_inode", "source_ctime_ns")


def fixed_identity(media: dict) -> dict:
    """The job columns that pin the source `media` as it is now."""
    return {"source_path": media["path"], "source_size": media["size"], "source_mtime_ns": media["mtime_ns"],
            "source_inode": media.get("inode"), "source_ctime_ns": media.get("ctime_ns")}


def queued_identity(job: Job) -> dict | None:
    """The source identity a job was queued (or first claimed) with, or None for a job that has none."""
    spec = job.spec
    if spec:
        return {"source_path": spec["source"], **{name: spec.get(name) for name in IDENTITY}}
    if job.source_size is None:
        return None
    return {name: getattr(job, name) for name in ("source_path", *IDENTITY)}


def same_as_queued(st: os.stat_result, identity: dict) -> bool:
    return same_file(st, identity["source_size"], identity["source_mtime_ns"], identity["source_inode"],
                     identity["source_ctime_ns"])


def claim_refusal(job: Job, media: dict | None, root: Path, allow_hard_links: bool) -> str | None:
    """Why a just-claimed job must not render its source, as the job's error; None if it may."""
    identity = queued_identity(job)
    path = Path(identity["source_path"] if identity else (media or {}).get("path", "the source"))
    if media is None or media["state"] == MediaState.MISSING:
        return f"{path} is not a readable video: it was deleted after the render was queued"
    if media["state"] != MediaState.READY:
        return f"{path} is not a readable video: it changed after the render was queued ({media['error']})"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{path} is not a readable video: it was deleted after the render was queued"
    why = refusal(path, root, st, allow_hard_links, folders=False)
    if why:
        return f"{path} is not a readable video: it changed after the render was queued (it {why})"
    if not stat.S_ISREG(st.st_mode) or (identity and not same_as_queued(st, identity)):
        return f"{path} is not a readable video: {REPLACED}"
    return None
