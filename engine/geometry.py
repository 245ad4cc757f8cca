"""The output frame size rule, shared by the video and every still that joins it."""

from __future__ import annotations


def output_dims(width: int, height: int, output_size: int, multiple: int = 16) -> tuple[int, int]:
    """Width and height of the output: the longest side is `output_size`, aspect kept.

    Both sides are multiples of `multiple` (what the model's latent grid needs);
    the shorter side is rounded to the nearest multiple, and the picture is
    scaled to cover that frame and centre-cropped, so nothing is stretched.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    longest = max(multiple, output_size // multiple * multiple)
    if width >= height:
        out_w = longest
        out_h = max(multiple, round(height * longest / width / multiple) * multiple)
    else:
        out_h = longest
        out_w = max(multiple, round(width * longest / height / multiple) * multiple)
    return out_w, out_h
