"""Several workers on one machine: jobs run side by side, never twice, and prefer a worker with their model."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from daemon.config import load_settings
from daemon.errors import ConfigError
from daemon.gpus import worker_devices
from daemon.store import Store
from engine.faults import ENV as FAULTS_ENV
from tests.harness import RunningDaemon, settings_for, state_of, status_of, wait_for, write_request
from tests.reliability.support import Faults

JOB = {"output_size": 64, "steps": 2, "seed": 9, "frame_range": [0, 24], "context": {"size": 17, "overlap": 5}}


def test_two_cpu_workers_render_two_jobs_at_once_and_never_the_same_job_twice(tmp_path, media, models_dir,
                                                                               tiny_spec):
    """With devices = ["cpu", "cpu"] two requests render at the same time on different workers, each job is
    claimed once, and each worker then reports the model it holds."""
    settings = settings_for(tmp_path, models_dir, devices=["cpu", "cpu"])
    requests = []
    for name in ("sh010", "sh020"):
        shot = settings.roots[0] / name
        shot.mkdir()
        shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
        requests.append(write_request(shot / "r.render.json", **JOB))
    with RunningDaemon(settings) as daemon:
        def side_by_side():
            states = [status_of(request) or {} for request in requests]
            return all(state.get("state") == "running" for state in states) and states

        both = wait_for(side_by_side, 120, "both jobs running at once")
        wait_for(lambda: all(state_of(request) in ("done", "failed") for request in requests),
                 240, "both renders to finish")
        loaded = [handle.models for handle in daemon.workers]
    assert {state["worker"] for state in both} == {"worker-0", "worker-1"}
    assert [status_of(request)["state"] for request in requests] == ["done", "done"]
    assert loaded == [frozenset({"tiny-wan-vace"})] * 2
    store = Store.open(settings.database, read_only=True)
    claims = [event["job_id"] for event in store.events() if event["kind"] == "claimed"]
    store.close()
    assert sorted(claims) == [1, 2]


def test_a_render_of_a_render_published_before_its_job_ended_keeps_its_lineage(tmp_path, media, models_dir,
                                                                                 monkeypatch):
    """A render's output can settle on disk before the daemon records its worker's result (here its Render
    Info is held back 2 s). A request waiting for that render, taken at once by the other worker, still
    records the whole chain from the original: the output is registered by the job's end, not as a new
    file with no parent."""
    faults = Faults(tmp_path / "faults")
    monkeypatch.setenv(FAULTS_ENV, str(faults.path))
    faults.arm("manifest", 1, "pause", "2")
    settings = settings_for(tmp_path, models_dir, devices=["cpu", "cpu"], default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    tiny = {"frame_range": [0, 8], "output_size": 64, "context": {"size": 9, "overlap": 2}}
    first = write_request(shot / "a.render.json", **tiny)
    second = write_request(shot / "b.render.json", source="plate_r001.mp4", **tiny)
    with RunningDaemon(settings):
        wait_for(lambda: state_of(second) in ("done", "failed"), 120, "the render of the render")
    assert faults.fired(), "the Render Info was not held back"
    assert state_of(first) == "done" and status_of(second)["outputs"]["video"] == "plate_r002.mp4"
    manifest = json.loads((shot / "plate_r002.render-info.json").read_text())
    assert manifest["lineage"] == {"root_source": "plate.mp4", "parent_render": "plate_r001.mp4",
                                   "chain": ["plate.mp4", "plate_r001.mp4", "plate_r002.mp4"]}


def test_a_worker_takes_the_job_whose_model_it_has_loaded_but_never_before_a_more_urgent_one(tmp_path):
    """At equal priority and kind a worker claims the job for its loaded model first, even if newer;
    a higher priority job still comes first, and range renders still come before full clips."""
    store = Store.open(tmp_path / "hotshot.db")

    def add(name: str, model: str, **job) -> int:
        return store.enqueue(
            {"shot_id": None, "path": f"/r/{name}.render.json", "content_hash": name, "size": 1, "mtime_ns": 1,
             "raw": "{}"},
            {"request_path": f"/r/{name}.render.json", "state": "queued",
             "settings": {"model": {"value": model, "from": "request"}}, **job})

    other = add("other", "wan-vace-1_3b", full_clip=1)
    mine = add("mine", "tiny-wan-vace", full_clip=1)
    urgent = add("urgent", "wan-vace-1_3b", full_clip=1, priority=3)
    quick_test = add("quick-test", "wan-vace-1_3b", full_clip=0)
    loaded = frozenset({"tiny-wan-vace"})
    order = [store.claim_next("worker-0", 0.0, loaded).id for _ in range(4)]
    store.close()
    assert order == [urgent, quick_test, mine, other]


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """An `nvidia-smi` on PATH that lists three GPUs (and a MIG slice, which is not a device of its own)."""
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho 'GPU 0: H100 (UUID: GPU-a)'\necho '  MIG 1g.10gb Device 0: (UUID: MIG-a)'\n"
                    "echo 'GPU 1: H100 (UUID: GPU-b)'\necho 'GPU 2: H100 (UUID: GPU-c)'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_auto_devices_give_one_worker_per_gpu(fake_nvidia_smi, monkeypatch):
    """devices = "auto" starts one worker per GPU the driver lists, narrowed by CUDA_VISIBLE_DEVICES."""
    assert worker_devices("auto") == ["cuda:0", "cuda:1", "cuda:2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert worker_devices("auto") == ["cuda:0", "cuda:1"]
    assert worker_devices(["cpu", "cpu"]) == ["cpu", "cpu"]


def test_auto_devices_without_a_gpu_start_one_worker_that_chooses(tmp_path, monkeypatch):
    """With no nvidia-smi and no driver entries, "auto" starts one worker that picks CUDA or the CPU itself."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("daemon.gpus.PROC_GPUS", tmp_path / "no-driver")
    assert worker_devices("auto") == ["auto"]


def test_device_names_are_checked(tmp_path):
    """A device that is not auto, cpu, mps or cuda[:N] stops the daemon with the name in the message."""
    with pytest.raises(ConfigError, match="unknown device 'gpu1'"):
        load_settings(None, roots=[tmp_path / "root"], state_dir=tmp_path / "state", devices=["cuda:0", "gpu1"])
    with pytest.raises(ConfigError, match="list at least one device"):
        load_settings(None, roots=[tmp_path / "root"], state_dir=tmp_path / "state", devices=[])


def _render_with_a_slow_load(tmp_path, media, models_dir, monkeypatch, load_seconds: int, stall_seconds: float):
    """A passthrough render whose model load the `load` fault holds for `load_seconds`, under a stall limit of
    `stall_seconds`: its status while the model loaded, its status at the end and the stall kills of its job."""
    faults = Faults(tmp_path / "faults")
    monkeypatch.setenv(FAULTS_ENV, str(faults.path))
    faults.arm("load", 1, "pause", str(load_seconds))
    settings = settings_for(tmp_path, models_dir, default_model="passthrough", worker_stall_seconds=stall_seconds)
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    request = write_request(shot / "r.render.json", frame_range=[0, 8], output_size=64,
                            context={"size": 9, "overlap": 2})
    with RunningDaemon(settings):
        loading = wait_for(lambda: (status := status_of(request) or {}).get("message", "").startswith("loading model")
                           and status, 60, "the model to be loading")
        status = wait_for(lambda: (status := status_of(request) or {}).get("state") in ("done", "failed")
                          and status, 120, "the render to end")
    assert faults.fired(), "the load was not held up"
    store = Store.open(settings.database, read_only=True)
    kills = [event["message"] for event in store.events(status["job"]) if "no progress" in (event["message"] or "")]
    store.close()
    return loading, status, kills


def test_a_model_load_longer_than_the_stall_limit_is_not_taken_for_a_stall(tmp_path, media, models_dir,
                                                                            monkeypatch, worker_kind):
    """While a worker loads a model it repeats its "loading model" report every HEARTBEAT_SECONDS: a load
    of 8 s under a `worker_stall_seconds` of 4 s is not judged a stall, the job renders on its first attempt
    and its status said "loading model" meanwhile."""
    loading, status, kills = _render_with_a_slow_load(tmp_path, media, models_dir, monkeypatch, 8, 4.0)
    assert loading["state"] == "running"
    assert status["state"] == "done" and status["attempts"] == 1, status
    assert kills == []


def test_a_load_past_the_heartbeat_limit_is_taken_for_a_hang(tmp_path, media, models_dir, monkeypatch):
    """The loading report is repeated for HEARTBEAT_LIMIT_SECONDS only: a load still going after that counts
    as a hang, the stall rule stops the worker and the job is retried (thread worker: the limit is set low in
    this process)."""
    from daemon.thread_worker import ThreadWorker
    from daemon.worker import _PipeEvents
    from tests import harness

    monkeypatch.setattr(harness, "WORKER_KIND", ThreadWorker)
    monkeypatch.setattr(_PipeEvents, "HEARTBEAT_LIMIT_SECONDS", 1.0)
    _, status, kills = _render_with_a_slow_load(tmp_path, media, models_dir, monkeypatch, 12, 5.0)
    assert kills and status["state"] == "done" and status["attempts"] == 2, (kills, status)
