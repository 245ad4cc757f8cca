"""Peak memory of rendering a 300-frame and a 3,000-frame clip (tiny model, small frames).

Each render runs in a fresh process; its peak resident set size is read from
the kernel at the end. Memory must not grow with clip length: frames stream in
and out and at most a few chunks are held, so the ratio should stay at or
below 1.25.

    .venv/bin/python bench/memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from _common import PROJECT, WORK, clip, tiny_spec

CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {bench!r})
from _common import tiny_spec
from engine.job import RenderJob
from engine.render import render
source = Path(sys.argv[1]); frames = int(sys.argv[2]); out = Path(sys.argv[3])
stat = source.stat()
job = RenderJob(job_id=1, render_id=out.stem, source=source, source_size=stat.st_size,
                source_mtime_ns=stat.st_mtime_ns, frame_range=(0, frames - 1), output_size=128,
                model=tiny_spec(), prompt="oil painting", negative_prompt="blurry", steps=1, cfg=1.0,
                seed=1, shift=3.0, context_size=150, context_overlap=17, output=out,
                manifest=out.with_suffix(".json"), work_dir=out.parent / (out.stem + "-work"))
started = time.monotonic()
result = render(job)
print(json.dumps({{"frames": result.frames, "chunks": result.chunks_rendered,
                  "seconds": round(time.monotonic() - started, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""


def measure(frames: int) -> dict:
    source = clip(frames)
    out = WORK / f"memory-{frames}.mp4"
    code = CHILD.format(bench=str(PROJECT / "bench"))
    done = subprocess.run([sys.executable, "-c", code, str(source), str(frames), str(out)],
                          capture_output=True, text=True, check=True, cwd=PROJECT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    tiny_spec()
    started = time.monotonic()
    short, long = measure(300), measure(3000)
    ratio = long["peak_rss_mib"] / short["peak_rss_mib"]
    print("clip frames  chunks  render s  peak RSS MiB")
    for row in (short, long):
        print(f"{row['frames']:>11}  {row['chunks']:>6}  {row['seconds']:>8}  {row['peak_rss_mib']:>12}")
    print(f"ratio 3000/300 peak RSS: {ratio:.3f} (target <= 1.25)  [{time.monotonic() - started:.0f} s in all]")


if __name__ == "__main__":
    main()
