"""Archiving: finished jobs older than `archive_after_days` leave the hot tables, a small batch at a time.

A facility keeps a year of history; the queue, the claims and `hotshot status` should not read through it.
The daemon moves finished jobs (done, failed, cancelled) whose end is older than the setting into
`jobs_archive`, with their events into `events_archive`, and drops their chunk rows (their checkpoints are
swept long before). One transaction a batch, so a crash leaves every job in exactly one of the two tables,
and a batch is small enough never to hold the loop up.

What stays consistent:
- requests stay in `requests` (the reconcile scan knows the files on disk by them; an archived job's
  unchanged request file is not registered again);
- render numbers and output names still count archived jobs (`next_render_number`, `output_paths`), so a
  new render never takes an archived one's name;
- job numbers are never given twice: a new job is numbered one above every job in both tables
  (`Store._insert_job`), so the newest job is archived too when it is due;
- a job is not archived while a newer or older job of the same request file is active, so the status file
  of the request is always written by its newest job;
- cost samples (`costs` events) stay for the estimates;
- media rows keep their `job_id`: `hotshot info N` and the web workspace find the job in the archive.
An archived job is history: `hotshot retry` refuses it, with why.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from daemon.db import utc_iso, utc_now
from daemon.listing import job_columns
from daemon.states import ACTIVE_STATES, FINISHED_STATES
from daemon.store import Store

log = structlog.get_logger("hotshot.archive")
BATCH = 100
IDLE_SECONDS = 600.0  # once nothing is left to move, look again this much later
DAY = 86400.0


def archive_batch(store: Store, ended_before: float, limit: int = BATCH) -> int:
    """Move up to `limit` jobs that finished before `ended_before` (epoch seconds) into the archive, oldest
    first, in one transaction; return how many moved."""
    marks = ",".join("?" * len(FINISHED_STATES))
    active = ",".join("?" * len(ACTIVE_STATES))
    columns = ", ".join(f'"{name}"' for name in job_columns(store))
    db = store.db
    with store.immediate():
        ids = [row[0] for row in db.execute(
            f"SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? AND state IN ({marks}) "
            f"AND NOT EXISTS (SELECT 1 FROM jobs AS other "
            f"WHERE other.request_path = jobs.request_path AND other.state IN ({active})) ORDER BY finished_at LIMIT ?",
            (utc_iso(ended_before), *FINISHED_STATES, *ACTIVE_STATES, limit)).fetchall()]
        if not ids:
            return 0
        chosen = f"({','.join('?' * len(ids))})"
        db.execute(f"INSERT INTO jobs_archive ({columns}, archived_at) SELECT {columns}, ? FROM jobs "
                   f"WHERE id IN {chosen}", (utc_now(), *ids))
        events = ", ".join(f'"{row[1]}"' for row in db.execute("PRAGMA table_info(events)").fetchall())
        db.execute(f"INSERT INTO events_archive ({events}) SELECT {events} FROM events WHERE job_id IN {chosen} "
                   "AND kind != 'costs'", ids)
        db.execute(f"DELETE FROM events WHERE job_id IN {chosen} AND kind != 'costs'", ids)
        db.execute(f"DELETE FROM chunks WHERE job_id IN {chosen}", ids)
        db.execute(f"DELETE FROM jobs WHERE id IN {chosen}", ids)
    return len(ids)


class Archiver:
    """The daemon's periodic archive pass: one batch a turn of the loop while there is a backlog, then a look
    every IDLE_SECONDS. `clock` gives the epoch time the age is measured from (injectable for tests)."""

    def __init__(self, store: Store, after_days: float, clock: Callable[[], float] = time.time,
                 batch: int = BATCH, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store, self.after_days, self.clock, self.batch = store, after_days, clock, batch
        self.monotonic = monotonic
        self._next = float("-inf")
        self.moved = 0

    def step(self) -> int:
        """Archive one batch if one is due; return how many jobs moved."""
        if not self.after_days or self.monotonic() < self._next:
            return 0
        moved = archive_batch(self.store, self.clock() - self.after_days * DAY, self.batch)
        self.moved += moved
        if moved < self.batch:
            self._next = self.monotonic() + IDLE_SECONDS
            if self.moved:
                log.info("archived finished jobs", jobs=self.moved, older_than_days=self.after_days)
                self.moved = 0
        return moved
