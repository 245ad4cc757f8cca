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
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

from _common import PROJECT, WORK

from daemon.config import load_settings
from daemon.service import Daemon
from daemon.states import JobState
from daemon.store import Store
from engine.estimate import CONTENDED, fit_costs

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
    cpu_error: float | None  # the same fit on CPU time, against the CPU time the render took

    @property
    def error(self) -> float:
        return (self.seconds - self.taken) / self.taken


def collect(settings, root: Path, rounds: int) -> list[Row]:
    """Each finished render of the run: its estimate beside the time it took; and, what contention does not
    blur, the estimate of its CPU time fitted from the earlier renders' CPU times beside its own."""
    rows = []
    cores = os.cpu_count() or 1
    store = Store.open(settings.database, read_only=True)
    try:
        jobs = {job.request_path: job for job in store.jobs()}
        for round_ in range(rounds):
            for kind in KINDS:
                job = jobs.get(str(root / f"{kind}-{round_:02d}" / "r.render.json"))
                if job is None or job.state != JobState.DONE:
                    print(f"{kind} round {round_ + 1}: {job and job.state} {job and job.error}", file=sys.stderr)
                    continue
                estimate = job.estimate
                costs = next((event["data"] for event in store.events(job.id) if event["kind"] == "costs"), {})
                share = costs.get("cpu_share") or 0.0
                cpu_error = None
                if costs and share:
                    model = job.settings["model"]["value"]
                    earlier = _before(store, model, job.id)
                    as_cpu = [{**sample, "cpu_share": None,
                               "seconds": {name: value * sample["cpu_share"] * cores
                                           for name, value in sample["seconds"].items()}} for sample in earlier]
                    calibration = settings_catalog(settings)[model].calibration_for("cpu")
                    predicted = fit_costs(as_cpu, "cpu", calibration).seconds(costs["work"])
                    taken_cpu = share * cores * costs["total"]
                    cpu_error = (predicted - taken_cpu) / taken_cpu
                rows.append(Row(round_, kind, estimate["seconds"], estimate["seconds_low"], estimate["seconds_high"],
                                job.outputs["seconds"], estimate["parts"]["load"] > 0, share, cpu_error))
    finally:
        store.close()
    return rows


def _before(store: Store, model: str, job_id: int) -> list[dict]:
    """The recorded costs of the model's renders finished before job `job_id`, newest first."""
    return [event["data"] for event in reversed(store.events()) if event["kind"] == "costs"
            and event["job_id"] < job_id and event["data"]["model"] == model and event["data"]["device"] == "cpu"]


def settings_catalog(settings) -> dict:
    from engine.catalog import load_catalog

    return load_catalog(settings.catalogs, settings.models_dir)


def report(rows: list[Row], rounds: int) -> None:
    best = {kind: max(row.cpu_share for row in rows if row.kind == kind) for kind in {row.kind for row in rows}}

    def alone(row: Row) -> bool:
        return row.cpu_share >= CONTENDED * best[row.kind]

    print("| round | kind | estimate s | likely range s | taken s | error | CPU share | CPU-time error |")
    print("|---:|---|---:|---|---:|---:|---:|---:|")
    for row in rows:
        note = " (with model load)" if row.load else ""
        cpu = "" if row.cpu_error is None else f"{row.cpu_error:+.0%}"
        print(f"| {row.round + 1} | {row.kind}{note} | {row.seconds:.1f} | {row.low:.1f}-{row.high:.1f} | "
              f"{row.taken:.1f} | {row.error:+.0%} | {row.cpu_share:.2f}{'' if alone(row) else ' (contended)'} "
              f"| {cpu} |")
    print()
    print("| round | renders | mean abs error | worst error | taken inside the likely range "
          "| mean abs CPU-time error |")
    print("|---:|---:|---:|---:|---:|---:|")
    for round_ in range(rounds):
        these = [row for row in rows if row.round == round_]
        cpu = [abs(row.cpu_error) for row in these if row.cpu_error is not None]
        if these:
            print(f"| {round_ + 1} | {len(these)} | {statistics.mean(abs(row.error) for row in these):.0%} | "
                  f"{max((row.error for row in these), key=abs):+.0%} | "
                  f"{sum(row.low <= row.taken <= row.high for row in these)}/{len(these)} | "
                  f"{statistics.mean(cpu) if cpu else 0:.0%} |")
    late = [row for row in rows if row.round >= 5]
    for label, chosen in (("all", late), ("with the CPU to themselves", [row for row in late if alone(row)])):
        if chosen:
            print(f"\nafter five renders of a kind, {label}: {sum(abs(row.error) <= 0.3 for row in chosen)}/"
                  f"{len(chosen)} estimates within ±30 %, worst {max(abs(row.error) for row in chosen):.0%}")
    cpu = [abs(row.cpu_error) for row in late if row.cpu_error is not None]
    if cpu:
        print(f"after five renders of a kind, in CPU time: {sum(error <= 0.3 for error in cpu)}/{len(cpu)} "
              f"within ±30 %, worst {max(cpu):.0%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--report", action="store_true", help="only print the figures of the last run again")
    args = parser.parse_args()
    base = WORK / "estimate"
    root = base / "root"
    settings = load_settings(None, roots=[root], state_dir=base / "state", models_dir=PROJECT / "var" / "models",
                             stable_seconds=0.2, devices=["cpu"], log_format="json", log_level="error")
    if not args.report:
        shutil.rmtree(base, ignore_errors=True)
        root.mkdir(parents=True)
        for round_ in range(args.rounds):
            for kind in KINDS:
                shot = root / f"{kind}-{round_:02d}"
                shot.mkdir()
                shutil.copyfile(CLIP, shot / "plate.mp4")
                (shot / "r.render.json").write_text(json.dumps(request(kind, round_)))
            if Daemon(settings).run(drain=True) != 0:
                print("the daemon failed", file=sys.stderr)
                return 1
    report(collect(settings, root, args.rounds), args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
