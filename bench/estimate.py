"""How close the cost estimates come to the time renders take, through the real daemon.

Rounds of requests, one per kind of render (a model, with or without a control),
each round with other frame counts, sizes and steps. Every round is dropped
into fresh shots and drained by a fresh `hotshot run --drain` (a new worker
process, so the first render of each model loads it), so each estimate is
made from the renders measured in earlier rounds. Prints each render's
estimate (and its likely range) beside the time it took, then the error per
round: after five renders of a kind the estimates should be within ±30 %.

    .venv/bin/python bench/estimate.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys

from _common import PROJECT, WORK

from daemon.config import load_settings
from daemon.service import Daemon
from daemon.store import Store

CLIP = PROJECT / "tests" / "data" / "chaplin.mp4"
WAN = {"size": 33, "overlap": 9}
KINDS = {
    "vace": {"model": "tiny-wan-vace", "context": WAN},
    "vace-softedge": {"model": "tiny-wan-vace", "controlnets": [{"type": "softedge"}], "context": WAN},
    "v2v": {"model": "tiny-wan-v2v", "context": WAN},
    "animatediff": {"model": "tiny-animatediff", "context": {"size": 16, "overlap": 4}},
    "passthrough": {"model": "passthrough", "context": WAN},
}
FRAMES = [33, 17, 49, 25, 41, 21, 45, 29, 37, 13]
SIZES = [64, 128, 96]
STEPS = [2, 4, 3]


def request(kind: str, round_: int) -> dict:
    """A request of `kind` whose amount of work differs from round to round."""
    frames = FRAMES[round_ % len(FRAMES)]
    first = (round_ * 7) % 100
    return {**KINDS[kind], "frame_range": [first, first + frames - 1], "output_size": SIZES[round_ % len(SIZES)],
            "steps": STEPS[round_ % len(STEPS)], "seed": round_}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    base = WORK / "estimate"
    shutil.rmtree(base, ignore_errors=True)
    root = base / "root"
    root.mkdir(parents=True)
    settings = load_settings(None, roots=[root], state_dir=base / "state", models_dir=PROJECT / "var" / "models",
                             stable_seconds=0.2, devices=["cpu"], log_format="json", log_level="error")
    rows = []
    for round_ in range(args.rounds):
        for kind in KINDS:
            shot = root / f"{kind}-{round_:02d}"
            shot.mkdir()
            shutil.copyfile(CLIP, shot / "plate.mp4")
            (shot / "r.render.json").write_text(json.dumps(request(kind, round_)))
        if Daemon(settings).run(drain=True) != 0:
            print("the daemon failed", file=sys.stderr)
            return 1
        store = Store.open(settings.database, read_only=True)
        try:
            jobs = {job["request_path"]: job for job in store.jobs()}
            for kind in KINDS:
                job = jobs[str(root / f"{kind}-{round_:02d}" / "r.render.json")]
                if job["state"] != "done":
                    print(f"{kind} round {round_}: {job['state']} {job['error']}", file=sys.stderr)
                    continue
                estimate, taken = job["estimate"], job["outputs"]["seconds"]
                rows.append((round_, kind, estimate["seconds"], estimate["seconds_low"], estimate["seconds_high"],
                             taken, estimate["parts"]["load"] > 0))
        finally:
            store.close()
    print("| round | kind | estimate s | likely range s | taken s | error |")
    print("|---:|---|---:|---|---:|---:|")
    for round_, kind, seconds, low, high, taken, load in rows:
        note = " (with model load)" if load else ""
        print(f"| {round_ + 1} | {kind}{note} | {seconds:.1f} | {low:.1f}-{high:.1f} | {taken:.1f} | "
              f"{(seconds - taken) / taken:+.0%} |")
    print()
    print("| round | renders | mean abs error | worst error | taken inside the likely range |")
    print("|---:|---:|---:|---:|---:|")
    for round_ in range(args.rounds):
        errors = [(seconds - taken) / taken for r, _, seconds, _, _, taken, _ in rows if r == round_]
        inside = sum(low <= taken <= high for r, _, _, low, high, taken, _ in rows if r == round_)
        if errors:
            print(f"| {round_ + 1} | {len(errors)} | {statistics.mean(map(abs, errors)):.0%} | "
                  f"{max(errors, key=abs):+.0%} | {inside}/{len(errors)} |")
    late = [abs(seconds - taken) / taken for r, _, seconds, _, _, taken, _ in rows if r >= 5]
    if late:
        print(f"\nafter five renders of a kind: {sum(error <= 0.3 for error in late)}/{len(late)} estimates "
              f"within ±30 %, worst {max(late):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
