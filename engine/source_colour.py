"""How a source's pixels are read as RGB: its YUV matrix and range, from its colour tags or as players guess.

A video stores Y'CbCr; turning it into RGB takes the matrix it was made with
(BT.709 for HD, BT.601 for SD, BT.2020 for UHD and HDR) and its range (limited:
16-235, or full: 0-255). A file may say which (its colour tags, as ffprobe
reports them); many do not (screen recordings, some editors' exports, older
cameras). ffmpeg's scaler reads every untagged picture as BT.601, where a player
shows an untagged HD picture as BT.709, so an untagged HD source came out of a
render with its colours shifted (up to 22 levels of 255 on saturated patches,
bench/colour_check.py) against the source as people see it.

So hotshot decides, and tells ffmpeg:

- **Matrix.** The file's tag, when it names one ffmpeg can apply; else mpv's
  rule (libplacebo's too, which many players use): a picture 1280 wide or more,
  or taller than 576 lines (its stored size, before any rotation), is BT.709;
  a smaller one is BT.601. RGB sources need no matrix.
- **Range.** Full for a full-range pixel format (yuvj420p and the like: MJPEG,
  some phones) or a `pc` tag; limited for a `tv` tag; else limited, as players
  assume.

Primaries and transfer are recorded, not converted: a source in BT.2020 or HDR
(PQ, HLG) is read as it is stored, and the render warns that its colours will
look flat in a BT.709 output.
"""

from __future__ import annotations

from dataclasses import dataclass

HD_WIDTH = 1280
"""An untagged picture at least this wide is read as BT.709 ..."""
SD_MAX_HEIGHT = 576
"""... and so is one taller than this (PAL's lines); any other as BT.601."""

# ffprobe's `color_space` names and the matrix ffmpeg's scaler applies for each (`in_color_matrix`). YCgCo,
# ICtCp and the chromaticity-derived matrices are not among the scaler's; a source tagged so is read as untagged.
MATRICES = {
    "bt709": "bt709",
    "bt470bg": "bt601",
    "smpte170m": "bt601",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
    "smpte240m": "smpte240m",
    "fcc": "fcc",
}
# Pixel formats that are not Y'CbCr (RGB, palettes, grey): they are read without a matrix.
_NOT_YUV = ("rgb", "bgr", "gbr", "argb", "abgr", "0rgb", "0bgr", "pal8", "gray", "ya8", "ya16", "mono", "xyz")
_HDR_TRANSFERS = {"smpte2084": "HDR (PQ)", "arib-std-b67": "HDR (HLG)"}


@dataclass(frozen=True)
class SourceColour:
    """The matrix and range a source is read with, where each came from, and the file's own colour tags."""

    matrix: str
    """What ffmpeg's scaler applies: bt709, bt601, bt2020, smpte240m, fcc; `none` for RGB pixels."""
    matrix_from: str
    """`tag` (the file's `color_space`), `size` (untagged: mpv's rule) or `pixel format` (RGB)."""
    range: str
    """`limited` or `full`."""
    range_from: str
    """`tag` (the file's `color_range`), `pixel format` (a full-range one, yuvj420p ...) or `default` (limited)."""
    color_space: str | None = None
    color_range: str | None = None
    color_primaries: str | None = None
    color_transfer: str | None = None

    def scale_options(self) -> dict[str, str]:
        """The options of ffmpeg's `scale` filter that read the source's pixels this way."""
        if self.matrix == "none":
            return {}
        return {"in_color_matrix": self.matrix, "in_range": "pc" if self.range == "full" else "tv"}

    def to_manifest(self) -> dict:
        return {"matrix": self.matrix, "matrix_from": self.matrix_from, "range": self.range,
                "range_from": self.range_from,
                "tags": {"color_space": self.color_space, "color_range": self.color_range,
                         "color_primaries": self.color_primaries, "color_transfer": self.color_transfer}}

    def warnings(self) -> list[str]:
        """What a render of this source cannot keep: HDR and wide-gamut colour."""
        kind = _HDR_TRANSFERS.get(self.color_transfer or "") or \
            ("wide-gamut (BT.2020 primaries)" if self.color_primaries == "bt2020" else None)
        if kind is None:
            return []
        return [f"the source is {kind}; hotshot reads its colours as they are stored, without tone or gamut mapping, "
                "so the BT.709 output looks flatter and less saturated than the source does in an HDR player"]


def source_colour(stream: dict) -> SourceColour:
    """How to read the pixels of a video stream as ffprobe describes it (`-show_streams`)."""
    tags = {key: _tag(stream.get(key)) for key in ("color_space", "color_range", "color_primaries", "color_transfer")}
    pixel_format = str(stream.get("pix_fmt") or "")
    if pixel_format.startswith(_NOT_YUV):
        return SourceColour("none", "pixel format", "full", "pixel format", **tags)
    if tags["color_space"] in MATRICES:
        matrix, matrix_from = MATRICES[tags["color_space"]], "tag"
    else:
        matrix, matrix_from = guessed_matrix(int(stream.get("width") or 0), int(stream.get("height") or 0)), "size"
    if pixel_format.startswith("yuvj"):
        levels, range_from = "full", "pixel format"
    elif tags["color_range"] in ("pc", "tv"):
        levels, range_from = ("full" if tags["color_range"] == "pc" else "limited"), "tag"
    else:
        levels, range_from = "limited", "default"
    return SourceColour(matrix, matrix_from, levels, range_from, **tags)


def guessed_matrix(width: int, height: int) -> str:
    """The matrix of an untagged Y'CbCr picture of this stored size: BT.709 for HD, BT.601 for SD (mpv's rule)."""
    return "bt709" if width >= HD_WIDTH or height > SD_MAX_HEIGHT else "bt601"


def _tag(value: object) -> str | None:
    return None if value in (None, "", "unknown", "unspecified", "reserved") else str(value)
