"""The chunk plan: every frame covered once, overlaps as configured, windows the model accepts."""

from __future__ import annotations

import pytest

from engine.plan import FrameConstraint, plan_chunks

WAN = FrameConstraint.parse("4k+1")


def test_snapping_to_wan_frame_constraint():
    """Wan renders 4k+1 frames: a context of 150 becomes 149, an overlap of 16 becomes 13."""
    plan = plan_chunks(1000, 150, 16, WAN, seed=1)
    assert (plan.size_requested, plan.size) == (150, 149)
    assert (plan.overlap_requested, plan.overlap) == (16, 13)
    assert all((chunk.render_frames - 1) % 4 == 0 for chunk in plan.chunks)


@pytest.mark.parametrize("size,overlap", [(25, 5), (33, 9), (81, 17), (149, 17), (17, 0), (9, 1)])
def test_segments_cover_every_frame_exactly_once(size, overlap):
    """For many clip lengths, the chunks' output segments tile the range with no gap and no repeat."""
    for frames in list(range(1, 140)) + [299, 300, 301, 1000, 3000]:
        plan = plan_chunks(frames, size, overlap, WAN, seed=7)
        covered = [f for chunk in plan.chunks for f in range(chunk.emit_start, chunk.emit_end)]
        assert covered == list(range(frames)), (frames, size, overlap)


@pytest.mark.parametrize("frames", [150, 200, 282, 400, 1000, 2999])
def test_windows_are_full_length_and_overlap_as_configured(frames):
    """No short tail: every window has the full size; neighbours share at least the overlap."""
    plan = plan_chunks(frames, 150, 17, WAN, seed=3)
    assert plan.chunks[0].start == 0 and plan.chunks[-1].end == frames
    for previous, chunk in zip(plan.chunks, plan.chunks[1:], strict=False):
        assert chunk.end - chunk.start == plan.size
        assert chunk.known == previous.end - chunk.start >= plan.overlap
        assert chunk.blend == plan.overlap
        assert chunk.emit_start == previous.end - plan.overlap >= chunk.start
    middle = plan.chunks[1:-1]
    assert all(chunk.known == plan.overlap for chunk in middle)


def test_short_range_is_one_padded_window():
    """A range shorter than the context renders once, padded up to the next 4k+1 length."""
    plan = plan_chunks(48, 150, 17, WAN, seed=0)
    assert len(plan.chunks) == 1
    only = plan.chunks[0]
    assert (only.start, only.end, only.render_frames, only.emit_end) == (0, 48, 49, 48)


def test_chunk_seeds_derive_from_the_request_seed():
    """Per-chunk seeds differ from each other, repeat for the same seed and change with it."""
    first = [chunk.seed for chunk in plan_chunks(600, 81, 17, WAN, seed=42).chunks]
    again = [chunk.seed for chunk in plan_chunks(600, 81, 17, WAN, seed=42).chunks]
    other = [chunk.seed for chunk in plan_chunks(600, 81, 17, WAN, seed=43).chunks]
    assert first == again and len(set(first)) == len(first)
    assert first != other


def test_overlap_over_half_the_context_is_refused():
    with pytest.raises(ValueError, match="more than half of the context size"):
        plan_chunks(500, 33, 21, WAN, seed=0)


def test_frame_constraint_parsing():
    assert (WAN.snap_down(150), WAN.snap_up(48), WAN.snap_down(1), WAN.snap_up(1)) == (149, 49, 1, 1)
    assert FrameConstraint.parse("1k+0").snap_down(150) == 150
    with pytest.raises(ValueError, match="not of the form"):
        FrameConstraint.parse("every fourth")
