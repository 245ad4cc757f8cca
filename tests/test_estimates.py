"""Cost estimates fitted from measured renders, progress while a render runs, and `hotshot estimate`."""

from __future__ import annotations

import shutil

import pytest

from daemon.errors import RequestError
from daemon.estimate_cli import estimate_request
from daemon.progress import describe, with_eta
from daemon.request import parse_request
from daemon.schedule import Schedule
from engine.estimate import UNCALIBRATED, estimate_cost, fit_costs, render_work
from engine.plan import FrameConstraint, plan_chunks
from tests.harness import settings_for, write_request

# Renders of tiny-wan-vace on this 2-core machine, as the daemon recorded them (bench/estimate.py): what each
# did (frames, size, steps; chunks of 33 frames) and the seconds each part took.
RECORDED = [
    # frames, size (w, h), steps, model loaded, {part: seconds}
    (33, (112, 64), 2, True, {"load": 2.41, "controls": 0.0, "auto_prompt": 0.0, "diffusion": 1.9, "frames": 0.52,
                              "output": 0.61}),
    (17, (224, 128), 4, False, {"load": 0.0, "controls": 0.0, "auto_prompt": 0.0, "diffusion": 3.42,
                                "frames": 0.49, "output": 0.55}),
    (57, (176, 96), 3, True, {"load": 2.2, "controls": 0.0, "auto_prompt": 0.0, "diffusion": 7.35, "frames": 1.21,
                              "output": 0.63}),
    (25, (112, 64), 2, False, {"load": 0.0, "controls": 0.0, "auto_prompt": 0.0, "diffusion": 1.31,
                               "frames": 0.37, "output": 0.52}),
    (45, (224, 128), 4, True, {"load": 2.55, "controls": 0.0, "auto_prompt": 0.0, "diffusion": 14.9,
                               "frames": 1.62, "output": 0.7}),
    (21, (176, 96), 3, False, {"load": 0.0, "controls": 0.0, "auto_prompt": 0.0, "diffusion": 2.2,
                               "frames": 0.41, "output": 0.53}),
    (65, (112, 64), 2, True, {"load": 2.3, "controls": 0.0, "auto_prompt": 0.0, "diffusion": 4.4, "frames": 1.1,
                              "output": 0.66}),
    (37, (224, 128), 4, False, {"load": 0.0, "controls": 0.0, "auto_prompt": 0.0, "diffusion": 12.2,
                                "frames": 1.3, "output": 0.62}),
]


def sample(frames, size, steps, loaded, seconds, shared=False):
    plan = plan_chunks(frames + 1, 33, 8, FrameConstraint(4, 1), seed=1)
    work = render_work(plan, frames, size[0], size[1], steps, 5.0, model_load=loaded)
    return {"work": work, "seconds": seconds, "shared": shared}


def test_without_measured_renders_the_estimate_is_the_catalog_calibration_plus_fixed_costs():
    """With no history, diffusion is the catalog's seconds per megapixel-frame-step and the fixed costs are the
    priors; the likely range is wide, and the estimate says nothing was fitted."""
    plan = plan_chunks(50, 33, 8, FrameConstraint(4, 1), seed=1)
    work = render_work(plan, 49, 128, 64, 4, 5.0)
    model = fit_costs([], "cpu", 1.5)
    estimate = estimate_cost(plan, 49, 128, 64, 4, work, model)
    assert estimate["parts"]["diffusion"] == pytest.approx(work["megapixel_frame_steps"] * 1.5, rel=1e-2)
    assert estimate["parts"]["load"] > 0 and estimate["samples"] == 0 and estimate["fitted"] == []
    assert (estimate["seconds_low"], estimate["seconds_high"]) == pytest.approx(
        (estimate["seconds"] * UNCALIBRATED[0], estimate["seconds"] * UNCALIBRATED[1]), abs=0.2)


def test_after_five_recorded_renders_the_next_land_within_30_percent():
    """Fitted from the first five recorded renders, the estimate of each later one (other frame counts, sizes
    and steps, with and without the model load) is within ±30 % of the time it took; the catalog's
    calibration alone is far off."""
    history = [sample(*row) for row in RECORDED[:5]]
    model = fit_costs(history, "cpu", 1.5)
    prior = fit_costs([], "cpu", 1.5)
    for frames, size, steps, loaded, seconds in RECORDED[5:]:
        work = sample(frames, size, steps, loaded, seconds)["work"]
        taken = sum(seconds.values())
        assert abs(model.seconds(work) - taken) / taken <= 0.3, (frames, size, steps, model.seconds(work), taken)
    worst_prior = max(abs(prior.seconds(sample(*row)["work"]) - sum(row[4].values())) / sum(row[4].values())
                      for row in RECORDED[5:])
    assert worst_prior > 0.5


def test_the_model_load_is_counted_only_when_the_worker_does_not_hold_the_model():
    """The load part is what loading measured (about 2.4 s here) when the model must be loaded, and nothing when
    a worker holds it."""
    model = fit_costs([sample(*row) for row in RECORDED], "cpu", 1.5)
    frames, size, steps, _, seconds = RECORDED[0]
    loading = model.parts(sample(frames, size, steps, True, seconds)["work"])["load"]
    held = model.parts(sample(frames, size, steps, False, seconds)["work"])["load"]
    assert loading == pytest.approx(2.4, abs=0.3) and held == 0.0


def test_renders_that_shared_the_cpu_are_left_out_once_five_ran_alone():
    """Renders that ran beside another one (twice as slow) do not slow the estimate once five renders ran
    alone; before that they are all there is to go by."""
    alone = [sample(*row) for row in RECORDED[:5]]
    slow = [sample(f, s, st, ld, {k: v * 2 for k, v in secs.items()}, shared=True) for f, s, st, ld, secs in RECORDED]
    work = alone[2]["work"]
    taken = sum(RECORDED[2][4].values())
    assert fit_costs(slow + alone, "cpu", 1.5).seconds(work) == pytest.approx(taken, rel=0.15)
    assert fit_costs(slow + alone[:2], "cpu", 1.5).seconds(work) > taken * 1.3


def test_the_likely_range_covers_what_the_fit_missed_by_on_earlier_renders():
    """The spread comes from predicting each recorded render without it: it brackets the estimate, and most
    recorded renders fall inside their own range."""
    history = [sample(*row) for row in RECORDED]
    model = fit_costs(history, "cpu", 1.5)
    low, high = model.spread
    assert low <= 1.0 <= high and (low, high) != UNCALIBRATED
    inside = sum(low * model.seconds(s["work"]) <= sum(s["seconds"].values()) <= high * model.seconds(s["work"])
                 for s in history)
    assert inside >= len(history) - 2


def test_progress_says_loading_model_and_is_never_100_percent_before_the_end():
    """While the model loads the progress reads "loading model" at 0 % with the estimate's time left, not
    "chunk 0/4"; a one-chunk render at its last step is not 100 % with 0 s left and no frame written."""
    estimate = {"seconds": 40.0, "parts": {"load": 10.0, "diffusion": 20.0, "frames": 5.0, "output": 5.0}}
    loading = with_eta({"phase": "loading model", "chunk": 0, "chunks": 4, "step": 0, "steps": 4,
                        "frames_done": 0}, 3.0, estimate)
    assert describe(loading) == "loading model" and loading["percent"] == 0
    assert loading["eta_seconds"] == pytest.approx(37.0)
    last_step = {"phase": "diffusing", "chunk": 1, "chunks": 1, "step": 4, "steps": 4, "frames_done": 0}
    progress = with_eta(last_step, 30.0, estimate, chunks_for=18.0)
    assert progress["percent"] < 100 and progress["eta_seconds"] > 0
    assert describe(progress) == "chunk 1/1 step 4/4"


@pytest.fixture
def shot(tmp_path, media, models_dir):
    settings = settings_for(tmp_path, models_dir)
    folder = settings.roots[0] / "sh010"
    folder.mkdir()
    shutil.copyfile(media / "chaplin.mp4", folder / "plate.mp4")
    return settings, folder


@pytest.mark.parametrize("when", ["tonight", "2026-13-40T25:00", "overnight"])
def test_estimate_refuses_the_when_values_the_daemon_refuses(shot, when):
    """`hotshot estimate` fails a `when` the daemon fails, with the daemon's own message."""
    settings, folder = shot
    request = write_request(folder / "r.render.json", frame_range=[0, 9], when=when)
    schedule = Schedule(settings.render_windows, lambda: 0.0)
    with pytest.raises(RequestError) as daemon_says:
        schedule.start_of(parse_request(request.read_bytes(), settings.max_request_bytes))
    result = estimate_request(settings, request)
    assert result == {"state": "failed", "reason": str(daemon_says.value)}


def test_overlap_snapping_warns_alike_for_every_model(shot):
    """A model's own overlap never warns (it is snapped when resolved); an overlap the request gives that the
    model's frame constraint changes warns, at estimate time, for every model, whenever several chunks use it."""
    settings, folder = shot
    for model, size, snaps in (("tiny-wan-vace", 33, True), ("tiny-wan-v2v", 33, True), ("passthrough", 33, True),
                               ("tiny-animatediff", 16, False)):
        default = estimate_request(settings, write_request(folder / "r.render.json", model=model,
                                                           frame_range=[0, 99], context={"size": size}))
        assert default["state"] == "queued" and default["estimate"]["warnings"] == [], (model, default)
        given = estimate_request(settings, write_request(folder / "r.render.json", model=model,
                                                         frame_range=[0, 99], context={"size": size, "overlap": 7}))
        expected = ["context overlap 7 snapped to 5 (4k+1)"] if snaps else []
        assert given["estimate"]["warnings"] == expected, model
        single = estimate_request(settings, write_request(folder / "r.render.json", model=model,
                                                          frame_range=[0, 9], context={"size": size, "overlap": 7}))
        assert single["estimate"]["warnings"] == [], model
