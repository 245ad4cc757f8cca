"""Render slots on a Ray cluster against local worker processes: the same jobs, the tiny model.

Three runs of the daemon over the same shots (JOBS requests, 3 chunks each):

- local: `executor = "local"`, two worker processes on this machine;
- ray, 1 node: a Ray head without CPUs and one node with one CPU, one slot;
- ray, 2 nodes: the same head and two one-CPU nodes, two slots.

Each prints the time until the slots took work (start-up), jobs per minute
(from the first job's start to the last one's end) and the per-job overhead:
a job's time from claim to recorded end, less the render time its Render Info
gives (dispatch, reports, path mapping, the result's way back, the database);
the CPU seconds of the daemon's own process (not its workers'), and of those
the CPU time its loop spent on each report of a worker (progress, chunk,
result: the database update and the status file).
Ray's nodes run on this machine, in a network namespace of their own (run as
root; the script re-executes itself under `unshare`), so the figures show what
hotshot adds, not a network's cost. Every renderer gets one torch thread
(`OMP_NUM_THREADS=1`, what a one-CPU Ray slot gets), so the runs compare the
executors, not thread counts.

    .venv/bin/python bench/cluster.py [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import PROJECT, clip, tiny_spec

from daemon.config import load_settings
from daemon.service import Daemon
from daemon.store import Store

JOBS = 6
STORE_BYTES = 80 * 2**20
REQUEST = {"prompt": "charcoal sketch", "frame_range": [0, 40], "output_size": 96, "steps": 2, "seed": 11,
           "context": {"size": 17, "overlap": 5}}


def shots(folder: Path, jobs: int, source: Path) -> None:
    for index in range(jobs):
        shot = folder / "root" / f"sh{index:03d}"
        shot.mkdir(parents=True)
        shutil.copyfile(source, shot / "plate.mp4")
        (shot / "r.render.json").write_text(json.dumps(REQUEST))


def daemon_cpu() -> float:
    """CPU seconds of this process (the daemon's loop and its reader threads; not the workers or the actors)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(folder: Path, jobs: int, source: Path, models: Path, **executor) -> dict:
    """One drained daemon over fresh shots; its figures."""
    shutil.rmtree(folder, ignore_errors=True)
    shots(folder, jobs, source)
    settings = load_settings(None, roots=[folder / "root"], state_dir=folder / "state", models_dir=models,
                             catalogs=[PROJECT / "config" / "models.toml"], stable_seconds=0.2,
                             reconcile_seconds=2.0, log_format="json", log_level="warning", **executor)
    cpu = daemon_cpu()
    started = time.monotonic()
    daemon = Daemon(settings)
    reports, handling = 0, 0.0
    handle_report = daemon.jobs.message

    def counted(handle, report) -> None:  # counts the reports the daemon's loop handled, and their CPU time
        nonlocal reports, handling
        reports += 1
        before = time.thread_time()
        handle_report(handle, report)
        handling += time.thread_time() - before

    daemon.jobs.message = counted
    daemon.run(drain=True)
    wall = time.monotonic() - started
    cpu = daemon_cpu() - cpu
    store = Store.open(settings.database, read_only=True)
    rows = store.jobs()
    store.close()
    assert all(job.state == "done" for job in rows), [(job.id, job.state, job.error) for job in rows]
    begin = min(datetime.fromisoformat(job.started_at) for job in rows)
    end = max(datetime.fromisoformat(job.finished_at) for job in rows)
    overheads = []
    for job in rows:
        info = json.loads(Path(job.request_path).with_name(job.outputs["render_info"]).read_text())
        spent = (datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)).total_seconds()
        overheads.append(spent - info["timing"]["seconds"])
    span = (end - begin).total_seconds()
    return {"wall": wall, "startup": wall - span, "per_minute": 60 * len(rows) / span,
            "overhead": sorted(overheads)[len(overheads) // 2], "cpu": cpu, "reports": reports,
            "per_report": handling / max(reports, 1)}


def ray_run(folder: Path, jobs: int, source: Path, models: Path, nodes: int) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE_BYTES})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
        cluster.wait_for_nodes()
        return run(folder, jobs, source, models, executor="ray", ray_address=cluster.address, ray_slots=nodes,
                   ray_gpus_per_slot=0)
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    args = parser.parse_args()
    if os.environ.get("HOTSHOT_BENCH_NAMESPACE") != "1":
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            print("bench/cluster.py skipped: it runs its Ray nodes in a network namespace (root and unshare)")
            return
        script = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} --jobs {args.jobs}"
        done = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c",
                               script], env={**os.environ, "HOTSHOT_BENCH_NAMESPACE": "1", "OMP_NUM_THREADS": "1"})
        sys.exit(done.returncode)
    tiny_spec()
    models = PROJECT / "var" / "models"
    source = clip(41, "160x96")
    with tempfile.TemporaryDirectory(prefix="hotshot-bench-cluster-") as tmp:
        folder = Path(tmp)
        figures = {
            "local, 2 worker processes": run(folder / "run", args.jobs, source, models,
                                             devices=["cpu", "cpu"]),
            "ray, 1 node (1 slot)": ray_run(folder / "run", args.jobs, source, models, 1),
            "ray, 2 nodes (2 slots)": ray_run(folder / "run", args.jobs, source, models, 2),
        }
    print(f"\n{args.jobs} jobs of 41 frames (3 chunks, 2 steps, 96 px), tiny model, CPU, one torch thread each")
    print(f"{'executor':<28} {'start-up s':>10} {'jobs/min':>9} {'overhead/job s':>15} {'wall s':>7} "
          f"{'daemon CPU s':>13} {'reports':>8} {'CPU ms/report':>14}")
    for name, figure in figures.items():
        print(f"{name:<28} {figure['startup']:>10.1f} {figure['per_minute']:>9.1f} {figure['overhead']:>15.2f} "
              f"{figure['wall']:>7.1f} {figure['cpu']:>13.1f} {figure['reports']:>8} "
              f"{1000 * figure['per_report']:>14.2f}")


if __name__ == "__main__":
    main()
