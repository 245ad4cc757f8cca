"""Image-sequence export: names, PNG and EXR contents, and the staging folder."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from PIL import Image

from engine.errors import SettingsError
from engine.sequence import (
    FORMATS,
    SequenceWriter,
    frame_name,
    linear_to_srgb8,
    read_exr,
    srgb_to_linear,
    write_frame,
)


def _frame(seed: int = 0, height: int = 24, width: int = 40) -> np.ndarray:
    """Every 8-bit code at least once, plus noise, so round trips cover the whole range."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    frame.reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]
    return frame


def _writer(tmp_path: Path, fmt: str = "png") -> SequenceWriter:
    return SequenceWriter(tmp_path / ".plate_r001.seq.part", tmp_path / "plate_r001", "plate_r001", fmt)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_source_frame_zero_is_1001():
    """Source frame 0 is numbered 1001 by default, zero-padded to four digits."""
    assert frame_name("plate_r001", 0, 1001, "exr") == "plate_r001.1001.exr"
    assert frame_name("plate_r001", 0, 0, "png") == "plate_r001.0000.png"
    assert frame_name("plate_r001", 12345, 0, "png") == "plate_r001.12345.png"


def test_range_starting_at_101_starts_at_1102(tmp_path):
    """A range that starts at source frame 101 writes its first file as 1102."""
    path = write_frame(tmp_path, "plate_r001", 101, _frame(), "png")
    assert path == tmp_path / "plate_r001.1102.png"
    assert path.is_file()


def test_unknown_format_and_negative_numbers_are_refused():
    """An unknown format or a negative frame number is refused with the bad value in the message."""
    with pytest.raises(SettingsError, match="'tiff'"):
        frame_name("plate_r001", 0, 1001, "tiff")
    with pytest.raises(SettingsError, match="-5"):
        frame_name("plate_r001", 0, -5, "png")


def test_png_round_trip_is_exact(tmp_path):
    """A PNG frame reads back bit-identical, 8-bit RGB, tagged sRGB, with mode 0o644."""
    frame = _frame()
    path = write_frame(tmp_path, "plate_r001", 0, frame, "png")
    with Image.open(path) as image:
        assert image.mode == "RGB"
        assert "srgb" in image.info
        assert np.array_equal(np.asarray(image), frame)
    assert _mode(path) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_exr_holds_linear_half_floats(tmp_path):
    """An EXR frame holds the sRGB-decoded linear values within half precision, and encodes back within 1 level."""
    frame = _frame()
    path = write_frame(tmp_path, "plate_r001", 0, frame, "exr")
    linear = read_exr(path)
    assert linear.shape == frame.shape and linear.dtype == np.float32
    np.testing.assert_allclose(linear, srgb_to_linear(frame), rtol=2**-10, atol=2**-24)
    back = linear_to_srgb8(linear).astype(int)
    assert np.abs(back - frame).max() <= 1
    assert _mode(path) == 0o644


def test_exr_header(tmp_path):
    """The EXR has half-float R, G, B channels, Rec.709/D65 chromaticities and ZIP compression."""
    path = write_frame(tmp_path, "plate_r001", 0, _frame(), "exr")
    with OpenEXR.File(str(path), separate_channels=True) as exr:
        header = dict(exr.header())
        types = {name: channel.type() for name, channel in exr.channels().items()}
    assert types == {"R": OpenEXR.HALF, "G": OpenEXR.HALF, "B": OpenEXR.HALF}
    np.testing.assert_allclose(header["chromaticities"], (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
                               atol=1e-6)
    assert header["compression"] == OpenEXR.ZIP_COMPRESSION


def test_srgb_to_linear_known_values():
    """The sRGB decoding maps 0 to 0, 255 to 1 and 128 to about 0.2158."""
    codes = np.array([[[0, 255, 128]]], dtype=np.uint8)
    linear = srgb_to_linear(codes)
    assert linear.dtype == np.float32
    assert linear[0, 0, 0] == 0.0
    assert linear[0, 0, 1] == pytest.approx(1.0)
    assert linear[0, 0, 2] == pytest.approx(0.2158, abs=1e-4)
    assert np.array_equal(linear_to_srgb8(linear), codes)


@pytest.mark.parametrize("fmt", FORMATS)
def test_publish_moves_every_frame(tmp_path, fmt):
    """Frames written to staging all appear in the final folder on publish, and staging is gone."""
    writer = _writer(tmp_path, fmt)
    for source_frame in range(101, 104):
        writer.write(source_frame, _frame(source_frame))
    assert not writer.final.exists()
    assert writer.publish() == writer.final
    assert not writer.staging.exists()
    names = sorted(p.name for p in writer.final.iterdir())
    assert names == [f"plate_r001.{number}.{fmt}" for number in (1102, 1103, 1104)]
    assert _mode(writer.final) == 0o755
    assert all(_mode(writer.final / name) == 0o644 for name in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate_r001"]


def test_final_folder_is_absent_midway(tmp_path):
    """While frames are being written, the final folder does not exist and staging is hidden."""
    writer = _writer(tmp_path)
    writer.write(0, _frame())
    assert not writer.final.exists()
    assert writer.staging.name.startswith(".")
    assert _mode(writer.staging) == 0o755


def test_rewriting_a_frame_replaces_it(tmp_path):
    """Writing a frame again (a resumed render) replaces the earlier file."""
    writer = _writer(tmp_path)
    writer.write(0, _frame(1))
    writer.write(0, _frame(2))
    with Image.open(writer.staging / "plate_r001.1001.png") as image:
        assert np.array_equal(np.asarray(image), _frame(2))
    assert len(list(writer.staging.iterdir())) == 1


def test_publish_replaces_an_existing_sequence(tmp_path):
    """Publishing over an earlier sequence leaves only the new frames and no leftovers."""
    writer = _writer(tmp_path)
    writer.final.mkdir()
    (writer.final / "plate_r001.1050.png").write_bytes(b"old")
    writer.write(0, _frame())
    writer.publish()
    assert [p.name for p in writer.final.iterdir()] == ["plate_r001.1001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate_r001"]


def test_discard_removes_staging(tmp_path):
    """Discarding removes the staging folder and publishes nothing."""
    writer = _writer(tmp_path)
    writer.write(0, _frame())
    writer.discard()
    assert list(tmp_path.iterdir()) == []
    writer.discard()


def test_staging_must_be_beside_final(tmp_path):
    """A staging folder elsewhere is refused, since publishing must be a single rename."""
    with pytest.raises(ValueError, match="same folder"):
        SequenceWriter(tmp_path / "other" / ".seq.part", tmp_path / "plate_r001", "plate_r001", "png")
