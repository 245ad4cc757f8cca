"""Keyframe propagation against a shot whose every frame is known.

A synthetic shot at 640x360: a textured picture moving with a known affine
motion (translation, rotation and zoom), a textured disc crossing in front of
it, and a known "paint" (a fixed colour mix and tone curve) of every frame.
The keyframe-flow backend gets the painted first frame (and, in a second run,
the painted last frame too) and the source frames; its output is compared
with the painted ground truth on the pixels that were visible in the first
frame (what the paint can be carried to; the rest is filled, not carried).

    .venv/bin/python bench/keyframe_flow.py [--frames 48]

Prints: mean PSNR (target >= 30 dB), the last frame's sharpness (variance of
the Laplacian) against the painted ground truth's and against the first
frame's (target >= 80 %), the PSNR with a second keyframe at the end (target:
higher), and frames per second of the backend alone at 640x360 (goal >= 15).
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

from engine.backends import ChunkRequest
from engine.backends.keyframe_flow import KeyframeFlowBackend
from engine.catalog import ModelSpec

WIDTH, HEIGHT = 640, 360
DISC_RADIUS = 60


def texture(width: int, height: int, seed: int) -> np.ndarray:
    """A picture with detail at several scales: coloured noise blurred at octaves, plus strokes."""
    rng = np.random.default_rng(seed)
    picture = np.zeros((height, width, 3), np.float32)
    for sigma, amount in ((24, 90.0), (8, 50.0), (3, 30.0), (1.2, 14.0)):
        noise = rng.standard_normal((height, width, 3)).astype(np.float32)
        blurred = cv2.GaussianBlur(noise, (0, 0), sigma)
        picture += blurred / blurred.std() * amount / 3
    for _ in range(60):
        start = tuple(int(v) for v in rng.integers(0, (width, height)))
        end = tuple(int(v) for v in rng.integers(0, (width, height)))
        colour = tuple(float(v) for v in rng.uniform(-80, 80, 3))
        cv2.line(picture, start, end, colour, int(rng.integers(2, 6)), cv2.LINE_AA)
    return np.clip(picture + 128, 0, 255).astype(np.uint8)


def paint(frame: np.ndarray) -> np.ndarray:
    """The known look: a warm colour mix and a tone curve (lifted shadows, softened highlights)."""
    mix = np.array([[0.80, 0.30, 0.05], [0.15, 0.75, 0.10], [0.05, 0.20, 0.55]], np.float32)
    mixed = np.clip(frame.astype(np.float32) / 255.0 @ mix.T, 0, 1)
    toned = 0.08 + 0.9 * mixed ** 0.8
    return np.clip(np.rint(toned * 255), 0, 255).astype(np.uint8)


def background_matrix(t: int) -> np.ndarray:
    """Frame t -> picture coordinates: the picture drifts, turns and grows over time."""
    angle, zoom = np.deg2rad(0.25 * t), 1.0 + 0.004 * t
    centre = np.array([WIDTH / 2 + 300 + 2.0 * t, HEIGHT / 2 + 200 + 0.8 * t])
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / zoom
    offset = centre - turn @ np.array([WIDTH / 2, HEIGHT / 2])
    return np.hstack([turn, offset[:, None]]).astype(np.float64)


def disc_centre(t: int, frames: int) -> np.ndarray:
    return np.array([120 + 400 * t / max(1, frames - 1), 170 + 40 * np.sin(t / 8)])


def shot(frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The source frames and, per frame, which pixels were visible in frame 0."""
    picture, disc_picture = texture(WIDTH * 3, HEIGHT * 4, 1), texture(4 * DISC_RADIUS, 4 * DISC_RADIUS, 2)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    inverse_first = cv2.invertAffineTransform(background_matrix(0))
    sources, visible = [], []
    for t in range(frames):
        matrix = background_matrix(t)
        frame = cv2.warpAffine(picture, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        centre = disc_centre(t, frames)
        shift = np.float64([[1, 0, 2 * DISC_RADIUS - centre[0]], [0, 1, 2 * DISC_RADIUS - centre[1]]])
        disc = cv2.warpAffine(disc_picture, shift, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
        inside = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= DISC_RADIUS ** 2
        frame[inside] = disc[inside]
        # A background pixel counts if its picture point was in frame 0 and not behind the disc there.
        px = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
        py = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
        x0 = inverse_first[0, 0] * px + inverse_first[0, 1] * py + inverse_first[0, 2]
        y0 = inverse_first[1, 0] * px + inverse_first[1, 1] * py + inverse_first[1, 2]
        first = disc_centre(0, frames)
        seen = (x0 >= 0) & (x0 <= WIDTH - 1) & (y0 >= 0) & (y0 <= HEIGHT - 1)
        seen &= (x0 - first[0]) ** 2 + (y0 - first[1]) ** 2 > (DISC_RADIUS + 2) ** 2
        # A disc pixel counts if that point of the disc was inside frame 0.
        dx, dy = xs - centre[0] + first[0], ys - centre[1] + first[1]
        disc_seen = (dx >= 0) & (dx <= WIDTH - 1) & (dy >= 0) & (dy <= HEIGHT - 1)
        seen = np.where(inside, disc_seen, seen)
        # Leave out the disc's rim, where a pixel mixes both layers in the flow.
        rim = np.abs(np.sqrt((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) - DISC_RADIUS) < 2
        sources.append(frame)
        visible.append(seen & ~rim)
    return sources, visible


def psnr(result: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    error = np.mean(np.square(result[where].astype(np.float64) - truth[where].astype(np.float64)))
    return float(10 * np.log10(255.0 ** 2 / max(error, 1e-10)))


def sharpness(frame: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def propagate(backend: KeyframeFlowBackend, sources: list[np.ndarray], truth: list[np.ndarray],
              keyframes: list[int]) -> tuple[np.ndarray, float]:
    frames = [truth[index] if index in keyframes else frame for index, frame in enumerate(sources)]
    keep = [index in keyframes for index in range(len(sources))]
    request = ChunkRequest(frames, keep, WIDTH, HEIGHT, "", "", 1, 1.0, 1.0, 0, sources=sources)
    started, cpu = time.perf_counter(), time.process_time()
    result = backend.render_chunk(request)
    return result, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    frames = parser.parse_args().frames
    sources, visible = shot(frames)
    truth = [paint(frame) for frame in sources]
    spec = ModelSpec(id="keyframe-flow", name="bench", backend="keyframe-flow")
    backend = KeyframeFlowBackend(spec, "cpu")
    load = os.getloadavg()[0]

    one, seconds, cpu = propagate(backend, sources, truth, [0])
    scores = [psnr(one[t], truth[t], visible[t]) for t in range(1, frames)]
    two, _, _ = propagate(backend, sources, truth, [0, frames - 1])
    scores_two = [psnr(two[t], truth[t], visible[t]) for t in range(1, frames - 1)]
    kept = sharpness(one[-1]) / sharpness(truth[-1])
    kept_first = sharpness(one[-1]) / sharpness(one[0])
    _, again, cpu_again = propagate(backend, sources, truth, [0])

    print(f"synthetic shot: {frames} frames {WIDTH}x{HEIGHT}, picture moving 2.2 px, 0.25 deg and 0.4 % zoom a "
          f"frame, a disc of radius {DISC_RADIUS} crossing in front; load average at start {load:.2f} "
          f"on {os.cpu_count()} CPUs")
    print(f"one keyframe (frame 0): mean PSNR {np.mean(scores):.2f} dB on pixels visible in frame 0 "
          f"(min {np.min(scores):.2f}, last frame {scores[-1]:.2f}; target >= 30)")
    print(f"last frame sharpness: {100 * kept:.1f} % of the painted ground truth's, {100 * kept_first:.1f} % of "
          f"the first frame's (target >= 80 %)")
    print(f"keyframes 0 and {frames - 1}: mean PSNR {np.mean(scores_two):.2f} dB over the frames between "
          f"(one keyframe, same frames: {np.mean(scores[:-1]):.2f} dB)")
    best = min(seconds, again)
    print(f"speed: {frames / best:.1f} frames/s at {WIDTH}x{HEIGHT} (backend alone, best of 2 runs: "
          f"{seconds:.2f} s, {again:.2f} s wall; goal >= 15); CPU time {min(cpu, cpu_again):.2f} s, "
          f"{frames / min(cpu, cpu_again):.1f} frames per CPU-second")


if __name__ == "__main__":
    main()
