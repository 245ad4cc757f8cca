"""Facility scale, around the model: a passthrough render beside the ffmpeg transcode floor (issue 16).

A synthetic 400-frame 640x480 clip (testsrc2, H.264, with a sine tone). The floor is one ffmpeg command that
decodes it, scales it (the same filters hotshot's decoder and encoder apply) and encodes it with libx264 at the
preset and CRF hotshot uses. Beside it, in alternation, best of 3:

- engine.render() of the whole clip with the passthrough model already loaded (no diffusion: everything that
  is left is the cost around the model: decoding, checkpoints, blending, segment encoding, joining, probes,
  the Render Info);
- `hotshot run --drain` on a shot holding the clip and a request (process start-up, registration, a worker
  process, the render, status files), once per round.

The floor has no audio (the issue's goal is set against it); a render's output carries the clip's sound (the
whole clip's AAC stream, copied as it is), so the floor with the audio encoded is printed too, for reference.

Wall times are compared side by side; CPU times (this process and its children: ffmpeg) are printed too,
since on a shared machine they move less than wall times.

    .venv/bin/python bench/scale.py render
    .venv/bin/python bench/scale_render.py
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import PROJECT, WORK
from scale_common import Figure

from engine.catalog import load_catalog
from engine.codecs import output_codec
from engine.job import RenderJob
from engine.models import ModelCache
from engine.render import render

FRAMES, WIDTH, HEIGHT, ROUNDS = 400, 640, 480, 3
RENDER_GOAL = 1.3


def clip() -> Path:
    """The synthetic clip (cached under var/bench)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"scale-render-{FRAMES}-{WIDTH}x{HEIGHT}.mp4"
    if not path.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
                        "-frames:v", str(FRAMES), "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", str(path)], check=True)
    return path


def floor_command(source: Path, out: Path, audio: bool = False) -> list[str]:
    """Decode, scale and encode in one ffmpeg: the least any render of these frames must do (`audio`: with the
    sound encoded as a render's output carries it, for reference; the goal's floor has none)."""
    codec = output_codec("h264")
    video = codec.video
    sound = ["-map", "0:a", "-c:a", codec.audio["acodec"], "-b:a", codec.audio["audio_bitrate"]] if audio else []
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-map", "0:v", "-vf",
            f"scale={WIDTH}:{HEIGHT}:flags=bicubic+full_chroma_int,scale=out_color_matrix=bt709:out_range=tv",
            "-c:v", video["vcodec"], "-preset", video["preset"], "-crf", str(video["crf"]),
            "-pix_fmt", video["pix_fmt"], *sound, str(out)]


def measured(run: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process and its waited-for children) of `run()`."""
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    run()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
    return wall, cpu


def passthrough_job(source: Path, overlap: bool = True) -> RenderJob:
    spec = load_catalog([PROJECT / "config" / "models.toml"], PROJECT / "var" / "models")["passthrough"]
    out = WORK / "scale-render.mp4"
    work = WORK / "scale-render-work"
    shutil.rmtree(work, ignore_errors=True)
    stat = source.stat()
    return RenderJob(job_id=1, render_id="scale-render", source=source, source_size=stat.st_size,
                     source_mtime_ns=stat.st_mtime_ns, frame_range=(0, FRAMES - 1), output_size=WIDTH, model=spec,
                     prompt="", negative_prompt="", steps=spec.steps, cfg=spec.cfg, seed=1, shift=spec.shift,
                     context_size=spec.context_default, context_overlap=spec.context_overlap_default,
                     output=out, manifest=out.with_suffix(".json"), work_dir=work, overlap=overlap)


def drain(source: Path) -> None:
    base = WORK / "scale-render-daemon"
    shutil.rmtree(base, ignore_errors=True)
    shot = base / "root" / "sh010"
    shot.mkdir(parents=True)
    shutil.copyfile(source, shot / "plate.mp4")
    (shot / "r.render.json").write_text(json.dumps({"model": "passthrough", "output_size": WIDTH,
                                                          "context": {"size": 81, "overlap": 17}}))
    subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--drain", "--root", str(base / "root"),
                    "--state", str(base / "state")], check=True, cwd=PROJECT, capture_output=True,
                   env={"HOTSHOT_MODELS_DIR": str(PROJECT / "var" / "models"), "HOTSHOT_STABLE_SECONDS": "0.2",
                        "HOTSHOT_DEVICES": '["cpu"]', "PATH": "/usr/bin:/bin:/usr/local/bin"})
    outputs = [path for path in shot.rglob("*.mp4") if path.name != "plate.mp4" and "control" not in path.name]
    if not outputs:
        raise RuntimeError(f"hotshot run --drain left no render in {shot}")


def measure(rounds: int = ROUNDS, serial: bool = False) -> dict[str, tuple[float, float]]:
    """Best wall (and its CPU) of each path over `rounds` alternating rounds."""
    source = clip()
    cache = ModelCache()
    cache.get(passthrough_job(source).model, "cpu")
    paths: dict[str, Callable[[], None]] = {
        "floor": lambda: subprocess.run(floor_command(source, WORK / "scale-render-floor.mp4"), check=True),
        "floor with audio": lambda: subprocess.run(floor_command(source, WORK / "scale-render-floor.mp4", True),
                                                   check=True),
        "render": lambda: render(passthrough_job(source), None, cache),
        "drain": lambda: drain(source),
    }
    if serial:
        paths["render, overlap off"] = lambda: render(passthrough_job(source, overlap=False), None, cache)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, run in paths.items():
            wall, cpu = measured(run)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu)
    return best


def figures() -> list[Figure]:
    best = measure()
    floor = best["floor"][0]
    return [
        Figure("passthrough render / ffmpeg transcode floor (wall)", best["render"][0] / floor, RENDER_GOAL, "x"),
        Figure("passthrough render / transcode floor with audio (reference)",
               best["render"][0] / best["floor with audio"][0], None, "x"),
        Figure("hotshot run --drain / transcode floor (reference)", best["drain"][0] / floor, None, "x"),
    ]


def main() -> None:
    best = measure(serial="--serial" in sys.argv)
    floor_wall, floor_cpu = best["floor"]
    print(f"{FRAMES} frames {WIDTH}x{HEIGHT}, passthrough model, best of {ROUNDS} alternating rounds")
    for name, (wall, cpu) in best.items():
        print(f"{name:<22} {wall:6.2f} s wall ({wall / floor_wall:4.2f}x)  {cpu:6.2f} s CPU ({cpu / floor_cpu:4.2f}x)")


if __name__ == "__main__":
    main()
