"""The job state machine: every change of a job's state is one named operation here.

`MOVES` says which state may follow which; each transition names the states it
starts from, checks the job is in one of them inside its transaction, and
records an event. A transition from a state it does not start from raises
`JobStateError` at the caller, instead of quietly writing a state nobody
expects. `Store` (daemon/store.py) inherits these; nothing else writes
`jobs.state`.

    waiting ──release──▶ queued ──claim──▶ running ──finish──▶ done
       ▲  │                 │  ▲             │ │ │
       │  └──fail/cancel────┤  └──requeue────┘ │ └──fail──▶ failed ──retry──▶ queued | waiting
       └────────wait────────┴──────────────────┘ └─cancel─▶ cancelled ──retry──▶ queued | waiting
"""

from __future__ import annotations

from typing import Any

from daemon.db import encode, utc_now
from daemon.states import ACTIVE_STATES, ErrorKind, Job, JobState

W, Q, R = JobState.WAITING, JobState.QUEUED, JobState.RUNNING
D, F, C = JobState.DONE, JobState.FAILED, JobState.CANCELLED

MOVES: dict[JobState, frozenset[JobState]] = {
    W: frozenset({Q, W, F, C}),
    Q: frozenset({R, W, C}),
    R: frozenset({Q, W, D, F, C}),
    D: frozenset(),
    F: frozenset({Q, W}),
    C: frozenset({Q, W}),
}
NEW_JOB_STATES = frozenset({W, Q, F, C})  # what a request's resolution can make of a new job


class JobStateError(RuntimeError):
    """A transition asked of a job in a state it does not start from (a bug in the caller)."""

    def __init__(self, job_id: int, transition: str, state: str | None, allowed: frozenset[JobState]) -> None:
        self.job_id, self.transition, self.state = job_id, transition, state
        super().__init__(f"job {job_id} is {state or 'missing'}; {transition} starts from "
                         f"{', '.join(sorted(allowed)) or 'no state'}")


def _marks(states: tuple | frozenset) -> str:
    return ",".join("?" * len(states))


class JobTransitions:
    """Job queries and the named state changes (mixed into `Store`)."""

    # -- queries -------------------------------------------------------------

    def job(self, job_id: int) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    def jobs(self, states: tuple[JobState, ...] | None = None) -> list[Job]:
        if states is None:
            return self._jobs("SELECT * FROM jobs ORDER BY id")
        return self._jobs(f"SELECT * FROM jobs WHERE state IN ({_marks(states)}) ORDER BY id", states)

    def queue(self) -> list[Job]:
        """Active jobs: running, then queued in the order they will be claimed, then waiting by start time."""
        return self._jobs(
            "SELECT * FROM jobs WHERE state IN (?, ?, ?) "
            "ORDER BY CASE state WHEN ? THEN 0 WHEN ? THEN 1 ELSE 2 END, "
            "CASE WHEN state = ? THEN COALESCE(start_at, 0) ELSE 0 END, priority DESC, full_clip, id",
            (R, Q, W, R, Q, W),
        )

    def active_jobs_for(self, request_path: str) -> list[Job]:
        return self._jobs(f"SELECT * FROM jobs WHERE request_path = ? AND state IN ({_marks(ACTIVE_STATES)}) "
                          "ORDER BY id", (request_path, *ACTIVE_STATES))

    def newest_jobs(self, job_ids: list[int]) -> list[Job]:
        """Those of `job_ids` that are the newest job of their request file, in the order given: a batch's
        status files are read with a query per 500 jobs, not two per job."""
        found: dict[int, Job] = {}
        wanted = list(dict.fromkeys(job_ids))
        for first in range(0, len(wanted), 500):
            part = wanted[first:first + 500]
            for job in self._jobs(f"SELECT * FROM jobs WHERE id IN ({_marks(part)}) AND NOT EXISTS (SELECT 1 FROM "
                                  "jobs AS later WHERE later.request_path = jobs.request_path AND later.id > jobs.id)",
                                  part):
                found[job.id] = job
        return [found[job_id] for job_id in wanted if job_id in found]

    def jobs_in_shot(self, shot_id: int) -> list[Job]:
        return self._jobs("SELECT * FROM jobs WHERE shot_id = ? ORDER BY id", (shot_id,))

    def in_windows(self, state: JobState) -> list[Job]:
        """Jobs in `state` that belong to a render window."""
        return self._jobs("SELECT * FROM jobs WHERE state = ? AND window IS NOT NULL ORDER BY id", (state,))

    def latest_job_for(self, request_path: str) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE request_path = ? ORDER BY id DESC LIMIT 1", (request_path,))
        return Job.from_row(row) if row else None

    def output_paths(self, shot_id: int) -> set[str]:
        """The outputs the shot's jobs chose (archived ones too): renders, even those not written yet."""
        return {row[0] for row in self.db.execute(
            "SELECT output_path FROM jobs WHERE shot_id = ? AND output_path IS NOT NULL UNION "
            "SELECT output_path FROM jobs_archive WHERE shot_id = ? AND output_path IS NOT NULL",
            (shot_id, shot_id))}

    def running_output(self, shot_id: int, path: str) -> int | None:
        """The running job whose output `path` is (it may be published before the job's end is recorded)."""
        row = self.db.execute("SELECT id FROM jobs WHERE state = ? AND shot_id = ? AND output_path = ?",
                              (R, shot_id, path)).fetchone()
        return row[0] if row else None

    def next_render_number(self, shot_id: int) -> int:
        row = self._one(
            "SELECT MAX(n) AS n FROM (SELECT MAX(render_number) AS n FROM jobs WHERE shot_id = ? "
            "UNION ALL SELECT MAX(render_number) FROM jobs_archive WHERE shot_id = ? UNION ALL SELECT 0)",
            (shot_id, shot_id),
        )
        return (row["n"] or 0) + 1

    def _jobs(self, sql: str, params: tuple | list = ()) -> list[Job]:
        return [Job.from_row(row) for row in self._all(sql, params)]

    # -- the one writer of jobs.state ------------------------------------------

    def _move(self, job_id: int, transition: str, to: JobState | None, starts: frozenset[JobState],
              event: str | None, message: str | None, **values: Any) -> Job:
        """Check the job is in one of `starts` (and `to` may follow it), write `values`, record `event`."""
        row = self.db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        state = JobState(row[0]) if row else None
        if state not in starts or (to is not None and to not in MOVES[state]):
            raise JobStateError(job_id, transition, state, starts)
        if to is not None:
            values["state"] = to
        self.db["jobs"].update(job_id, encode({**values, "updated_at": utc_now()}))
        if event:
            self._event(event, job_id=job_id, message=message)
        return state

    # -- transitions -----------------------------------------------------------

    def enqueue(self, request: dict, job: dict, cancels_older: str | None = None, first_version: bool = False) -> int:
        """Record a new request version and its job (in the state its resolution gave); return the job id.

        In the same transaction, so that a crash cannot leave two versions alive, the older versions' jobs
        that have not started are superseded, or with `cancels_older` (the new version says "cancel": true)
        cancelled for that reason, and their running jobs marked for cancelling. `first_version`: the caller
        saw no earlier version of the request recorded, so there is no older job to look for (a sequence drop's
        requests are all new).
        """
        state = JobState(job["state"])
        if state not in NEW_JOB_STATES:
            raise JobStateError(0, "enqueue", state, NEW_JOB_STATES)
        now = utc_now()
        with self.db.atomic():
            request_id = self._insert("requests", {**request, "created_at": now})
            job_id = self._insert_job(encode({
                **job, "state": state, "request_id": request_id, "created_at": now, "updated_at": now,
            }))
            self._event("job created", job_id=job_id, shot_id=job.get("shot_id"), path=job["request_path"],
                        message=state)
            if first_version:
                return job_id  # no older version: nothing to supersede or cancel
            if cancels_older:
                for older in self._jobs(f"SELECT * FROM jobs WHERE request_path = ? AND id != ? AND "
                                        f"state IN ({_marks(ACTIVE_STATES)})",
                                        (job["request_path"], job_id, *ACTIVE_STATES)):
                    if older.state == R:
                        self.mark_cancelling(older.id, cancels_older)
                    else:
                        self.cancel(older.id, cancels_older)
            else:
                self.supersede(job["request_path"], keep_job=job_id)
        return job_id

    def supersede(self, request_path: str, keep_job: int) -> list[int]:
        """Cancel the not-yet-started jobs of older versions of a request; return their ids."""
        older = [row["id"] for row in self._all(
            "SELECT id FROM jobs WHERE request_path = ? AND id != ? AND state IN (?, ?)",
            (request_path, keep_job, W, Q),
        )]
        with self.db.atomic():
            for job_id in older:
                self._move(job_id, "supersede", C, frozenset({W, Q}), "superseded",
                           "the request file was edited; its new version is a new job",
                           error="superseded by a newer version of the request", finished_at=utc_now())
        return older

    def claim_next(self, worker: str, now: float, loaded_models: frozenset[str] = frozenset(),
                   skip_roots: list[str] | tuple[str, ...] = ()) -> Job | None:
        """Atomically move the first claimable queued job to running for `worker`.

        The order is priority (higher first), range renders before full clips,
        then jobs whose model the worker has loaded, then age: a loaded model
        only breaks ties, so it never holds back a more urgent job. Jobs of
        shots under `skip_roots` (watch roots that are away) are not claimed.
        """
        models = sorted(loaded_models)
        affinity = f"json_extract(settings, '$.model.value') IN ({_marks(models)}) DESC, " if models else ""
        skip = (f"AND shot_id NOT IN (SELECT id FROM shots WHERE root IN ({_marks(skip_roots)})) "
                if skip_roots else "")
        with self.immediate():
            row = self.db.execute(
                f"SELECT id FROM jobs WHERE state = ? AND (not_before IS NULL OR not_before <= ?) {skip}"
                f"ORDER BY priority DESC, full_clip, {affinity}id LIMIT 1",
                (Q, now, *skip_roots, *models),
            ).fetchone()
            if row is None:
                return None
            stamp = utc_now()
            self.db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, worker = ?, started_at = ?, "
                "updated_at = ?, not_before = NULL, error = NULL, error_kind = NULL WHERE id = ? AND state = ?",
                (R, worker, stamp, stamp, row["id"], Q),
            )
            self._event("claimed", job_id=row["id"], message=worker)
        return self.job(row["id"])

    def release(self, job_id: int, what: str) -> None:
        """A waiting job's start time came (or its window opened): it joins the queue."""
        with self.db.atomic():
            self._move(job_id, "release", Q, frozenset({W}), "released", what, wait_reason=None)

    def wait(self, job_id: int, reason: str, start_at: float | None, uncount: bool = False,
             **clear: None) -> None:
        """Hold a job until `start_at` (its render window or start time); `clear` empties progress or error.

        From running (paused at its window's close) the attempt is given back with `uncount`.
        """
        if set(clear) - {"progress", "error"}:
            raise TypeError(f"wait clears only progress and error, not {sorted(set(clear))}")
        with self.db.atomic():
            if uncount:
                self._uncount(job_id)
            state = self.db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            event = "waiting for start" if state and state[0] != W else None
            self._move(job_id, "wait", W, frozenset({W, Q, R}), event, reason, worker=None, wait_reason=reason,
                       start_at=start_at, **clear)

    def revisit(self, job_id: int, values: dict) -> None:
        """A waiting job checked again: still waiting (perhaps for something else), queued, or failed."""
        to = JobState(values["state"])
        values = {key: value for key, value in values.items() if key != "state"}
        with self.db.atomic():
            old = self._move(job_id, "revisit", to, frozenset({W}), None, None, **values)
            if old != to:
                self._event("revisited", job_id=job_id, message=to)

    def requeue(self, job_id: int, event: str, message: str, error: str | None = None,
                error_kind: ErrorKind | None = None, not_before: float | None = None,
                uncount: bool = False) -> None:
        """A running job goes back in line (a retry after a failure, an interruption, a restart); it resumes from
        its checkpoints. `uncount` gives its attempt back (it was not the job's fault)."""
        values: dict[str, Any] = {"worker": None, "progress": None}
        if error is not None:
            values["error"] = error
        if error_kind is not None:
            values["error_kind"] = error_kind
        if not_before is not None:
            values["not_before"] = not_before
        with self.db.atomic():
            if uncount:
                self._uncount(job_id)
            self._move(job_id, "requeue", Q, frozenset({R}), event, message, **values)

    def finish(self, job_id: int, outputs: dict, progress: dict) -> None:
        """A render ended well: the job is done with its outputs."""
        with self.db.atomic():
            self._move(job_id, "finish", D, frozenset({R}), "done", D, worker=None, finished_at=utc_now(),
                       outputs=outputs, progress=progress)

    def fail(self, job_id: int, error: str, error_kind: ErrorKind | None = None) -> None:
        """The job cannot be done (or gave up): failed, with why."""
        values: dict[str, Any] = {"error": error}
        if error_kind is not None:
            values["error_kind"] = error_kind
        with self.db.atomic():
            self._move(job_id, "fail", F, frozenset({W, R}), "failed", error, worker=None,
                       finished_at=utc_now(), **values)

    def mark_cancelling(self, job_id: int, reason: str) -> None:
        """A running job is to be cancelled: its worker drops it at the next diffusion step."""
        with self.db.atomic():
            self._move(job_id, "mark cancelling", None, frozenset({R}), "cancelling", reason, cancel_reason=reason)

    def keep_despite_cancel(self, job_id: int) -> None:
        """The render finished before its cancel took effect: it is kept, the cancel forgotten."""
        with self.db.atomic():
            self._move(job_id, "keep despite cancel", None, frozenset({R}), None, None, cancel_reason=None)

    def cancel(self, job_id: int, reason: str) -> None:
        """Mark a job cancelled; its checkpoints are gone, so a retry starts from the first chunk."""
        with self.db.atomic():
            self._move(job_id, "cancel", C, frozenset(ACTIVE_STATES), None, None, error=reason,
                       error_kind=ErrorKind.CANCELLED, worker=None, cancel_reason=None, finished_at=utc_now())
            self.db.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
            self._event("cancelled", job_id=job_id, message=reason)

    def retry(self, job_id: int, to: JobState, from_start: bool = False, **values: Any) -> None:
        """Put a failed or cancelled job back in line (queued, or waiting to be checked or for its start) with a
        fresh count of attempts. `from_start` forgets its render plan and checkpoints (its source changed)."""
        if set(values) - {"created_ts", "wait_deadline", "wait_reason", "window", "start_at"}:
            raise TypeError(f"retry does not set {sorted(values)}")
        if from_start:
            values.update(spec=None, render_number=None, output_path=None, manifest_path=None)
        with self.db.atomic():
            if from_start:
                self.db.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
            self._move(job_id, "retry", to, frozenset({F, C}), "retried", to, attempts=0, error=None,
                       error_kind=None, cancel_reason=None, not_before=None, finished_at=None, progress=None,
                       worker=None, **values)

    # -- facts about a running job (not state changes) --------------------------

    def record_render(self, job_id: int, spec: dict, render_number: int, output_path: str,
                      manifest_path: str) -> None:
        """The first claim fixes the job's render plan, number and output names."""
        with self.db.atomic():
            self._move(job_id, "record render", None, frozenset({R}), None, None, spec=spec,
                       render_number=render_number, output_path=output_path, manifest_path=manifest_path)

    def revise_estimate(self, job_id: int, estimate: dict) -> None:
        """The estimate made again for the worker that claimed the job (it holds the model: no load time)."""
        with self.db.atomic():
            self._move(job_id, "revise estimate", None, frozenset({R}), None, None, estimate=estimate)

    def set_progress(self, job_id: int, progress: dict) -> None:
        with self.db.atomic():
            self.db["jobs"].update(job_id, encode({"progress": progress, "updated_at": utc_now()}))

    def _uncount(self, job_id: int) -> None:
        """An attempt that was paused rather than failed does not count against the limit."""
        self.db.execute("UPDATE jobs SET attempts = MAX(attempts - 1, 0) WHERE id = ?", (job_id,))
