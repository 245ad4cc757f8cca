"""Cost estimates: how long a render will take, before it runs."""

from __future__ import annotations

from engine.plan import ChunkPlan


def estimate_cost(plan: ChunkPlan, width: int, height: int, steps: int, cfg: float,
                  seconds_per_megapixel_frame_step: float) -> dict:
    """Frames to diffuse x steps x pixels, converted to seconds by the model's calibration.

    Classifier-free guidance (cfg > 1) runs the model twice per step.
    """
    passes = 2 if cfg > 1.0 else 1
    megapixel_frame_steps = plan.frames_to_diffuse * steps * passes * width * height / 1e6
    return {
        "frames": plan.frame_count,
        "frames_to_diffuse": plan.frames_to_diffuse,
        "chunks": len(plan.chunks),
        "width": width,
        "height": height,
        "steps": steps,
        "megapixel_frame_steps": round(megapixel_frame_steps, 3),
        "seconds": round(megapixel_frame_steps * seconds_per_megapixel_frame_step, 1),
    }
