"""What `hotshot status` shows: the daemon, job counts, the first jobs in line, recent ends and the shots with
activity (each source with its renders stacked below it), or a filtered page of jobs; every part bounded, so
it answers as fast with a year of history as with a day's."""

from __future__ import annotations

from pathlib import Path

from daemon.cli.cluster import cluster_data, cluster_lines
from daemon.listing import (
    JobFilter,
    first_in_line,
    media_tree,
    page,
    recent_ends,
    shot_name,
    shots_with_activity,
    state_counts,
)
from daemon.progress import describe
from daemon.states import ACTIVE_STATES, FINISHED_STATES, Job, JobState, MediaState
from daemon.store import Store, utc_iso

RECENT = 10
LIMIT = 20          # jobs in line, and jobs on a page, unless --limit says otherwise
SHOTS = 10          # shots with activity shown
VIDEOS_PER_SHOT = 3  # newest videos of a shot in its tree (with the sources they descend from), unless --shot


def status_data(store: Store, daemon_pid: int | None = None, wanted: JobFilter | None = None,
                shots: list[dict] | None = None) -> dict:
    """The daemon, job counts, the first jobs in line, recent ends, shots with activity, and the page of jobs
    `wanted` picks (default: the newest), as plain data. `shots` (rows of the `shots` table) replaces the shots
    with activity by those shots, with their whole trees."""
    wanted = wanted or JobFilter()
    counts = state_counts(store)
    recent = recent_ends(store, RECENT)
    if shots is None:
        shots_total, chosen = shots_with_activity(store, recent, SHOTS)
        keep: int | None = VIDEOS_PER_SHOT
    else:
        shots_total, chosen, keep = len(shots), shots, None
    shown = []
    for shot in chosen:
        sources, left_out = media_tree(store, shot["id"], keep)
        shown.append({"shot": shot["rel"], "root": shot["root"], "name": shot_name(shot["root"], shot["rel"]),
                      "active": shot.get("active") or {}, "sources": sources, "videos_left_out": left_out})
    total, jobs = page(store, wanted)
    following = wanted.offset + len(jobs)
    return {
        "daemon": {"running": daemon_pid is not None, "pid": daemon_pid, "paused": store.flag("paused") == "1"},
        "totals": {"jobs": counts, "archived": state_counts(store, archived=True),
                   "in_line": sum(counts[state] for state in ACTIVE_STATES), "shots_with_activity": shots_total},
        "queue": [_job(job) for job in first_in_line(store, wanted.limit)],
        "recent": [_job(job) for job in recent],
        "shots": shown,
        "jobs": [_job(job) for job in jobs],
        "page": {"states": list(wanted.states), "shots": [shot["name"] for shot in shown] if shots is not None
                 else None, "archived": wanted.archived, "order": wanted.order_words, "total": total,
                 "offset": wanted.offset, "limit": wanted.limit,
                 "next_offset": following if following < total else None},
        "cluster": cluster_data(store),
    }


def _job(job: Job) -> dict:
    settings = job.settings or {}
    return {
        "job": job.id,
        "state": job.state,
        "request": job.request_path,
        "source": (settings.get("source") or {}).get("value"),
        "model": (settings.get("model") or {}).get("value"),
        "priority": job.priority,
        "full_clip": bool(job.full_clip),
        "attempts": job.attempts,
        "worker": job.worker if job.state == JobState.RUNNING else None,
        "window": job.window,
        "starts_at": utc_iso(job.start_at) if job.state == JobState.WAITING and job.start_at else None,
        "progress": job.progress,
        "estimate": job.estimate,
        "outputs": job.outputs,
        "error": job.error,
        "waiting_for": job.wait_reason if job.state == JobState.WAITING else None,
        "cancelling": job.cancel_reason,
        "created": job.created_at,
        "finished": job.finished_at,
    }


def status_text(data: dict, roots: list[Path], paged: bool = False) -> str:
    """The status for a person: with `paged` (a filter was asked for), the page of jobs instead of the queue
    and recent ends."""
    roots = list(dict.fromkeys([*roots, *(Path(shot["root"]) for shot in data["shots"])]))
    daemon, totals, listing = data["daemon"], data["totals"], data["page"]
    counts = totals["jobs"]
    lines = [f"Daemon  {'running (pid ' + str(daemon['pid']) + ')' if daemon['running'] else 'not running'}"
             + ("; claiming PAUSED (`hotshot resume` to go on)" if daemon["paused"] else ""),
             "Jobs    " + _counts(counts, ACTIVE_STATES) + "; ended: " + _counts(counts, FINISHED_STATES)
             + f"; archived: {sum(totals['archived'].values()):,}"]
    lines += cluster_lines(data.get("cluster"), daemon["running"])
    if paged:
        _page(data, roots, lines)
        if listing["shots"] is not None:
            _shots(data, lines)
        return "\n".join(lines)
    queue = data["queue"]
    shown = f"first {len(queue)} of {totals['in_line']:,}" if len(queue) < totals["in_line"] else "all"
    lines += ["", f"Queue (in the order jobs start; {shown})"]
    if not queue:
        lines.append("  (empty)")
    lines += [_job_line(job, roots) for job in queue]
    if len(queue) < totals["in_line"]:
        lines.append(f"  … {totals['in_line'] - len(queue):,} more: hotshot status --jobs active --offset {len(queue)}")
    lines += ["", f"Recent (last {RECENT} ended)"]
    if not data["recent"]:
        lines.append("  (none yet)")
    lines += [_job_line(job, roots) for job in data["recent"]]
    _shots(data, lines)
    return "\n".join(lines)


def _counts(counts: dict[str, int], states: tuple[JobState, ...]) -> str:
    return ", ".join(f"{counts[state]:,} {state}" for state in states)


def _shots(data: dict, lines: list[str]) -> None:
    lines.append("")
    if data["page"]["shots"] is not None:
        lines.append("Shots")
    else:
        total = data["totals"]["shots_with_activity"]
        more = f"; the first {len(data['shots'])}" if len(data["shots"]) < total else ""
        lines.append(f"Shots with activity (active jobs or among the recent ends: {total}{more}; "
                     "others: hotshot status --shot NAME)")
    if not data["shots"]:
        lines.append("  (none)")
    for shot in data["shots"]:
        active = ", ".join(f"{count} {state}" for state, count in shot["active"].items() if count)
        lines.append(f"  {shot['name']}" + (f"  ({active})" if active else ""))
        for source in shot["sources"]:
            _tree(source, lines, "    ", "")
        if shot["videos_left_out"]:
            lines.append(f"    … {shot['videos_left_out']} older videos: hotshot status --shot {shot['name']}")


def _page(data: dict, roots: list[Path], lines: list[str]) -> None:
    listing = data["page"]
    picked = [", ".join(listing["states"]) or "every state"]
    if listing["shots"]:
        picked.append("in " + ", ".join(listing["shots"]))
    if listing["archived"]:
        picked.append("archived")
    first, last = listing["offset"] + 1, listing["offset"] + len(data["jobs"])
    span = f"{first:,}-{last:,} of {listing['total']:,}" if data["jobs"] else f"none of {listing['total']:,}"
    lines += ["", f"Jobs ({'; '.join(picked)}; {span}, {listing['order']})"]
    if not data["jobs"]:
        lines.append("  (none)")
    lines += [_job_line(job, roots) for job in data["jobs"]]
    if listing["next_offset"] is not None:
        lines.append(f"  … {listing['total'] - last:,} more: the same with --offset {listing['next_offset']}")


def _job_line(job: dict, roots: list[Path]) -> str:
    priority = f"p{job['priority']:+d}" if job["priority"] else ""
    return f"  {job['job']:>4}  {job['state']:<9} {priority:<5} {_short(job['request'], roots):<40} {_detail(job)}"


def _tree(item: dict, lines: list[str], indent: str, branch: str) -> None:
    facts = [item["kind"]]
    if item["frames"]:
        facts.append(f"{item['frames']} frames {item['size']} {item['fps']} fps")
    if item["state"] != MediaState.READY:
        facts.append(f"{item['state']}: {item['error']}")
    if item["job"]:
        facts.append(f"job {item['job']}")
    label = f"{indent}{branch}{item['name']}"
    lines.append(f"{label:<40} {', '.join(facts)}")
    for child in item["renders"]:
        _tree(child, lines, indent + ("   " if branch else ""), "└─ ")


def _detail(job: dict) -> str:
    state = job["state"]
    if state == JobState.RUNNING:
        if job["cancelling"]:
            return f"stopping: {job['cancelling']}"
        progress = job["progress"] or {}
        bar = _bar(progress.get("percent") or 0.0)
        eta = progress.get("eta_seconds")
        return (f"{bar} {progress.get('percent') or 0:5.1f}%  {describe(progress)}"
                + (f"  ETA {eta:.0f} s" if eta is not None else "")
                + f"  on {job['worker']}")
    if state == JobState.DONE and job["outputs"]:
        warned = len(job["outputs"].get("warnings") or [])
        return f"→ {job['outputs'].get('video')}" + (f"  ({warned} warning{'s' * (warned > 1)})" if warned else "")
    if state == JobState.WAITING:
        return job["waiting_for"] or ""
    if state in (JobState.FAILED, JobState.CANCELLED):
        return job["error"] or ""
    if state == JobState.QUEUED:
        kind = "full clip" if job["full_clip"] else "range"
        estimate = job["estimate"] or {}
        spread = f" (likely {estimate['seconds_low']}-{estimate['seconds_high']} s)" \
            if "seconds_low" in estimate else ""
        estimate = f", estimate {estimate.get('seconds')} s{spread}" if estimate else ""
        return kind + estimate + (f" (in window {job['window']})" if job["window"] else "")
    return ""


def _bar(percent: float, width: int = 20) -> str:
    filled = int(round(width * max(0.0, min(percent, 100.0)) / 100))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _short(path: str, roots: list[Path]) -> str:
    for root in roots:
        try:
            return str(Path(root.name) / Path(path).relative_to(root))
        except ValueError:
            continue
    return path


