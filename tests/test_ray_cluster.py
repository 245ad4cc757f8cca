"""Render slots on a real Ray cluster: a head and two worker nodes on this machine, the tiny model.

Each case runs tests/ray_cases.py in a network namespace of its own (Ray then
finds only 127.0.0.1, and test traffic stays on loopback) and a PID namespace
(whatever Ray started ends with it: no raylet outlives a test). That needs
root; without it, or without Ray, the cases are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from daemon.cli.cluster import cluster_lines
from daemon.errors import ConfigError
from tests.conftest import PROJECT
from tests.harness import settings_for

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason='Ray is not installed (pip install -e ".[dev]" installs it)')
needs_namespaces = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                      reason="the cluster cases make network namespaces: they need root and unshare")


def run_case(case: str, tmp_path, models_dir, timeout: float = 400) -> dict:
    """Run one case of tests/ray_cases.py in fresh network and PID namespaces; what it observed."""
    script = f"ip link set lo up && exec {sys.executable} -m tests.ray_cases {case} {tmp_path} {models_dir}"
    done = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script],
                          cwd=PROJECT, capture_output=True, text=True, timeout=timeout)
    result = tmp_path / "result.json"
    assert done.returncode == 0 and result.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(result.read_text())


def raylets() -> list[str]:
    """Raylet processes running on this machine."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                command = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/raylet/raylet " in command:
            found.append(command[:120])
    return found


def test_missing_ray_refuses_to_start(tmp_path, models_dir, monkeypatch):
    """executor = "ray" without Ray installed: the daemon does not start, says how to install it, writes nothing."""
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    from daemon.service import Daemon

    settings = settings_for(tmp_path, models_dir, executor="ray")
    with pytest.raises(ConfigError, match=r'pip install "hotshot\[ray\]"'):
        Daemon(settings)
    assert not settings.state_dir.exists()


@needs_ray
def test_unreachable_cluster_refuses_to_start(tmp_path, models_dir):
    """A ray_address nobody answers at: the daemon stops at once with the address in the message, writes nothing."""
    from daemon.service import Daemon

    settings = settings_for(tmp_path, models_dir, executor="ray", ray_address="127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"nothing answers at ray_address = '127.0.0.1:9'.*ray start --head"):
        Daemon(settings)
    assert not settings.state_dir.exists()


@needs_ray
@needs_namespaces
def test_jobs_spread_over_both_nodes(tmp_path, models_dir, tiny_spec):
    """Two jobs, two CPU slots on two nodes: each node renders one job, every chunk's Render Info names the node
    and actor that rendered it, `hotshot status` lists the nodes and the slots; GPU slots on a cluster without
    GPUs are refused at start-up; and no raylet is left running."""
    result = run_case("spread", tmp_path, models_dir)
    assert result["states"] == ["done", "done"]
    by_job = [{(chunk["node_id"], chunk["actor"]) for chunk in chunks} for chunks in result["rendered_by"]]
    assert [len(places) for places in by_job] == [1, 1]  # one slot rendered all of a job's chunks
    (first,), (second,) = by_job
    assert first[0] != second[0] and first[1] != second[1]
    assert {first[0], second[0]} <= set(result["nodes"])
    cluster = result["cluster"]
    assert len(cluster["nodes"]) == 3 and sum(node["cpus"] for node in cluster["nodes"]) == 2
    assert {(slot["node_id"], slot["actor"]) for slot in cluster["slots"]} == {first, second}
    assert all(slot["state"] == "ready" and slot["models"] == ["tiny-wan-vace"] for slot in cluster["slots"])
    text = "\n".join(cluster_lines(cluster, daemon_running=True))
    assert "Cluster  Ray, 3 nodes (2 CPUs, 0 GPUs), 2 render slots" in text
    assert text.count("ready     node 127.0.0.1") == 2 and text.count("idle  holds tiny-wan-vace") == 2
    assert "has 0 GPUs" in result["gpu_refusal"] and "ray_gpus_per_slot = 0" in result["gpu_refusal"]
    assert not raylets()


@pytest.mark.slow
@needs_ray
@needs_namespaces
def test_node_lost_mid_render_finishes_elsewhere(tmp_path, models_dir, tiny_spec):
    """The node rendering a job is removed after two chunks: the job resumes on the other node from its
    checkpoints, without spending an attempt, and the output is byte-identical to an uninterrupted render of the
    same request on the cluster."""
    result = run_case("node_lost", tmp_path, models_dir)
    assert result["state"] == "done" and result["attempts"] == 1
    assert result["chunks_resumed"] >= 2
    nodes = [chunk["node_id"] for chunk in result["rendered_by"]]
    assert nodes[0] == result["lost_node"] and nodes[-1] != result["lost_node"]
    assert result["interrupted"] == result["uninterrupted"]


@pytest.mark.slow
@needs_ray
@needs_namespaces
def test_cancel_reaches_a_remote_render(tmp_path, models_dir, tiny_spec):
    """`hotshot cancel` of a job rendering on another node: cancelled within seconds, before its first chunk."""
    result = run_case("cancel", tmp_path, models_dir)
    assert result["state"] == "cancelled"
    assert result["seconds"] < 5
    assert result["chunks"] == 0


@pytest.mark.slow
@needs_ray
@needs_namespaces
def test_a_hung_slot_is_killed_by_the_stall_rule(tmp_path, models_dir, tiny_spec):
    """A slot that stops reporting in the middle of a chunk is killed after `worker_stall_seconds`; the job is
    retried (a second attempt) on a slot and finishes."""
    result = run_case("stall", tmp_path, models_dir)
    assert result["fired"]
    assert result["state"] == "done" and result["attempts"] == 2
    assert result["retried"] == ["the worker was killed: it made no progress for 20 s (worker_stall_seconds)"]


@pytest.mark.slow
@needs_ray
@needs_namespaces
def test_path_map_for_nodes_that_mount_storage_elsewhere(tmp_path, models_dir, tiny_spec):
    """The nodes see the shared storage under another name and not at all under the daemon's: without a path map
    both slots are refused at start-up with the root they cannot read and the job waits; with the map the job
    renders, and the daemon records its checkpoints under its own names."""
    result = run_case("path_map", tmp_path, models_dir)
    storage = result["storage"]
    for slot in result["refused"]:
        assert slot["state"] == "refused"
        assert slot["problems"] == [f"cannot read the watch root {storage}/root: No such file or directory"]
    assert result["unmapped_state"] == "queued"
    assert result["state"] == "done" and result["output_exists"]
    assert result["chunk_paths"] and all(path.startswith(storage + "/state/work/") for path in result["chunk_paths"])


@pytest.mark.slow
@needs_ray
@needs_namespaces
@pytest.mark.parametrize("ended", [False, True], ids=["render-held", "render-ended"])
def test_daemon_restart_finds_its_actors(ended, tmp_path, models_dir, tiny_spec):
    """kill -9 of the daemon while its slot is held in the middle of a chunk: the next daemon finds the same named
    actors (same processes); the render carries on for it (or, when it finished while no daemon ran, its kept
    outcome is recorded), and the job ends done with its one attempt, no chunk rendered twice, never requeued,
    byte-identical to an uninterrupted render on the cluster."""
    result = run_case("restart_ended" if ended else "restart_held", tmp_path, models_dir)
    assert result["chunks_at_kill"] >= 1 and result["output_at_attach"] == ended, result
    assert result["state"] == "done" and result["attempts"] == 1, result
    assert result["chunks_resumed"] == 0, result  # carried on, not resumed: nothing was rendered twice
    assert not result["published_again"]
    assert not {"recovered", "interrupted", "retry"} & set(result["events"]), result["events"]
    assert result["pids"] == result["first_pids"] and len(result["pids"]) == 2
    assert len({chunk["actor"] for chunk in result["rendered_by"]}) == 1
    assert result["interrupted"] == result["uninterrupted"]


@pytest.mark.slow
@needs_ray
@needs_namespaces
@pytest.mark.parametrize("kind", ["client", "address"])
def test_head_restart_is_rejoined(kind, tmp_path, models_dir, tiny_spec):
    """The Ray head (`ray start --head`) is stopped while a slot is held in the middle of a chunk, and started
    again on the same port: `hotshot run`, joined through Ray Client (it rejoins in-process) or by the head's
    address (it starts itself anew, same pid), puts the job back in line without spending its attempt, joins the
    new cluster with new slots, and the job finishes from its checkpoints, byte-identical to an uninterrupted
    render on the cluster."""
    result = run_case(f"head_restart_{kind}", tmp_path, models_dir)
    assert result["chunks_at_stop"] >= 1, result
    assert result["state"] == "done" and result["attempts"] == 1, result
    assert result["chunks_resumed"] >= result["chunks_at_stop"], result
    kinds = [event for event, _ in result["events"]]
    assert "retry" not in kinds and "interrupted" in kinds, result["events"]
    assert result["daemon_starts"] == (1 if kind == "client" else 2), result
    assert len(result["rejoined"]) == 1, result
    assert result["interrupted"] == result["uninterrupted"]
    assert result["exit_code"] == 0


def test_path_map_translates_paths_both_ways_at_folder_boundaries():
    """A job's paths go out with the nodes' prefix and come back with the daemon's; a folder that only starts
    with the same letters, and text that is not a path, are left alone."""
    from daemon.config import PathMapping
    from daemon.messages import ChunkDone, Render
    from daemon.ray_worker import PathMap

    paths = PathMap([PathMapping.model_validate({"from": "/mnt/shots", "to": "/shots"}),
                     PathMapping.model_validate({"from": "/mnt/shots/work", "to": "/scratch"})])
    sent = paths.to_node(Render({"source": "/mnt/shots/sh010/plate.mp4", "work_dir": "/mnt/shots/work/job-000001",
                                 "other": "/mnt/shotsold/plate.mp4", "prompt": "a /mnt/shots look",
                                 "keyframes": [{"path": "/mnt/shots/sh010/key.png"}]}))
    assert sent.job == {"source": "/shots/sh010/plate.mp4", "work_dir": "/scratch/job-000001",
                        "other": "/mnt/shotsold/plate.mp4", "prompt": "a /mnt/shots look",
                        "keyframes": [{"path": "/shots/sh010/key.png"}]}
    back = paths.to_daemon(ChunkDone(1, {"raw_path": "/scratch/job-000001/chunk-0000.npy", "index": 0}))
    assert back == ChunkDone(1, {"raw_path": "/mnt/shots/work/job-000001/chunk-0000.npy", "index": 0})


def test_relative_path_map_is_refused(tmp_path, models_dir):
    """A path_map entry that is not an absolute folder stops the start with the value in the message."""
    with pytest.raises(ConfigError, match="path_map entries are absolute folders; 'shots' is not"):
        settings_for(tmp_path, models_dir, path_map=[{"from": "shots", "to": "/shots"}])
