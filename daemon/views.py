"""What `hotshot status` shows: shots with their renders stacked, and the jobs."""

from __future__ import annotations

from pathlib import Path

from daemon.store import Store


def status_data(store: Store) -> dict:
    """Shots (each source with its renders nested below it) and jobs, as plain data."""
    shots = []
    for shot in store.shots():
        media = store.media_in_shot(shot["id"])
        if not media:
            continue
        children: dict[int | None, list[dict]] = {}
        for item in media:
            children.setdefault(item["parent_id"] if item["kind"] == "render" else None, []).append(item)

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
    jobs = []
    for job in store.jobs():
        settings = job.get("settings") or {}
        jobs.append({
            "job": job["id"],
            "state": job["state"],
            "request": job["request_path"],
            "source": (settings.get("source") or {}).get("value"),
            "priority": job["priority"],
            "attempts": job["attempts"],
            "progress": job.get("progress"),
            "estimate": job.get("estimate"),
            "outputs": job.get("outputs"),
            "error": job.get("error"),
            "waiting_for": job.get("wait_reason") if job["state"] == "waiting" else None,
            "created": job["created_at"],
        })
    return {"shots": shots, "jobs": jobs}


def status_text(data: dict, roots: list[Path]) -> str:
    roots = list(dict.fromkeys([*roots, *(Path(shot["root"]) for shot in data["shots"])]))
    lines = ["Shots"]
    if not data["shots"]:
        lines.append("  (none yet)")
    for shot in data["shots"]:
        lines.append(f"  {Path(shot['root']).name}/{shot['shot']}".removesuffix("/."))
        for source in shot["sources"]:
            _tree(source, lines, "    ", "")
    lines += ["", "Jobs"]
    if not data["jobs"]:
        lines.append("  (none yet)")
    for job in data["jobs"]:
        lines.append(f"  {job['job']:>4}  {job['state']:<9} {_short(job['request'], roots):<44} {_detail(job)}")
    return "\n".join(lines)


def _tree(item: dict, lines: list[str], indent: str, branch: str) -> None:
    facts = [item["kind"]]
    if item["frames"]:
        facts.append(f"{item['frames']} frames {item['size']} {item['fps']} fps")
    if item["state"] != "ready":
        facts.append(f"{item['state']}: {item['error']}")
    if item["job"]:
        facts.append(f"job {item['job']}")
    label = f"{indent}{branch}{item['name']}"
    lines.append(f"{label:<40} {', '.join(facts)}")
    for child in item["renders"]:
        _tree(child, lines, indent + ("   " if branch else ""), "└─ ")


def _detail(job: dict) -> str:
    state = job["state"]
    if state == "running" and job["progress"]:
        progress = job["progress"]
        bar = _bar(progress.get("percent") or 0.0)
        eta = progress.get("eta_seconds")
        return (f"{bar} {progress.get('percent', 0):5.1f}%  chunk {progress.get('chunk')}/{progress.get('chunks')}"
                + (f"  ETA {eta:.0f} s" if eta is not None else ""))
    if state == "done" and job["outputs"]:
        return f"→ {job['outputs'].get('video')}"
    if state == "waiting":
        return job["waiting_for"] or ""
    if state in ("failed", "cancelled"):
        return job["error"] or ""
    if state == "queued" and job["estimate"]:
        return f"estimate {job['estimate'].get('seconds')} s"
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
