"""Keyframe propagation by dense optical flow: painted frames carried through the shot, no weights.

The frames a window must keep (painted keyframes, the style frame, the previous
chunk's output over the overlap) are its anchors. Every other frame takes the
paint of the anchor before it and the anchor after it, warped along the
source's optical flow (OpenCV's DIS, computed both ways between neighbouring
frames), blended by temporal distance. Each warp starts from the anchor
itself: the flows are composed into one map from the frame back to its anchor,
so the paint is resampled once however far it travels (re-warping a warped
frame every frame would blur it and let errors build up). A pixel whose
forward and backward flows disagree (it is hidden in the next frame, or
appears from behind something) stops carrying paint from that side, and so
does one whose content changed (the anchor's source, brought along the flow,
no longer looks like this frame's); what neither anchor saw is filled from the source frame with its colours mapped to
the paint's (an affine colour map fitted on the anchors). Same input, same
output: nothing here is random.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.backends import Asked, ChunkRequest
from engine.catalog import ModelSpec
from engine.errors import SettingsError

# Flow is estimated at this long side at most (faster; the paint is still warped at full size).
FLOW_SIDE = 640
# DIS's fastest preset taken down to the half-size scale and with variational refinement (which smooths the
# patch flow into the image's edges: without it the paint shows the patches on real footage). On
# bench/keyframe_flow.py's shot this is within 0.1 dB of the medium preset and faster (docs/benchmarks.md).
PRESET, FINEST_SCALE, REFINEMENT_ITERATIONS = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, 1, 5
# Forward-backward check: a pixel is consistent while |f + b|^2 < RELATIVE * (|f|^2 + |b|^2) + ABSOLUTE.
RELATIVE, ABSOLUTE = 0.01, 0.5
# Grey-level detail differences (0-255) up to UNLIKE keep the paint; at twice that it is dropped.
UNLIKE = 14.0
SUM = np.ones((1, 2), np.float32)  # adds the two channels of a flow field
# Pixels sampled (every STRIDE-th row and column) to fit the colour map from source to paint.
STRIDE = 4


def check(spec: ModelSpec, asked: Asked) -> None:
    """Nothing beyond its catalog capabilities (no prompt, no sampling, paint needed), which the daemon checks."""


class KeyframeFlowBackend:
    def __init__(self, spec: ModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        self.flow = cv2.DISOpticalFlow_create(PRESET)
        self.flow.setFinestScale(FINEST_SCALE)
        self.flow.setVariationalRefinementIterations(REFINEMENT_ITERATIONS)

    def render_chunk(self, request: ChunkRequest) -> np.ndarray:
        count = len(request.frames)
        anchors = [index for index, keep in enumerate(request.keep) if keep]
        if not anchors:
            raise SettingsError(f"model {self.spec.id!r} has no painted frame in this window to carry; give a "
                                "style_frame or keyframes within the first context, and a context overlap of 1 "
                                "or more")
        sources = request.sources if request.sources is not None else request.frames
        height, width = request.height, request.width
        scale = min(1.0, FLOW_SIDE / max(width, height))
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        greys = [cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), small, interpolation=cv2.INTER_AREA)
                 if scale < 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in sources]
        colour = ColourMap.fit([sources[index] for index in anchors], [request.frames[index] for index in anchors])
        warp = Warper(width, height, small)
        out = np.empty((count, height, width, 3), np.uint8)
        for index in anchors:
            out[index] = request.frames[index]

        # Each stretch between anchors (and before the first, after the last) is filled from its ends.
        bounds = [(None, anchors[0])] + list(zip(anchors, anchors[1:], strict=False)) + [(anchors[-1], None)]
        for before, after in bounds:
            start = 0 if before is None else before + 1
            end = count if after is None else after
            if start >= end:
                continue
            flows = PairFlows(self.flow, greys)
            forward = backward = None
            if before is not None:
                forward = carry(flows, before, range(start, end), warp)
            if after is not None:
                backward = carry(flows, after, range(end - 1, start - 1, -1), warp)
            for index in range(start, end):
                sides = []
                if forward is not None:
                    warped = warp.apply(request.frames[before], *forward[index])
                    sides.append((warped, after - index if after is not None else 1))
                if backward is not None:
                    warped = warp.apply(request.frames[after], *backward[index])
                    sides.append((warped, index - before if before is not None else 1))
                frame = blend(sides, colour, sources[index])
                if request.mask is not None:
                    inside = request.mask[index].astype(np.float32)
                    frame = cv2.blendLinear(frame, request.frames[index], inside, 1.0 - inside)
                out[index] = frame
            request.on_step(end, count)
        return out


class PairFlows:
    """Optical flow between neighbouring frames, both ways, each pair computed once."""

    def __init__(self, flow, greys: list[np.ndarray]) -> None:
        self.flow, self.greys = flow, greys
        self.pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.details: dict[int, np.ndarray] = {}

    def detail(self, index: int) -> np.ndarray:
        """Frame `index`'s grey levels less their local mean (float32, at the flow size)."""
        if index not in self.details:
            grey = self.greys[index].astype(np.float32)
            self.details[index] = grey - cv2.GaussianBlur(grey, (0, 0), 8)
        return self.details[index]

    def between(self, index: int, previous: int) -> tuple[np.ndarray, np.ndarray]:
        """The flow from frame `index` to its neighbour `previous`, and the flow back."""
        low = min(index, previous)
        if low not in self.pairs:
            ahead = self.flow.calc(self.greys[low], self.greys[low + 1], None)
            behind = self.flow.calc(self.greys[low + 1], self.greys[low], None)
            self.pairs[low] = (ahead, behind)
        ahead, behind = self.pairs[low]
        return (behind, ahead) if index > previous else (ahead, behind)


def carry(flows: PairFlows, anchor: int, order: range, warp: Warper) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each frame of `order` (walking away from the anchor), where each of its pixels was in the anchor and the
    confidence (0-1) that it was seen there, at the flow size (so memory does not grow with the output size)."""
    carried = {}
    coords, seen = warp.identity(), warp.ones()
    detail = flows.detail(anchor)
    previous = anchor
    for index in order:
        towards, away = flows.between(index, previous)
        coords, seen = warp.compose(coords, seen, towards, away)
        carried[index] = (coords, seen * alike(detail, flows.detail(index), coords))
        previous = index
    return carried


def alike(anchor: np.ndarray, frame: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """How far the anchor's source, brought here by the map, still looks like this frame (1 alike, 0 not): where
    the content itself changed (a mouth opening, a turning head) the flow is consistent both ways but the paint
    belongs to something else. Compared on detail (local mean removed), so a change of light is not a change."""
    brought = cv2.remap(anchor, coords[..., 0], coords[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    difference = cv2.GaussianBlur(np.abs(brought - frame), (0, 0), 1.5)
    return np.clip((2 * UNLIKE - difference) / UNLIKE, 0.0, 1.0)


class Warper:
    """Flow composition at the flow size, warping at the frame size."""

    def __init__(self, width: int, height: int, small: tuple[int, int]) -> None:
        self.width, self.height, self.small = width, height, small
        grid_x, grid_y = np.meshgrid(np.arange(small[0], dtype=np.float32), np.arange(small[1], dtype=np.float32))
        self.grid = np.dstack([grid_x, grid_y])
        self.ratio = (width / small[0], height / small[1])

    def identity(self) -> np.ndarray:
        return self.grid.copy()

    def ones(self) -> np.ndarray:
        return np.ones(self.grid.shape[:2], np.float32)

    def compose(self, coords: np.ndarray, seen: np.ndarray, towards: np.ndarray,
                away: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Extend the map to the anchor by one frame: where each pixel of this frame was in the previous
        frame (`towards`), and from there where it was in the anchor. A pixel that fails the forward-backward
        check, or comes from outside the previous frame, was not seen there."""
        target = self.grid + towards
        map_x, map_y = target[..., 0], target[..., 1]
        coords = cv2.remap(coords, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        back = cv2.remap(away, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        error = cv2.transform(np.square(towards + back), SUM)
        limit = cv2.transform(np.square(towards) + np.square(back), SUM) * RELATIVE + ABSOLUTE
        consistent = (error < limit).astype(np.float32)
        carried = cv2.remap(seen, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return coords, carried * consistent

    def apply(self, paint: np.ndarray, coords: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The paint warped by the composed map, and the confidence, both at the frame size."""
        size = (self.width, self.height)
        if size != self.small:
            full = cv2.resize(coords, size, interpolation=cv2.INTER_LINEAR)
            full[..., 0] = (full[..., 0] + 0.5) * self.ratio[0] - 0.5
            full[..., 1] = (full[..., 1] + 0.5) * self.ratio[1] - 0.5
            seen = cv2.resize(seen, size, interpolation=cv2.INTER_LINEAR)
        else:
            full = coords
        # A soft edge where the paint stops, so disocclusions do not show the flow's blocks.
        seen = cv2.GaussianBlur(seen, (0, 0), 1.0)
        warped = cv2.remap(paint, full[..., 0], full[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        return warped, seen


def blend(sides: list[tuple[tuple[np.ndarray, np.ndarray], int]], colour: ColourMap, source: np.ndarray) -> np.ndarray:
    """Mix the warped paints, each weighted by the distance to the other side's anchor and its confidence;
    where no side saw the pixel, the source frame, colour-mapped to the paint, shows through."""
    (paint, seen), distance = sides[0]
    unseen = 1.0 - seen
    if len(sides) == 2:
        (other, other_seen), other_distance = sides[1]
        paint = cv2.blendLinear(paint, other, seen * float(distance), other_seen * float(other_distance))
        unseen = unseen * (1.0 - other_seen)
    if unseen.max() <= 0:
        return paint
    return cv2.blendLinear(paint, colour.apply(source), 1.0 - unseen, unseen)


class ColourMap:
    """An affine map from source colours to painted colours, fitted on frames where both are known."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix

    @classmethod
    def fit(cls, sources: list[np.ndarray], paints: list[np.ndarray]) -> ColourMap:
        given = np.concatenate([frame[::STRIDE, ::STRIDE].reshape(-1, 3) for frame in sources]).astype(np.float64)
        wanted = np.concatenate([frame[::STRIDE, ::STRIDE].reshape(-1, 3) for frame in paints]).astype(np.float64)
        design = np.hstack([given, np.ones((given.shape[0], 1))])
        # A little ridge toward the identity keeps a flat anchor (one colour) from giving a wild map.
        ridge = 1e-3 * given.shape[0]
        prior = np.vstack([np.eye(3), np.zeros((1, 3))])
        matrix = np.linalg.solve(design.T @ design + ridge * np.eye(4), design.T @ wanted + ridge * prior)
        return cls(np.ascontiguousarray(matrix.T, np.float32))  # 3x4, as cv2.transform takes it

    def apply(self, frame: np.ndarray) -> np.ndarray:
        return cv2.transform(frame, self.matrix)


def load(spec: ModelSpec, device: str) -> KeyframeFlowBackend:
    return KeyframeFlowBackend(spec, device)


def build_tiny(spec: ModelSpec) -> None:
    """Nothing to build: keyframe propagation has no weights."""
