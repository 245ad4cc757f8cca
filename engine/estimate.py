"""Cost estimates: how long a render will take, before it runs.

A render's time is split into parts, each a sum of rates times the work that
part grows with (every rate at least 0):

| part | grows with |
|---|---|
| `load` | loading the model when the worker does not hold it |
| `controls` | megapixel-frames of control video computed (cached ones cost nothing) |
| `auto_prompt` | one captioning pass (the captioner's load and a few captions) |
| `diffusion` | megapixel-frame-steps, chunk-steps (the per-step overhead), megapixel-frames diffused (the VAE) |
| `frames` | output megapixel-frames (decoding, blending, encoding segments, sequences) and chunks |
| `output` | a fixed part (probing, joining the segments with the audio) and output megapixel-frames |

The rates start from priors (the catalog's calibration for diffusion) and are
fitted, part by part, from the measured renders of the same model on the same
device kind: a weighted non-negative least-squares fit once there are enough
renders, else the prior scaled to what was measured. The spread is what the
fit missed by on earlier renders, each predicted without itself.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from engine.plan import ChunkPlan

PARTS: dict[str, tuple[str, ...]] = {
    "load": ("model_load",),
    "controls": ("control_megapixel_frames",),
    "auto_prompt": ("auto_prompt",),
    "diffusion": ("megapixel_frame_steps", "chunk_steps", "megapixel_frames_diffused"),
    "frames": ("megapixel_frames_out", "chunks"),
    "output": ("render", "megapixel_frames_out"),
}
# Seconds per unit before any render of the model was measured ("diffusion" takes the catalog's calibration).
PRIORS: dict[str, dict[str, dict[str, float]]] = {
    "cpu": {"load": {"model_load": 5.0}, "controls": {"control_megapixel_frames": 2.0},
            "auto_prompt": {"auto_prompt": 10.0}, "frames": {"megapixel_frames_out": 0.1, "chunks": 0.2},
            "output": {"render": 1.0, "megapixel_frames_out": 0.02}},
    "cuda": {"load": {"model_load": 30.0}, "controls": {"control_megapixel_frames": 0.1},
             "auto_prompt": {"auto_prompt": 10.0}, "frames": {"megapixel_frames_out": 0.05, "chunks": 0.2},
             "output": {"render": 1.0, "megapixel_frames_out": 0.02}},
}
HISTORY = 40              # the latest renders a fit looks at
UNCALIBRATED = (0.5, 2.0)  # the spread claimed before three renders were measured
SPREAD_QUANTILES = (0.1, 0.9)
CONTENDED = 0.6           # a CPU render that got less than this share of the best one's CPU ran beside other work


def render_work(plan: ChunkPlan, output_frames: int, width: int, height: int, steps: int, cfg: float,
                control_frames: int = 0, auto_prompt: bool = False, model_load: bool = True) -> dict[str, float]:
    """What a render has to do, in the units the parts grow with. `control_frames` counts control frames to
    compute (one per control model per frame)."""
    megapixels = width * height / 1e6
    passes = 2 if cfg > 1.0 else 1
    return {
        "model_load": 1.0 if model_load else 0.0,
        "control_megapixel_frames": control_frames * megapixels,
        "auto_prompt": 1.0 if auto_prompt else 0.0,
        "megapixel_frame_steps": plan.frames_to_diffuse * steps * passes * megapixels,
        "chunk_steps": float(len(plan.chunks) * steps * passes),
        "megapixel_frames_diffused": plan.frames_to_diffuse * megapixels,
        "megapixel_frames_out": output_frames * megapixels,
        "chunks": float(len(plan.chunks)),
        "render": 1.0,
    }


@dataclass
class CostModel:
    """Seconds per unit of work for each part, and how far off such estimates were."""

    rates: dict[str, dict[str, float]]
    samples: int = 0
    spread: tuple[float, float] = UNCALIBRATED
    fitted: list[str] = field(default_factory=list)  # parts fitted from measurements (the others: priors)

    def parts(self, work: dict[str, float]) -> dict[str, float]:
        """Predicted seconds of each part."""
        return {part: sum(rate * work.get(name, 0.0) for name, rate in rates.items())
                for part, rates in self.rates.items()}

    def seconds(self, work: dict[str, float]) -> float:
        return sum(self.parts(work).values())


def prior_model(device: str, seconds_per_megapixel_frame_step: float) -> CostModel:
    """The rates assumed before any measurement: the catalog's diffusion calibration and generic fixed costs."""
    priors = PRIORS.get(device, PRIORS["cpu"])
    rates = {part: {name: priors.get(part, {}).get(name, 0.0) for name in names} for part, names in PARTS.items()}
    rates["diffusion"]["megapixel_frame_steps"] = seconds_per_megapixel_frame_step
    return CostModel(rates)


def fit_costs(samples: list[dict], device: str, seconds_per_megapixel_frame_step: float) -> CostModel:
    """The cost model of one model on one device kind, fitted from measured renders.

    A sample is `{"work": render_work(...), "seconds": {part: measured seconds}, "shared": bool,
    "cpu_share": float | None}`; `shared` marks a render that shared its device with another render of the
    daemon, `cpu_share` is the CPU time a CPU render got over its wall time and the machine's cores. A CPU
    render that got less than `CONTENDED` of the best share seen had the CPU taken by other work. Shared and
    contended renders are left out once five renders ran alone, since they ran slower than a render on its
    own will.
    """
    samples = [sample for sample in samples if sample.get("work") and sample.get("seconds")][:HISTORY]
    shares = [sample["cpu_share"] for sample in samples if sample.get("cpu_share")]
    best = max(shares, default=0.0)
    alone = [sample for sample in samples if not sample.get("shared")
             and not (sample.get("cpu_share") is not None and sample["cpu_share"] < CONTENDED * best)]
    if len(alone) >= 5:
        samples = alone
    model = _fit(samples, prior_model(device, seconds_per_megapixel_frame_step))
    model.spread = _spread(samples, prior_model(device, seconds_per_megapixel_frame_step))
    return model


def estimate_cost(plan: ChunkPlan, output_frames: int, width: int, height: int, steps: int,
                  work: dict[str, float], model: CostModel, credits_per_gpu_second: float = 0.0) -> dict:
    """A render's expected seconds, part by part, with the range it is likely to fall in, and its credits."""
    parts = model.parts(work)
    seconds = sum(parts.values())
    low, high = model.spread
    return {
        "frames": output_frames,
        "frames_to_diffuse": plan.frames_to_diffuse,
        "chunks": len(plan.chunks),
        "width": width,
        "height": height,
        "steps": steps,
        "megapixel_frame_steps": round(work["megapixel_frame_steps"], 3),
        "seconds": round(seconds, 1),
        "seconds_low": round(seconds * low, 1),
        "seconds_high": round(seconds * high, 1),
        "parts": {part: round(value, 2) for part, value in parts.items()},
        "work": {name: round(value, 4) for name, value in work.items()},
        "samples": model.samples,
        "fitted": model.fitted,
        "credits": round(seconds * credits_per_gpu_second, 2),
    }


def _fit(samples: list[dict], prior: CostModel) -> CostModel:
    rates: dict[str, dict[str, float]] = {}
    fitted = []
    for part, names in PARTS.items():
        rows = [(sample["work"], sample["seconds"][part]) for sample in samples if part in sample["seconds"]]
        rows = [(work, seconds) for work, seconds in rows if any(work.get(name, 0.0) > 0 for name in names)]
        rates[part] = dict(prior.rates[part])
        if not rows:
            continue
        fitted.append(part)
        x = np.array([[work.get(name, 0.0) for name in names] for work, _ in rows], dtype=np.float64)
        y = np.array([max(seconds, 0.0) for _, seconds in rows], dtype=np.float64)
        if len(rows) >= len(names) + 2:
            rates[part] = dict(zip(names, _nonnegative_fit(x, y), strict=True))
        else:
            predicted = x @ np.array([prior.rates[part][name] for name in names])
            if predicted.sum() > 0:
                scale = y.sum() / predicted.sum()
                rates[part] = {name: rate * scale for name, rate in prior.rates[part].items()}
            else:  # the prior says this part costs nothing: put what was measured on its first unit
                rates[part] = {name: 0.0 for name in names}
                rates[part][names[int(np.argmax(x.sum(axis=0)))]] = y.sum() / x.sum(axis=0).max()
    return CostModel(rates, samples=len(samples), fitted=fitted)


def _nonnegative_fit(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Rates >= 0 minimising the relative squared error, trying every subset of the units (there are at most
    three) and preferring fewer units unless more fit clearly better."""
    weights = 1.0 / (y + 0.1 * max(float(np.median(y)), 1e-6))
    xw, yw = x * weights[:, None], y * weights
    n, k = x.shape
    best, best_score = [0.0] * k, math.inf
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            columns = list(subset)
            solution, *_ = np.linalg.lstsq(xw[:, columns], yw, rcond=None)
            if (solution < 0).any():
                continue
            residual = float(((xw[:, columns] @ solution - yw) ** 2).sum())
            score = n * math.log(residual / n + 1e-12) + 2 * size
            if score < best_score:
                best_score = score
                best = [0.0] * k
                for column, value in zip(columns, solution, strict=True):
                    best[column] = float(value)
    return best


def _spread(samples: list[dict], prior: CostModel) -> tuple[float, float]:
    """Measured over predicted total, each render predicted by a fit without it: the 10th and 90th percentile
    (never narrower than the estimate itself)."""
    if len(samples) < 3:
        return UNCALIBRATED
    ratios = []
    for index, sample in enumerate(samples):
        others = samples[:index] + samples[index + 1:]
        predicted = _fit(others, prior).seconds(sample["work"])
        measured = sum(sample["seconds"].values())
        if predicted > 0 and measured > 0:
            ratios.append(measured / predicted)
    if not ratios:
        return UNCALIBRATED
    low, high = np.quantile(ratios, SPREAD_QUANTILES)
    return round(min(float(low), 1.0), 3), round(max(float(high), 1.0), 3)
