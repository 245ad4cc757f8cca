"""Wan 2.1 VACE 1.3B at its published size (random weights) through `hotshot run`: loading, bf16 on the CPU, the
real VAE, 512-token prompts, the memory plan and the Render Info."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.decode import read_frames
from engine.probe import probe
from tests.conftest import CATALOG, PROJECT
from tests.harness import status_of, write_request

MODEL = "wan-vace-1_3b-random"
MODELS_DIR = PROJECT / "var" / "models"  # where `make tiny` puts models: built once, kept between runs
GIB = 2**30


@pytest.fixture(scope="module")
def full_model() -> str:
    """The random full-size model, built with `hotshot models make-random` when it is not there yet (~1 min)."""
    built = subprocess.run([sys.executable, "-m", "daemon.cli", "models", "make-random", MODEL,
                            "--state", str(PROJECT / "var")], capture_output=True, text=True, timeout=900,
                           cwd=PROJECT)
    assert built.returncode == 0, built.stderr[-3000:]
    return MODEL


@pytest.mark.slow
def test_full_size_wan_vace_renders_through_hotshot_run(tmp_path, media, full_model):
    """Five frames at 64 px wide, one step, through `hotshot run --drain` with the full-size model: an output of
    five frames that are not flat, and a Render Info naming the model, bf16, five frames and a memory plan that
    counted the full transformer's 4 GB of weights; the worker's peak memory stays under 9 GiB."""
    shot = tmp_path / "root" / "sh010"
    shot.mkdir(parents=True)
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    request = write_request(shot / "r.render.json", model=full_model, prompt="oil painting of a street",
                            frame_range=[10, 14], output_size=64, steps=1, seed=3,
                            context={"size": 5, "overlap": 0, "start_frame_buffer": 0})
    config = tmp_path / "hotshot.toml"
    config.write_text("\n".join([
        f'roots = ["{tmp_path / "root"}"]', f'state_dir = "{tmp_path / "state"}"', f'models_dir = "{MODELS_DIR}"',
        f'catalogs = ["{CATALOG}"]', "stable_seconds = 0.3", 'devices = ["cpu"]', 'log_format = "json"',
        'log_level = "warning"', "worker_stall_seconds = 0",
    ]))
    started = time.monotonic()
    daemon = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(config), "--drain"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}
    watcher = threading.Thread(target=watch_peaks, args=(daemon, peaks), daemon=True)
    watcher.start()
    try:
        _out, errors = daemon.communicate(timeout=900)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    watcher.join(5)
    seconds = time.monotonic() - started
    peak = max(peaks.values(), default=0)
    assert daemon.returncode == 0, errors[-3000:]
    status = status_of(request)
    assert status["state"] == "done", status

    output = shot / "plate_r001.mp4"
    info = probe(output)
    assert (info.frame_count, info.width) == (5, 64)
    frames = np.stack(list(read_frames(output, 0, 4, info.width, info.height)))
    assert frames.std() > 10  # the model's (random) picture, not a flat or black frame

    manifest = json.loads((shot / "plate_r001.render-info.json").read_text())
    assert manifest["model"]["id"] == MODEL and manifest["model"]["dtype"] == "bfloat16"
    assert manifest["output"]["frames"] == 5 and manifest["frames_diffused"] == 5
    assert manifest["memory"]["decision"] == "fits"
    assert manifest["memory"]["estimate"]["weights"]["transformer"] > 4 * 10**9
    assert manifest["weights"]["model"]["sha256"]
    print(f"\nfull-size render: {seconds:.1f} s from daemon start to drained, render {manifest['timing']['seconds']} "
          f"s, parts {manifest['timing']['parts']}, peak RSS of the largest process {peak / GIB:.2f} GiB")
    assert peak < 9 * GIB


def watch_peaks(daemon: subprocess.Popen, peaks: dict[int, int]) -> None:
    """Record the peak resident memory (VmHWM) of the daemon and every process under it (its worker) until it
    exits: the worker is started through multiprocessing, so the test's own rusage never sees it."""
    while daemon.poll() is None:
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
        for pid in parents:
            ancestor = pid
            while ancestor in parents and ancestor != daemon.pid:
                ancestor = parents[ancestor]
            if ancestor != daemon.pid:
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = max(peaks.get(pid, 0), int(line.split()[1]) * 1024)
        time.sleep(0.25)


def test_the_full_size_layout_is_the_published_one_and_builds_nothing_by_default(tmp_path):
    """The transformer config gives the published 1.3B VACE shape (2.15B parameters, counted without allocating
    them); the catalog entry is random weights that `make-tiny` skips, and a job asking for it unbuilt is told to
    run `hotshot models make-random`."""
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    from engine.catalog import load_catalog
    from engine.errors import WeightsMissingError
    from engine.fullsize import WAN_VACE_1_3B_TRANSFORMER
    from engine.models import ensure_weights

    with init_empty_weights():
        transformer = WanVACETransformer3DModel(**WAN_VACE_1_3B_TRANSFORMER)
    assert transformer.config.num_attention_heads * transformer.config.attention_head_dim == 1536
    assert sum(p.numel() for p in transformer.parameters()) == 2_153_972_032
    spec = load_catalog([CATALOG], tmp_path)[MODEL]
    assert spec.random_weights and not spec.tiny and spec.max_sequence_length == 512
    with pytest.raises(WeightsMissingError, match=f"hotshot models make-random {MODEL}"):
        ensure_weights(spec)
    assert not (tmp_path / MODEL).exists()


def test_random_fill_is_seeded_and_variance_preserving():
    """The same seed gives the same weights; a weight matrix's values have std 1/sqrt(fan-in) in its own dtype;
    norm scales are 1 and biases 0."""
    import torch

    from engine.fullsize import fill_random

    def layers():
        return torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.LayerNorm(64)).to(torch.bfloat16)

    first, second, other = layers(), layers(), layers()
    fill_random(first, seed=5)
    fill_random(second, seed=5)
    fill_random(other, seed=6)
    assert torch.equal(first[0].weight, second[0].weight) and not torch.equal(first[0].weight, other[0].weight)
    assert first[0].weight.dtype == torch.bfloat16
    assert abs(first[0].weight.float().std().item() - 1 / 16) < 0.003
    assert torch.all(first[1].weight == 1) and torch.all(first[0].bias == 0)


def test_the_small_text_encoder_has_the_real_width_and_one_embedding():
    """The stand-in text encoder turns a prompt into 4096-wide embeddings (the transformer's text width), and its
    input embedding stays tied to the shared one, as a saved UMT5 expects (two copies would be loaded untied)."""
    import torch

    from engine.fullsize import WAN_VACE_1_3B_TRANSFORMER, small_text_parts

    tokenizer, encoder = small_text_parts(torch.bfloat16)
    assert encoder.encoder.embed_tokens.weight is encoder.shared.weight
    tokens = tokenizer(["oil painting of a street"], return_tensors="pt")
    with torch.no_grad():
        output = encoder(**tokens).last_hidden_state
    assert output.shape[-1] == WAN_VACE_1_3B_TRANSFORMER["text_dim"] == 4096
    assert torch.isfinite(output.float()).all()
