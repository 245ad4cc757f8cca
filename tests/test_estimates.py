"""Cost estimates fitted from measured renders, progress while a render runs, and `hotshot estimate`."""

from __future__ import annotations

import json
import shutil

import pytest

from daemon.cli.estimate import estimate_request
from daemon.errors import RequestError
from daemon.progress import describe, with_eta
from daemon.request import parse_request
from daemon.schedule import Schedule
from engine.estimate import UNCALIBRATED, estimate_cost, fit_costs, render_work
from engine.plan import FrameConstraint, plan_chunks
from tests.conftest import DATA
from tests.harness import settings_for, write_request

RECORDED = json.loads((DATA / "costs-tiny-wan-vace.json").read_text())["renders"]  # oldest first


def newest_first(samples: list[dict]) -> list[dict]:
    """As the store gives them."""
    return [{**sample, "cpu_share": None} for sample in reversed(samples)]


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
    """Fitted from the renders recorded before it (at least five), each later recorded render (other frame
    counts, sizes, steps, controls, with and without the model load) is estimated within ±30 % of the time its
    work took; the catalog's calibration alone is off by far more (up to 86 %)."""
    prior = fit_costs([], "cpu", 1.5)
    for index in range(5, len(RECORDED)):
        model = fit_costs(newest_first(RECORDED[:index]), "cpu", 1.5)
        work, taken = RECORDED[index]["work"], sum(RECORDED[index]["seconds"].values())
        assert abs(model.seconds(work) - taken) / taken <= 0.3, (index, model.seconds(work), taken)
    assert max(abs(prior.seconds(r["work"]) - sum(r["seconds"].values())) / sum(r["seconds"].values())
               for r in RECORDED[5:]) > 0.5


def test_the_model_load_is_counted_only_when_the_worker_does_not_hold_the_model():
    """The load part is about what loading took in the recorded renders that loaded the model, and nothing
    when a worker holds it."""
    model = fit_costs(newest_first(RECORDED), "cpu", 1.5)
    loads = sorted(r["seconds"]["load"] for r in RECORDED if r["work"]["model_load"])
    work = dict(RECORDED[0]["work"])
    assert loads[0] * 0.7 <= model.parts({**work, "model_load": 1.0})["load"] <= loads[-1] * 1.3
    assert model.parts({**work, "model_load": 0.0})["load"] == 0.0


def test_renders_that_shared_the_cpu_are_left_out_once_five_ran_alone():
    """Renders that ran beside another render of the daemon, or got a small share of the CPU because other work
    had it (both twice as slow), do not slow the estimate once five renders ran alone; before that they are all
    there is to go by."""
    def slowed(sample: dict, **marks) -> dict:
        return {**sample, "seconds": {name: value * 2 for name, value in sample["seconds"].items()}, **marks}

    alone = [{**sample, "cpu_share": 0.9} for sample in RECORDED[:5]]
    shared = [slowed(sample, shared=True, cpu_share=0.9) for sample in RECORDED[5:9]]
    contended = [slowed(sample, cpu_share=0.45) for sample in RECORDED[9:]]
    work = RECORDED[12]["work"]
    on_their_own = fit_costs(alone, "cpu", 1.5).seconds(work)
    assert fit_costs(shared + contended + alone, "cpu", 1.5).seconds(work) == pytest.approx(on_their_own)
    assert fit_costs(shared + contended + alone[:2], "cpu", 1.5).seconds(work) > on_their_own * 1.2


def test_the_likely_range_covers_what_the_fit_missed_by_on_earlier_renders():
    """The spread comes from predicting each recorded render without it: it brackets the estimate, and most
    recorded renders fall inside their own range."""
    history = newest_first(RECORDED)
    model = fit_costs(history, "cpu", 1.5)
    low, high = model.spread
    assert low < 1.0 < high and (low, high) != UNCALIBRATED
    inside = sum(low * model.seconds(s["work"]) <= sum(s["seconds"].values()) <= high * model.seconds(s["work"])
                 for s in history)
    assert inside >= len(history) * 0.7


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
