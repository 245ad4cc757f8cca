"""Bounded reads of the jobs for `hotshot status`: counts by state, the first jobs in line, recent ends,
shots with activity, and filtered pages of the rest (hot or archived); and a job found by number wherever it
is (the archive is written by daemon/archive.py).

Each read is an indexed query with a LIMIT (see m006 in daemon/schema.py), so what status costs does not
grow with the history: only the counts scan an index, never the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.states import ACTIVE_STATES, FINISHED_STATES, Job, JobState, MediaKind
from daemon.store import Store

R, Q, W = JobState.RUNNING, JobState.QUEUED, JobState.WAITING
CLAIM_ORDER = "priority DESC, full_clip, id"
WAITING_ORDER = f"COALESCE(start_at, 0), {CLAIM_ORDER}"
FINISHED_ORDER = "finished_at DESC, id DESC"
NEWEST_ORDER = "id DESC"
QUEUE_ORDER = (f"CASE state WHEN '{R}' THEN 0 WHEN '{Q}' THEN 1 ELSE 2 END, "
               f"CASE WHEN state = '{W}' THEN COALESCE(start_at, 0) ELSE 0 END, {CLAIM_ORDER}")


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a page shows: some states (none: all), some shots (None: all), hot or archived jobs."""

    states: tuple[JobState, ...] = ()
    shot_ids: tuple[int, ...] | None = None
    archived: bool = False
    limit: int = 20
    offset: int = 0

    @property
    def order(self) -> str:
        """The queue's order for active jobs, newest end first for finished ones, newest first for a mix. One
        active state is read in the order of its index (m006)."""
        if self.states and not self.archived and set(self.states) <= set(ACTIVE_STATES):
            if set(self.states) <= {R, Q}:
                return CLAIM_ORDER if len(set(self.states)) == 1 else QUEUE_ORDER
            return WAITING_ORDER if set(self.states) == {W} else QUEUE_ORDER
        if self.finished:
            return FINISHED_ORDER
        return NEWEST_ORDER

    @property
    def order_words(self) -> str:
        return {FINISHED_ORDER: "newest end first", NEWEST_ORDER: "newest first"}.get(self.order,
                                                                                    "in the order jobs start")

    @property
    def finished(self) -> bool:
        return self.archived or bool(self.states and set(self.states) <= set(FINISHED_STATES))


def _marks(values: tuple | list) -> str:
    return ",".join("?" * len(values))


def _jobs(store: Store, sql: str, params: tuple | list = ()) -> list[Job]:
    return [Job.from_row(row) for row in store._all(sql, params)]


def state_counts(store: Store, archived: bool = False) -> dict[str, int]:
    """How many jobs are in each state (every state named, zero included)."""
    table = "jobs_archive" if archived else "jobs"
    counts = {state.value: 0 for state in JobState}
    if archived and not has_archive(store):
        return counts
    for state, count in store.db.execute(f"SELECT state, COUNT(*) FROM {table} GROUP BY state").fetchall():
        counts[state] = count
    return counts


def first_in_line(store: Store, limit: int) -> list[Job]:
    """Running jobs, then queued ones in claim order, then waiting ones by start time: the first `limit`."""
    found: list[Job] = []
    for state, order in ((R, CLAIM_ORDER), (Q, CLAIM_ORDER), (W, WAITING_ORDER)):
        if len(found) < limit:
            found += _jobs(store, f"SELECT * FROM jobs WHERE state = ? ORDER BY {order} LIMIT ?",
                           (state, limit - len(found)))
    return found


def recent_ends(store: Store, limit: int) -> list[Job]:
    """The jobs that ended last, newest first."""
    return _jobs(store, "SELECT * FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC "
                        "LIMIT ?", (limit,))


def page(store: Store, wanted: JobFilter) -> tuple[int, list[Job]]:
    """The jobs `wanted` picks: how many there are in all, and the page of them."""
    where, params = [], []
    if wanted.states:
        where.append(f"state IN ({_marks(wanted.states)})")
        params += wanted.states
    if wanted.shot_ids is not None:
        where.append(f"shot_id IN ({_marks(wanted.shot_ids)})")
        params += wanted.shot_ids
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    table = "jobs_archive" if wanted.archived else "jobs"
    if wanted.archived and not has_archive(store):
        return 0, []
    total = store.db.execute(f"SELECT COUNT(*) FROM {table}{clause}", params).fetchone()[0]
    if wanted.finished and not wanted.archived:
        # Every finished job has its end time: this lets the newest ends be read from their index, newest first.
        clause = f" WHERE {' AND '.join([*where, 'finished_at IS NOT NULL'])}"
    # The page's numbers first (a sort, where one is needed, then holds numbers, not whole rows), then its rows.
    ids = [row[0] for row in store.db.execute(f"SELECT id FROM {table}{clause} ORDER BY {wanted.order} "
                                              "LIMIT ? OFFSET ?", [*params, wanted.limit, wanted.offset])]
    if not ids:
        return total, []
    columns = ", ".join(f'"{name}"' for name in job_columns(store))
    rows = {job.id: job for job in _jobs(store, f"SELECT {columns} FROM {table} WHERE id IN ({_marks(ids)})", ids)}
    return total, [rows[job_id] for job_id in ids]


def shot_name(root: str, rel: str) -> str:
    return f"{Path(root).name}/{rel}".removesuffix("/.")


def shots_named(store: Store, name: str) -> list[dict]:
    """Shots a person may mean by `name`: `root/rel` as status prints it, the folder relative to its root, its
    path, or failing those its folder's own name (every shot of that name)."""
    path = str(Path(name).expanduser().resolve())
    shots = store._all("SELECT id, root, rel, path FROM shots ORDER BY root, rel")
    exact = [shot for shot in shots
             if name in (shot_name(shot["root"], shot["rel"]), shot["rel"]) or shot["path"] == path]
    return exact or [shot for shot in shots if Path(shot["rel"]).name == name]


def shots_with_activity(store: Store, recent: list[Job], limit: int) -> tuple[int, list[dict]]:
    """Shots with active jobs (most running, then most queued or waiting first), then those of `recent` ends:
    how many there are, and the first `limit` with their active counts."""
    active: dict[int, dict[str, int]] = {}
    for state, shot_id, count in store.db.execute(
            f"SELECT state, shot_id, COUNT(*) FROM jobs WHERE state IN ({_marks(ACTIVE_STATES)}) "
            "GROUP BY state, shot_id", ACTIVE_STATES).fetchall():
        if shot_id is not None:
            active.setdefault(shot_id, {state.value: 0 for state in ACTIVE_STATES})[state] = count
    order = sorted(active, key=lambda shot: (-active[shot][R], -active[shot][Q] - active[shot][W], shot))
    order += [job.shot_id for job in recent if job.shot_id is not None and job.shot_id not in active]
    order = list(dict.fromkeys(order))
    chosen = order[:limit]
    rows = {row["id"]: row for row in store._all(
        f"SELECT id, root, rel, path FROM shots WHERE id IN ({_marks(chosen)})", chosen)} if chosen else {}
    return len(order), [{**rows[shot_id], "active": active.get(shot_id, {})} for shot_id in chosen
                        if shot_id in rows]


def media_tree(store: Store, shot_id: int, keep: int | None) -> tuple[list[dict], int]:
    """A shot's sources with their renders nested below them (lineage); with `keep`, only the `keep` newest
    videos and the sources they descend from. Returns the roots of the tree and how many videos were left
    out."""
    media = store._all("SELECT id, name, kind, state, parent_id, job_id, error, probe FROM media WHERE shot_id = ? "
                       "ORDER BY name", (shot_id,))
    by_id = {item["id"]: item for item in media}
    shown = set(by_id)
    if keep is not None and len(media) > keep:
        shown = set()
        for item_id in sorted(by_id, reverse=True)[:keep]:
            while item_id is not None and item_id not in shown and item_id in by_id:
                shown.add(item_id)
                item = by_id[item_id]
                item_id = item["parent_id"] if item["kind"] == MediaKind.RENDER else None
    children: dict[int | None, list[dict]] = {}
    for item in media:
        if item["id"] in shown:
            parent = item["parent_id"] if item["kind"] == MediaKind.RENDER else None
            children.setdefault(parent if parent in shown else None, []).append(item)

    def node(item: dict) -> dict:
        probe = item.get("probe") or {}
        return {
            "name": item["name"],
            "kind": item["kind"],
            "state": item["state"],
            "frames": probe.get("frame_count"),
            "size": f"{probe['width']}x{probe['height']}" if probe else None,
            "fps": probe.get("fps"),
            "job": item.get("job_id"),
            "error": item.get("error"),
            "renders": [node(child) for child in children.get(item["id"], [])],
        }

    return [node(item) for item in children.get(None, [])], len(media) - len(shown)


def job_columns(store: Store) -> list[str]:
    """The columns of `jobs` (what `Job` knows), in table order."""
    return [row[1] for row in store.db.execute("PRAGMA table_info(jobs)").fetchall()]


def has_archive(store: Store) -> bool:
    """Whether the database has the archive tables: a reader may open a database of the previous version that
    no daemon has migrated yet."""
    return store.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs_archive'"
                            ).fetchone() is not None


def archived_job(store: Store, job_id: int) -> Job | None:
    """An archived job, as the record the hot table would give."""
    if not has_archive(store):
        return None
    columns = ", ".join(f'"{name}"' for name in job_columns(store))
    row = store._one(f"SELECT {columns} FROM jobs_archive WHERE id = ?", (job_id,))
    return Job.from_row(row) if row else None


def job_or_archived(store: Store, job_id: int) -> tuple[Job | None, bool]:
    """A job by number wherever it is, and whether it is archived."""
    job = store.job(job_id)
    if job is not None:
        return job, False
    job = archived_job(store, job_id)
    return job, job is not None
