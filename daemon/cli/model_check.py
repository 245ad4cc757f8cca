"""`hotshot models check ID`: load a catalog model and render a 2-frame smoke test with it."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from daemon.config import Settings
from daemon.errors import HotshotError
from engine.catalog import CatalogError, load_catalog

SIZE = 256
STEPS = 2


def smoke_test(settings: Settings, model_id: str, device: str) -> str:
    """Render 2 frames of a synthetic clip through the real engine; return a one-line report."""
    from engine.errors import EngineError
    from engine.job import RenderJob
    from engine.memory import readable_size
    from engine.models import ModelCache
    from engine.render import render

    try:
        catalog = load_catalog(settings.catalogs, settings.models_dir)
    except CatalogError as exc:
        raise HotshotError(str(exc)) from exc
    if model_id not in catalog:
        raise HotshotError(f"unknown model {model_id!r}; the catalog has: {', '.join(sorted(catalog))}")
    spec = catalog[model_id]
    with tempfile.TemporaryDirectory(prefix="hotshot-check-") as folder:
        work = Path(folder)
        clip = work / "check.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", "testsrc2=size=320x180:rate=25", "-frames:v", "2", "-pix_fmt", "yuv420p", str(clip)],
                       check=True)
        stat = clip.stat()
        job = RenderJob(job_id=0, render_id="check", source=clip, source_size=stat.st_size,
                        source_mtime_ns=stat.st_mtime_ns, frame_range=(0, 1), output_size=SIZE, model=spec,
                        prompt="a test pattern", negative_prompt=spec.negative_prompt, steps=STEPS, cfg=spec.cfg,
                        seed=0, shift=spec.shift, context_size=spec.context_default, context_overlap=0,
                        start_frame_buffer=0, device=device, output=work / "check_out.mp4",
                        # A model that only carries paint gets the first frame as its painted frame.
                        style_frame={"keyframe": 0} if spec.capabilities.needs_paint else None,
                        manifest=work / "check_out.render-info.json", work_dir=work / "work",
                        device_memory=int(settings.device_memory_gb * 2**30) if settings.device_memory_gb else None)
        started = time.monotonic()
        cache = ModelCache()
        try:
            cache.get(spec, _device(device))
            loaded = time.monotonic()
            result = render(job, None, cache)
        except EngineError as exc:
            raise HotshotError(f"model {model_id!r} failed its check: {exc}") from exc
        finished = time.monotonic()
        memory = result.manifest_data["memory"]
        planned = f"; memory {memory['decision']}" + (
            f" ({readable_size(memory['estimate_bytes'])} of {readable_size(memory['available_bytes'])}, "
            f"{memory['available_from']})" if memory["estimate_bytes"] else "")
        return (f"{model_id}: OK, {result.frames} frames {result.width}x{result.height} with {STEPS} steps on "
                f"{result.manifest_data['model']['device']} ({result.manifest_data['model']['dtype']}); "
                f"load {loaded - started:.1f} s, render {finished - loaded:.1f} s{planned}")


def _device(device: str) -> str:
    from engine.devices import resolve_device

    return resolve_device(device)
