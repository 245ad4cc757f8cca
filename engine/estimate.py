"""Cost estimates: how long a render will take, before it runs."""

from __future__ import annotations

from engine.plan import ChunkPlan


def megapixel_frame_steps(frames: int, width: int, height: int, steps: int, cfg: float) -> float:
    """The work of diffusing `frames`: frames x steps x pixels; guidance (cfg > 1) runs the model twice.

    Estimates divide time by it before a render, the daemon's calibration after one."""
    passes = 2 if cfg > 1.0 else 1
    return frames * steps * passes * width * height / 1e6


def work_units(plan: ChunkPlan, width: int, height: int, steps: int, cfg: float) -> float:
    """Megapixel-frame-steps of a whole chunk plan."""
    return megapixel_frame_steps(plan.frames_to_diffuse, width, height, steps, cfg)


def estimate_cost(plan: ChunkPlan, output_frames: int, width: int, height: int, steps: int, cfg: float,
                  seconds_per_megapixel_frame_step: float, credits_per_gpu_second: float = 0.0) -> dict:
    """The work of a render, converted to GPU-seconds by the model's calibration and to credits by a rate."""
    megapixel_frame_steps = work_units(plan, width, height, steps, cfg)
    seconds = megapixel_frame_steps * seconds_per_megapixel_frame_step
    return {
        "frames": output_frames,
        "frames_to_diffuse": plan.frames_to_diffuse,
        "chunks": len(plan.chunks),
        "width": width,
        "height": height,
        "steps": steps,
        "megapixel_frame_steps": round(megapixel_frame_steps, 3),
        "seconds": round(seconds, 1),
        "credits": round(seconds * credits_per_gpu_second, 2),
    }
