"""How close the cost estimates come to the time renders take, through the real daemon.

Rounds of requests, one per kind of render (a model, with or without a control),
each round with other frame counts, sizes and steps. Every round is dropped
into fresh shots and drained by a fresh `hotshot run --drain` (a new worker
process, so the first render of each model loads it), so each estimate is
made from the renders measured in earlier rounds. Prints each render's
estimate (and its likely range) beside the time it took and the share of the
CPU it got (other work on a shared machine slows a render down, which no
estimate can foresee), then the error per round: after five renders of a kind
the estimates should be within ±30 %.

    .venv/bin/python bench/estimate.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from typing import NamedTuple

from _common import PROJECT, WORK

from daemon.config import load_settings
from daemon.service import Daemon
from daemon.store import Store
from engine.estimate import CONTENDED

CLIP = PROJECT / "tests" / "data" / "chaplin.mp4"
WAN = {"size": 33, "overlap": 9}
KINDS = {
    "vace": {"model": "tiny-wan-vace", "context": WAN},
    "vace-softedge": {"model": "tiny-wan-vace", "controlnets": [{"type": "softedge"}], "context": WAN},
    "v2v": {"model": "tiny-wan-v2v", "context": WAN},
    "animatediff": {"model": "tiny-animatediff", "context": {"size": 16, "overlap": 4}},
    "passthrough": {"model": "passthrough", "context": WAN},
}
FRAMES = [25, 13, 33, 17, 29, 21, 37, 15, 31, 19]
SIZES = [64, 96, 80]
STEPS = [2, 3, 1]


def request(kind: str, round_: int) -> dict:
    """A request of `kind` whose amount of work differs from round to round."""
    frames = FRAMES[round_ % len(FRAMES)]
    first = (round_ * 7) % 100
    return {**KINDS[kind], "frame_range": [first, first + frames - 1], "output_size": SIZES[round_ % len(SIZES)],
            "steps": STEPS[round_ % len(STEPS)], "seed": round_}


class Row(NamedTuple):
    round: int
    kind: str
    seconds: float
    low: float
    high: float
    taken: float
    load: bool
    cpu_share: float  # CPU time over wall time and cores: well under the best share, other work had the CPU

    @property
    def error(self) -> float:
        return (self.seconds - self.taken) / self.taken


def report(rows: list[Row], rounds: int) -> None:
    best = {kind: max(row.cpu_share for row in rows if row.kind == kind) for kind in {row.kind for row in rows}}

    def alone(row: Row) -> bool:
        return row.cpu_share >= CONTENDED * best[row.kind]

    print("| round | kind | estimate s | likely range s | taken s | error | CPU share |")
    print("|---:|---|---:|---|---:|---:|---:|")
    for row in rows:
        note = " (with model load)" if row.load else ""
        print(f"| {row.round + 1} | {row.kind}{note} | {row.seconds:.1f} | {row.low:.1f}-{row.high:.1f} | "
              f"{row.taken:.1f} | {row.error:+.0%} | {row.cpu_share:.2f}{'' if alone(row) else ' (contended)'} |")
    print()
    print("| round | renders | mean abs error | worst error | taken inside the likely range |")
    print("|---:|---:|---:|---:|---:|")
    for round_ in range(rounds):
        these = [row for row in rows if row.round == round_]
        if these:
            print(f"| {round_ + 1} | {len(these)} | {statistics.mean(abs(row.error) for row in these):.0%} | "
                  f"{max((row.error for row in these), key=abs):+.0%} | "
                  f"{sum(row.low <= row.taken <= row.high for row in these)}/{len(these)} |")
    late = [row for row in rows if row.round >= 5]
    for label, chosen in (("all", late), ("with the CPU to themselves", [row for row in late if alone(row)])):
        if chosen:
            print(f"\nafter five renders of a kind, {label}: {sum(abs(row.error) <= 0.3 for row in chosen)}/"
                  f"{len(chosen)} estimates within ±30 %, worst {max(abs(row.error) for row in chosen):.0%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
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
                costs = next((event["data"] for event in store.events(job["id"]) if event["kind"] == "costs"), {})
                rows.append(Row(round_, kind, estimate["seconds"], estimate["seconds_low"], estimate["seconds_high"],
                                taken, estimate["parts"]["load"] > 0, costs.get("cpu_share") or 0.0))
        finally:
            store.close()
    report(rows, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
