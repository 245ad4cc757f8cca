"""The Ray cluster cases, run inside a network namespace of their own (tests/test_ray_cluster.py).

`python -m tests.ray_cases CASE FOLDER MODELS` builds a real Ray cluster on this
machine (`ray.cluster_utils.Cluster`: a head without CPUs and two worker nodes
with one CPU each, so each render slot lands on a node of its own), runs the
daemon against it over shot folders under FOLDER, and writes what it observed
to FOLDER/result.json for the test to judge. It must run where Ray can only
find 127.0.0.1 (`unshare --net`), and in a PID namespace so that nothing Ray
started outlives it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from daemon.errors import ConfigError
from daemon.service import Daemon
from daemon.store import Store
from tests.conftest import DATA
from tests.harness import (
    RunningDaemon,
    chunks_done,
    settings_for,
    sha,
    status_of,
    wait_for,
    wait_for_state,
    write_request,
)

STORE_BYTES = 80 * 2**20
REQUEST = {"prompt": "charcoal sketch", "frame_range": [0, 59], "output_size": 96, "steps": 2, "seed": 11,
           "context": {"size": 17, "overlap": 5}}


def cluster(nodes: int = 2):
    from ray.cluster_utils import Cluster

    built = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE_BYTES})
    for _ in range(nodes):
        built.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
    built.wait_for_nodes()
    return built


def shot(folder: Path, name: str, **request) -> Path:
    path = folder / "root" / name
    path.mkdir(parents=True)
    shutil.copyfile(DATA / "chaplin.mp4", path / "plate.mp4")
    return write_request(path / "r.render.json", **{**REQUEST, **request})


def ray_settings(folder: Path, models: Path, built, **overrides):
    """The harness's settings with two CPU render slots on the cluster `built` (or at that address)."""
    values = {"executor": "ray", "ray_address": getattr(built, "address", built), "ray_slots": 2,
              "ray_gpus_per_slot": 0, "log_level": "info", **overrides}
    return settings_for(folder, models, **values)


def settled(database: Path) -> dict | None:
    """The cluster block `hotshot status` reads, once no slot holds a job (it is refreshed a moment later)."""
    store = Store.open(database, read_only=True)
    try:
        block = store.cluster()
    finally:
        store.close()
    return block if block and all(slot["job"] is None for slot in block["slots"]) else None


def output_sha(request: Path) -> str | None:
    output = request.with_name("plate_r001.mp4")
    return sha(output) if output.exists() else None


def rendered_by(request: Path) -> list[dict]:
    info = json.loads(request.with_name("plate_r001.render-info.json").read_text())
    return [chunk["rendered_by"] for chunk in info["chunk_plan"]["chunks"]]


def spread(folder: Path, models: Path) -> dict:
    """Two jobs, two slots on two nodes: each node renders one."""
    built = cluster()
    try:
        requests = [shot(folder, f"sh{index:03d}", frame_range=[0, 29]) for index in (10, 20)]
        try:
            Daemon(ray_settings(folder, models, built, ray_gpus_per_slot=1))
            gpu_refusal = None
        except ConfigError as exc:
            gpu_refusal = str(exc)
        settings = ray_settings(folder, models, built)
        with RunningDaemon(settings):
            states = [wait_for_state(request, ("done", "failed"), 240)["state"] for request in requests]
            cluster_block = wait_for(lambda: settled(settings.database), 10, "the cluster block with both jobs' end")
        return {"gpu_refusal": gpu_refusal, "states": states,
                "rendered_by": [rendered_by(request) for request in requests], "cluster": cluster_block,
                "nodes": [node.node_id for node in built.list_all_nodes()]}
    finally:
        built.shutdown()


def node_lost(folder: Path, models: Path) -> dict:
    """A node removed while it renders: the job finishes on the other node from its last checkpoint."""
    built = cluster()
    try:
        uninterrupted = shot(folder, "sh000")
        settings = ray_settings(folder, models, built)
        with RunningDaemon(settings) as running:
            wait_for_state(uninterrupted, ("done", "failed"), 240)
            request = shot(folder, "sh010")
            wait_for(lambda: chunks_done(settings.database, 2) >= 2, 240, "two finished chunks")
            slot = running.workers.holding(2)
            lost = slot.where["node_id"]
            node = next(node for node in built.worker_nodes if node.node_id == lost)
            built.remove_node(node, allow_graceful=False)
            status = wait_for_state(request, ("done", "failed"), 240)
        return {"state": status["state"], "attempts": status["attempts"], "lost_node": lost,
                "chunks_resumed": (status.get("outputs") or {}).get("chunks_resumed"),
                "rendered_by": rendered_by(request), "uninterrupted": output_sha(uninterrupted),
                "interrupted": output_sha(request)}
    finally:
        built.shutdown()


def cancel(folder: Path, models: Path) -> dict:
    """A cancel of a job rendering on a remote node: how long until it is cancelled."""
    built = cluster()
    try:
        request = shot(folder, "sh010", steps=6)
        settings = ray_settings(folder, models, built)
        with RunningDaemon(settings):
            wait_for(lambda: (status_of(request) or {}).get("progress", {}).get("step", 0) >= 1, 240, "rendering")
            store = Store.open(settings.database)
            sent = time.monotonic()
            store.submit_command("cancel", str(request))
            store.close()
            status = wait_for_state(request, ("cancelled", "done", "failed"), 120)
            seconds = time.monotonic() - sent
        return {"state": status["state"], "seconds": seconds, "chunks": chunks_done(settings.database)}
    finally:
        built.shutdown()


def stall(folder: Path, models: Path) -> dict:
    """A slot that hangs in the middle of a chunk is killed by the stall rule; the job is retried elsewhere."""
    import os

    from daemon import workers

    workers.RESTART_SECONDS = 0.5
    fault = folder / "fault"
    fault.write_text("chunk 5 hang\n")
    os.environ["HOTSHOT_FAULTS"] = str(fault)  # handed to the slots when they start
    built = cluster()
    try:
        request = shot(folder, "sh010")
        settings = ray_settings(folder, models, built, worker_stall_seconds=20.0)
        with RunningDaemon(settings):
            status = wait_for_state(request, ("done", "failed"), 240)
        store = Store.open(settings.database, read_only=True)
        retried = [event["message"] for event in store.events(status["job"]) if event["kind"] == "retry"]
        store.close()
        return {"state": status["state"], "attempts": status["attempts"], "retried": retried,
                "fired": Path(f"{fault}.fired").exists(), "rendered_by": rendered_by(request)}
    finally:
        built.shutdown()


def serve_cluster(folder: Path, models: Path) -> dict:
    """A cluster for another process's daemon: its address in FOLDER/address until FOLDER/stop appears."""
    built = cluster()
    try:
        (folder / "address").write_text(built.address)
        wait_for(lambda: (folder / "stop").exists(), 600, "the stop file")
    finally:
        built.shutdown()
    return {}


def separate_cluster(folder: Path, script: str = "") -> tuple[subprocess.Popen, str]:
    """`serve_cluster` in a process of its own, after `script` (shell) set up its mount namespace."""
    command = f"{script} exec {sys.executable} -m tests.ray_cases serve_cluster {folder} -"
    process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", command])
    address = wait_for(lambda: (folder / "address").exists() and (folder / "address").read_text(), 120,
                       "the cluster's address")
    return process, address


def stop_cluster(folder: Path, process: subprocess.Popen) -> None:
    (folder / "stop").write_text("")
    process.wait(60)


def path_map(folder: Path, models: Path) -> dict:
    """The nodes mount the shared storage under another name than the daemon, and cannot see the daemon's:
    without a path map every node is refused at start-up; with one, the job renders."""
    storage, farm = folder / "storage", folder / "farm"
    storage.mkdir()
    farm.mkdir()
    process, address = separate_cluster(folder, f"mount --bind {storage} {farm} && "
                                                f"mount -t tmpfs tmpfs {storage} &&")
    try:
        request = shot(storage, "sh010", frame_range=[0, 29])
        unmapped = ray_settings(storage, models, address)
        with RunningDaemon(unmapped) as running:
            refused = wait_for(lambda: all(slot.state == "refused" for slot in running.workers) and
                               [slot.status() for slot in running.workers], 120, "both slots refused")
            time.sleep(2)
            unmapped_state = status_of(request)["state"]
        mapped = ray_settings(storage, models, address, path_map=[{"from": str(storage), "to": str(farm)}])
        with RunningDaemon(mapped):
            status = wait_for_state(request, ("done", "failed"), 240)
        store = Store.open(mapped.database, read_only=True)
        chunks = store.chunks(1)
        store.close()
        return {"refused": refused, "unmapped_state": unmapped_state, "state": status["state"],
                "error": status.get("last_error"), "chunk_paths": [chunk["raw_path"] for chunk in chunks],
                "storage": str(storage), "farm": str(farm),
                "output": str(request.with_name("plate_r001.mp4")), "output_exists": request.with_name(
                    "plate_r001.mp4").exists()}
    finally:
        stop_cluster(folder, process)


def daemon_config(folder: Path, settings, address: str) -> Path:
    """A hotshot.toml for `hotshot run` with the harness's settings on the cluster at `address`."""
    config = folder / "hotshot.toml"
    config.write_text("\n".join(f"{key} = {json.dumps(value)}" for key, value in {
        "roots": [str(root) for root in settings.roots], "state_dir": str(settings.state_dir),
        "models_dir": str(settings.models_dir), "catalogs": [str(path) for path in settings.catalogs],
        "stable_seconds": 0.3, "executor": "ray", "ray_address": address, "ray_slots": 2,
        "ray_gpus_per_slot": 0, "log_format": "json", "retry_backoff_seconds": 0.0}.items()))
    return config


def log_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def restart(folder: Path, models: Path, ended: bool) -> dict:
    """The daemon killed (kill -9) while its slot is held in the middle of a chunk, and started again: it finds
    its actors, and the render carries on for the new daemon (or, `ended`, the render finished while no daemon
    ran, and the new daemon takes its kept outcome): nothing is rendered twice."""
    import os

    fault = folder / "fault"
    fault.write_text(f"chunk 9 pause {3 if ended else 20}\n")  # holds the render in its second chunk
    process, address = separate_cluster(folder)
    try:
        request = shot(folder, "sh010")
        output, manifest = request.with_name("plate_r001.mp4"), request.with_name("plate_r001.render-info.json")
        settings = ray_settings(folder, models, address)
        config = daemon_config(folder, settings, address)
        log = folder / "first-daemon.log"
        with log.open("w") as written:
            first = subprocess.Popen([str(Path(sys.executable).with_name("hotshot")), "run", "--config", str(config)],
                                     stdout=written, stderr=written, env={**os.environ, "HOTSHOT_FAULTS": str(fault)})
            wait_for(lambda: Path(f"{fault}.fired").exists(), 240, "the render held in a chunk")
            chunks_at_kill = chunks_done(settings.database)
            first.kill()
            first.wait()
        if ended:
            wait_for(manifest.exists, 120, "the render finished with no daemon")
        published = manifest.exists() and manifest.stat().st_mtime_ns
        first_pids = sorted(line["pid"] for line in log_lines(log) if line["event"] == "render slot ready")
        with RunningDaemon(settings) as running:
            wait_for(lambda: all(slot.state == "ready" for slot in running.workers), 120, "both slots ready")
            output_at_attach = output.exists()
            status = wait_for_state(request, ("done", "failed"), 240)
            found = sorted(slot.where.get("pid") for slot in running.workers)
            uninterrupted = shot(folder, "sh000")
            wait_for_state(uninterrupted, ("done", "failed"), 240)
        store = Store.open(settings.database, read_only=True)
        events = [event["kind"] for event in store.events(status["job"])]
        store.close()
        return {"state": status["state"], "chunks_resumed": (status.get("outputs") or {}).get("chunks_resumed"),
                "attempts": status["attempts"], "pids": found, "first_pids": first_pids, "events": events,
                "chunks_at_kill": chunks_at_kill, "output_at_attach": output_at_attach,
                "published_again": published is not False and manifest.stat().st_mtime_ns != published,
                "rendered_by": rendered_by(request), "uninterrupted": output_sha(uninterrupted),
                "interrupted": output_sha(request)}
    finally:
        stop_cluster(folder, process)


def restart_held(folder: Path, models: Path) -> dict:
    return restart(folder, models, ended=False)


def restart_ended(folder: Path, models: Path) -> dict:
    return restart(folder, models, ended=True)


HEAD_PORT, CLIENT_PORT = 6390, 10001


def ray_head(action: str, folder: Path) -> None:
    """`ray start --head` (two CPUs, Ray Client on CLIENT_PORT) or `ray stop --force`, as separate processes."""
    import os
    import socket

    ray = str(Path(sys.executable).with_name("ray"))
    command = [ray, "stop", "--force"] if action == "stop" else [
        ray, "start", "--head", "--port", str(HEAD_PORT), "--ray-client-server-port", str(CLIENT_PORT),
        "--num-cpus", "2", "--object-store-memory", str(STORE_BYTES), "--include-dashboard", "false",
        "--disable-usage-stats"]
    with (folder / f"head-{action}.log").open("a") as output:
        subprocess.run(command, check=True, stdout=output, stderr=output, timeout=120,
                       env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # Ray 2.60's `ray start` turns on tokens

    def client_port_open() -> bool:
        try:
            socket.create_connection(("127.0.0.1", CLIENT_PORT), 1).close()
        except OSError:
            return False
        return True

    if action == "start":  # the Ray Client server comes up a moment after `ray start` returns
        wait_for(client_port_open, 60, "the Ray Client port")


def head_restart(folder: Path, models: Path, address: str) -> dict:
    """The Ray head (`ray start --head`) stopped while a slot is held in the middle of a chunk, and started again
    on the same port: the daemon, a `hotshot run` joined at `address`, rejoins the new cluster by itself, starts
    new slots, and the job resumes from its checkpoints."""
    import os
    import signal

    fault = folder / "fault"
    fault.write_text("chunk 9 pause 60\n")  # holds the render in its second chunk until the head is stopped
    ray_head("start", folder)
    daemon = None
    try:
        request = shot(folder, "sh010")
        settings = ray_settings(folder, models, address)
        log = folder / "daemon.log"
        with log.open("w") as output:
            daemon = subprocess.Popen([str(Path(sys.executable).with_name("hotshot")), "run", "--config",
                                       str(daemon_config(folder, settings, address))], stdout=output, stderr=output,
                                      env={**os.environ, "HOTSHOT_FAULTS": str(fault), "RAY_AUTH_MODE": "disabled"})
        wait_for(lambda: Path(f"{fault}.fired").exists(), 240, "the render held in a chunk")
        chunks_at_stop = chunks_done(settings.database)
        ray_head("stop", folder)
        stopped = time.monotonic()
        wait_for(lambda: status_of(request)["state"] == "queued", 120, "the job back in line")
        noticed = time.monotonic() - stopped
        ray_head("start", folder)
        started = time.monotonic()
        wait_for(lambda: status_of(request)["state"] != "queued", 240, "the job claimed again")
        claimed = time.monotonic() - started
        status = wait_for_state(request, ("done", "failed"), 240)
        uninterrupted = shot(folder, "sh000")
        wait_for_state(uninterrupted, ("done", "failed"), 240)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(120)
        store = Store.open(settings.database, read_only=True)
        events = [(event["kind"], event["message"]) for event in store.events(status["job"])]
        store.close()
        lines = log_lines(log)
        return {"state": status["state"], "attempts": status["attempts"], "events": events, "exit_code": code,
                "chunks_at_stop": chunks_at_stop, "noticed_seconds": round(noticed, 1),
                "claimed_seconds": round(claimed, 1),
                "chunks_resumed": (status.get("outputs") or {}).get("chunks_resumed"),
                "daemon_starts": sum(line["event"] == "daemon started" for line in lines),
                "rejoined": [line for line in lines if line["event"] == "joined the Ray cluster again"],
                "rendered_by": rendered_by(request), "uninterrupted": output_sha(uninterrupted),
                "interrupted": output_sha(request)}
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        ray_head("stop", folder)


def head_restart_client(folder: Path, models: Path) -> dict:
    return head_restart(folder, models, f"ray://127.0.0.1:{CLIENT_PORT}")


def head_restart_address(folder: Path, models: Path) -> dict:
    return head_restart(folder, models, f"127.0.0.1:{HEAD_PORT}")


CASES = {"spread": spread, "node_lost": node_lost, "cancel": cancel, "path_map": path_map, "restart_held": restart_held,
         "restart_ended": restart_ended,
         "stall": stall, "serve_cluster": serve_cluster, "head_restart_client": head_restart_client,
         "head_restart_address": head_restart_address}

if __name__ == "__main__":
    case, folder, models = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    started = time.monotonic()
    result = CASES[case](folder, models)
    if case != "serve_cluster":
        result["seconds_total"] = round(time.monotonic() - started, 1)
        (folder / "result.json").write_text(json.dumps(result, indent=1, default=str))
