"""The state database: shots, media, requests, jobs, chunks and an audit trail.

The daemon is its only writer. Multi-step changes happen in one transaction;
claims take the write lock up front (`BEGIN IMMEDIATE`). The CLI opens the same
file read-only and never writes behind the daemon's back.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.db import Reader, connect, decode, encode, utc_iso, utc_now
from daemon.states import ACTIVE_STATES, CommandState, MediaKind, MediaState
from daemon.transitions import JobTransitions

if TYPE_CHECKING:
    from sqlite_utils import Database

__all__ = ["Store", "connect", "utc_iso", "utc_now"]
UNPUBLISHED = "unpublished since job"  # the flag naming the first job whose status file may be missing


class Store(JobTransitions):
    """Queries and state changes, each a complete unit of work; the job transitions are in
    `daemon/transitions.py`."""

    def __init__(self, db: Database | Reader) -> None:
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
        return decode(dict(row)) if row else None

    def _all(self, sql: str, params: tuple | list = ()) -> list[dict]:
        return [decode(dict(row)) for row in self.db.execute(sql, params).fetchall()]

    def _insert(self, table: str, values: dict) -> int:
        """Insert one row of already encoded values; return its id. Plain SQL: sqlite-utils' `insert` reads the
        table's schema on every call, which registering a sequence drop did three times a request."""
        columns = ", ".join(f"[{column}]" for column in values)
        marks = ", ".join("?" * len(values))
        return self.db.execute(f"INSERT INTO [{table}] ({columns}) VALUES ({marks})", list(values.values())).lastrowid

    def _insert_job(self, values: dict) -> int:
        """Insert a job of already encoded values, numbered one above every job there is or was, archived ones
        too (SQLite alone would number it one above the highest in `jobs` and give an archived job's number
        again); one statement, so no other writer can take the number in between."""
        columns = "".join(f", [{column}]" for column in values)
        marks = "".join(", ?" for _ in values)
        return self.db.execute(
            f"INSERT INTO jobs (id{columns}) VALUES (MAX(COALESCE((SELECT MAX(id) FROM jobs), 0), "
            f"COALESCE((SELECT MAX(id) FROM jobs_archive), 0)) + 1{marks})", list(values.values())).lastrowid

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

    def shot_at(self, folder: Path) -> dict | None:
        return self._one("SELECT * FROM shots WHERE path = ?", (str(folder),))

    def shot(self, shot_id: int) -> dict | None:
        return self._one("SELECT * FROM shots WHERE id = ?", (shot_id,))

    def shot_summaries(self) -> list[dict]:
        """Every shot (`id`, `root`, `rel`) with how many originals and renders it holds and its active jobs:
        three grouped queries, not one a shot."""
        counts: dict[int, dict[str, int]] = {}
        for row in self.db.execute("SELECT shot_id, kind, COUNT(*) AS n FROM media GROUP BY shot_id, kind"):
            counts.setdefault(row["shot_id"], {})[row["kind"]] = row["n"]
        active = {row["shot_id"]: row["n"] for row in self.db.execute(
            f"SELECT shot_id, COUNT(*) AS n FROM jobs WHERE state IN ({','.join('?' * len(ACTIVE_STATES))}) "
            "GROUP BY shot_id", ACTIVE_STATES)}
        return [{"id": row["id"], "root": row["root"], "rel": row["rel"],
                 "originals": counts.get(row["id"], {}).get(MediaKind.ORIGINAL, 0),
                 "renders": counts.get(row["id"], {}).get(MediaKind.RENDER, 0), "active": active.get(row["id"], 0)}
                for row in self.db.execute("SELECT id, root, rel FROM shots ORDER BY root, rel")]

    def shots(self) -> list[dict]:
        return self._all("SELECT * FROM shots ORDER BY root, rel")

    # -- media ---------------------------------------------------------------

    def media_at(self, path: Path) -> dict | None:
        return self._one("SELECT * FROM media WHERE path = ?", (str(path),))

    def media(self, media_id: int) -> dict | None:
        return self._one("SELECT * FROM media WHERE id = ?", (media_id,))

    def media_in_shot(self, shot_id: int) -> list[dict]:
        return self._all("SELECT * FROM media WHERE shot_id = ? ORDER BY name", (shot_id,))

    def present_media(self) -> list[str]:
        """The path of every video the database holds as there (not missing)."""
        return [row[0] for row in self.db.execute("SELECT path FROM media WHERE state != ?", (MediaState.MISSING,))]

    def save_media(self, path: Path, shot_id: int, **values: Any) -> int:
        """Insert or update the media row for `path`; return its id."""
        now = utc_now()
        values = encode({**values, "updated_at": now})
        with self.db.atomic():
            existing = self._one("SELECT id FROM media WHERE path = ?", (str(path),))
            if existing:
                self.db["media"].update(existing["id"], values)
                return existing["id"]
            return self.db["media"].insert(
                {"path": str(path), "name": path.name, "shot_id": shot_id, "created_at": now, **values}
            ).last_pk

    # -- requests ------------------------------------------------------------

    def request_versions(self, path: Path) -> dict[str, int]:
        """The id of every version of the request at `path` recorded so far, by content hash."""
        return {content_hash: request_id for request_id, content_hash in
                self.db.execute("SELECT id, content_hash FROM requests WHERE path = ?", (str(path),))}

    def request(self, request_id: int) -> dict | None:
        return self._one("SELECT * FROM requests WHERE id = ?", (request_id,))

    def touch_request(self, request_id: int, size: int, mtime_ns: int) -> None:
        with self.db.atomic():
            self.db["requests"].update(request_id, {"size": size, "mtime_ns": mtime_ns})

    def known_files(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every media file and the latest version of every request, by path."""
        seen = {path: (size, mtime_ns) for path, size, mtime_ns in
                self.db.execute("SELECT path, size, mtime_ns FROM media")}
        for path, size, mtime_ns in self.db.execute(
            "SELECT path, size, mtime_ns FROM requests WHERE id IN (SELECT MAX(id) FROM requests GROUP BY path)"
        ):
            seen[path] = (size, mtime_ns)
        return seen

    def active_request_paths(self) -> list[str]:
        """The request files that have a waiting, queued or running job."""
        return [row[0] for row in self.db.execute(
            f"SELECT DISTINCT request_path FROM jobs WHERE state IN ({','.join('?' * len(ACTIVE_STATES))})",
            ACTIVE_STATES)]

    # -- chunks --------------------------------------------------------------

    def add_chunk(self, job_id: int, record: dict) -> None:
        with self.db.atomic():
            self.db["chunks"].upsert({
                "job_id": job_id, "idx": record["index"], "first_frame": record["start"],
                "last_frame": record["end"], "seed": record["seed"], "seconds": record["seconds"],
                "raw_path": record["raw_path"], "segment_path": record["segment_path"], "created_at": utc_now(),
                "rendered_by": json.dumps(record["rendered_by"]) if record.get("rendered_by") else None,
            }, pk=("job_id", "idx"))

    def chunks(self, job_id: int) -> list[dict]:
        return self._all("SELECT * FROM chunks WHERE job_id = ? ORDER BY idx", (job_id,))

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

    # -- status files not written yet -----------------------------------------

    def note_unpublished(self, job_id: int) -> None:
        """Inside a registering transaction: jobs from `job_id` on may have no status file yet. An earlier
        note that was never cleared (its status files were not all written) is kept."""
        self.db.execute("INSERT INTO flags (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
                        (UNPUBLISHED, str(job_id), utc_now()))

    def unpublished_since(self) -> int | None:
        """The first job whose status file may not have been written (a crash came between), or None."""
        value = self.flag(UNPUBLISHED)
        return int(value) if value else None

    def published(self, job_id: int, next_job_id: int | None = None) -> None:
        """The status files of the jobs from `job_id` on are written: forget the note (unless an earlier,
        still unfinished batch made it), or move it on to `next_job_id`, the first job of a later batch whose
        status files are still being written."""
        with self.db.atomic():
            if next_job_id is None:
                self.db.execute("DELETE FROM flags WHERE name = ? AND value = ?", (UNPUBLISHED, str(job_id)))
            else:
                self.db.execute("UPDATE flags SET value = ?, updated_at = ? WHERE name = ? AND value = ?",
                                (str(next_job_id), utc_now(), UNPUBLISHED, str(job_id)))

    def job_ids_since(self, job_id: int) -> list[int]:
        return [row[0] for row in self.db.execute("SELECT id FROM jobs WHERE id >= ? ORDER BY id", (job_id,))]

    # -- flags and commands --------------------------------------------------

    def flag(self, name: str) -> str | None:
        row = self._one("SELECT value FROM flags WHERE name = ?", (name,))
        return row["value"] if row else None

    def set_cluster(self, document: dict) -> None:
        """What the daemon knows of its Ray cluster now (nodes, slots), for `hotshot status`; no event."""
        with self.db.atomic():
            self.db["flags"].upsert({"name": "cluster", "value": json.dumps(document), "updated_at": utc_now()},
                                    pk="name")

    def cluster(self) -> dict | None:
        value = self.flag("cluster")
        return json.loads(value) if value else None

    def set_flag(self, name: str, value: str) -> None:
        with self.db.atomic():
            self.db["flags"].upsert({"name": name, "value": value, "updated_at": utc_now()}, pk="name")
            self._event("flag", message=f"{name}={value}")

    def submit_command(self, command: str, target: str | None) -> int:
        """Leave a command for the running daemon (the CLI's only write while a daemon runs)."""
        with self.db.atomic():
            return self.db["commands"].insert({"command": command, "target": target, "state": CommandState.PENDING,
                                               "created_at": utc_now()}).last_pk

    def pending_commands(self) -> list[dict]:
        return self._all("SELECT * FROM commands WHERE state = ? ORDER BY id", (CommandState.PENDING,))

    def command(self, command_id: int) -> dict | None:
        return self._one("SELECT * FROM commands WHERE id = ?", (command_id,))

    def finish_command(self, command_id: int, state: CommandState, result: str) -> None:
        with self.db.atomic():
            self.db["commands"].update(command_id, {"state": state, "result": result, "handled_at": utc_now()})
            self._event(f"command {state}", message=result)

    # -- events --------------------------------------------------------------

    def _event(self, kind: str, job_id: int | None = None, shot_id: int | None = None, path: str | None = None,
               message: str | None = None, data: dict | None = None) -> None:
        self._insert("events", encode({
            "at": utc_now(), "kind": kind, "job_id": job_id, "shot_id": shot_id, "path": path,
            "message": message, "data": data,
        }))

    def events(self, job_id: int | None = None) -> list[dict]:
        if job_id is None:
            return self._all("SELECT * FROM events ORDER BY id")
        return self._all("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,))
