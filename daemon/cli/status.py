"""What `hotshot status` shows: shots with their renders stacked, the queue in order, recent jobs."""

from __future__ import annotations

from pathlib import Path

from daemon.cli.cluster import cluster_data, cluster_lines
from daemon.progress import describe
from daemon.states import FINISHED_STATES, Job, JobState, MediaKind, MediaState
from daemon.store import Store, utc_iso

RECENT = 10


def status_data(store: Store, daemon_pid: int | None = None) -> dict:
    """The daemon, shots (each source with its renders nested below it), the queue and every job, as plain data."""
    shots = []
    for shot in store.shots():
        media = store.media_in_shot(shot["id"])
        if not media:
            continue
        children: dict[int | None, list[dict]] = {}
        for item in media:
            children.setdefault(item["parent_id"] if item["kind"] == MediaKind.RENDER else None, []).append(item)

        def node(item: dict, children: dict = children) -> dict:
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

        shots.append({"shot": shot["rel"], "root": shot["root"], "sources": [node(m) for m in children.get(None, [])]})
    jobs = [_job(job) for job in store.jobs()]
    return {
        "daemon": {"running": daemon_pid is not None, "pid": daemon_pid, "paused": store.flag("paused") == "1"},
        "shots": shots,
        "queue": [_job(job) for job in store.queue()],
        "jobs": jobs,
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


def status_text(data: dict, roots: list[Path]) -> str:
    roots = list(dict.fromkeys([*roots, *(Path(shot["root"]) for shot in data["shots"])]))
    daemon = data["daemon"]
    lines = [f"Daemon  {'running (pid ' + str(daemon['pid']) + ')' if daemon['running'] else 'not running'}"
             + ("; claiming PAUSED (`hotshot resume` to go on)" if daemon["paused"] else "")]
    lines += cluster_lines(data.get("cluster"), daemon["running"])
    lines += ["", "Shots"]
    if not data["shots"]:
        lines.append("  (none yet)")
    for shot in data["shots"]:
        lines.append(f"  {Path(shot['root']).name}/{shot['shot']}".removesuffix("/."))
        for source in shot["sources"]:
            _tree(source, lines, "    ", "")
    lines += ["", "Queue (in the order jobs start)"]
    if not data["queue"]:
        lines.append("  (empty)")
    for job in data["queue"]:
        lines.append(_job_line(job, roots))
    finished = [job for job in data["jobs"] if job["state"] in FINISHED_STATES][-RECENT:]
    lines += ["", f"Recent (last {RECENT} ended)"]
    if not finished:
        lines.append("  (none yet)")
    for job in reversed(finished):
        lines.append(_job_line(job, roots))
    return "\n".join(lines)


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


