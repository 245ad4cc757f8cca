"""What a render delivers besides its pictures: timecode, real timing of variable-rate sources, alpha warnings,
and the editorial codecs (ProRes, DNxHR in MOV), each checked with ffprobe on the output.

The passthrough backend (output = source frames) keeps these renders quick; the clips are made with ffmpeg
in each test's temporary folder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from engine.catalog import load_catalog
from engine.decode import read_frames
from engine.errors import Interrupted, SettingsError
from engine.models import ModelCache
from engine.probe import probe
from engine.render import render
from engine.timecode import from_frame_number, parse
from tests.conftest import CATALOG
from tests.harness import sha
from tests.helpers import Recorder, make_job

CACHE = ModelCache()
TONE_AT = 0.6  # seconds: where the VFR clip's frame 10 is shown, and its tone starts


@pytest.fixture(scope="module")
def passthrough(models_dir):
    return load_catalog([CATALOG], models_dir)["passthrough"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def ffprobe(path: Path, *args: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], check=True,
                          capture_output=True)
    return json.loads(done.stdout)


def streams(path: Path) -> dict[str, dict]:
    """The output's streams by type (video, audio, data)."""
    return {stream["codec_type"]: stream for stream in ffprobe(path, "-show_streams")["streams"]}


def timecoded_clip(path: Path, frames: int = 60, timecode: str = "01:00:10:00", size: str = "160x96") -> Path:
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000", "-t", str(frames / 25), "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-timecode", timecode, str(path))
    return path


def vfr_clip(path: Path) -> Path:
    """4 s of 25 fps test pattern with every third frame of the first 40 dropped (frame 10 is shown at 0.6 s,
    not 0.4 s), and audio that is silent until 0.6 s and a tone after."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25", "-f", "lavfi", "-i",
           f"aevalsrc='if(gte(t,{TONE_AT}),0.5*sin(2*PI*440*t),0)':s=48000:d=4", "-t", "4",
           "-vf", r"select='not(eq(mod(n\,3)\,1)*lt(n\,40))'", "-fps_mode", "vfr", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


def audio_onset_ms(path: Path) -> float:
    """Where the output's audio first gets loud, in ms from its start."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a", "-ac", "1",
                           "-f", "f32le", "-ar", "48000", "-"], check=True, capture_output=True)
    samples = np.frombuffer(done.stdout, np.float32)
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    return float(loud[0] / 48) if loud.size else float("inf")


def test_timecode_arithmetic_counts_in_the_source_rate():
    """25 fps adds plainly; 29.97 drop-frame skips two labels a minute except each tenth; 24 h wraps."""
    assert str(parse("01:00:10:00", "25/1").plus(25)) == "01:00:11:00"
    assert str(parse("00:00:59;29", "30000/1001").plus(1)) == "00:01:00;02"
    assert str(parse("00:09:59;29", "30000/1001").plus(1)) == "00:10:00;00"
    assert str(parse("00:00:59:29", "30000/1001").plus(1)) == "00:01:00:00"  # non-drop counts every label
    assert str(parse("23:59:59:24", "25/1").plus(2)) == "00:00:00:01"
    for number in (0, 1799, 1800, 17982, 17983, 107892 * 3 + 5):
        code = from_frame_number(number, 30, drop_frame=True)
        assert code.frame_number == number
    assert parse("01:00:10:30", "25/1") is None  # no frame 30 at 25 fps


def test_output_carries_the_source_timecode_plus_the_range_start(tmp_path, passthrough):
    """A source at 01:00:10:00 rendered from frame 25 gives an MP4 at 01:00:11:00, EXRs stamped frame by
    frame from it at 25 fps, and the same timecodes in the Render Info."""
    source = timecoded_clip(tmp_path / "plate.mp4")
    job = make_job(tmp_path, passthrough, source, frame_range=(25, 34), context_size=81, image_sequence="exr")
    result = render(job, None, CACHE)
    assert streams(Path(result.output))["video"]["tags"]["timecode"] == "01:00:11:00"
    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["output"]["timecode"] == "01:00:11:00"
    assert manifest["source"]["timecode"] == "01:00:10:00"
    stamped = []
    for path in sorted(job.sequence_folder.iterdir()):
        with OpenEXR.File(str(path)) as exr:
            code, rate = exr.header()["timeCode"], exr.header()["framesPerSecond"]
            stamped.append(f"{code.hours:02d}:{code.minutes:02d}:{code.seconds:02d}:{code.frame:02d}")
        assert rate == 25
    assert stamped[0] == "01:00:11:00" and stamped[-1] == "01:00:11:09" and len(stamped) == 10


def test_a_source_without_timecode_gives_an_output_without_one(tmp_path, passthrough, media):
    """No timecode is made up: the output has none and the Render Info says so."""
    source = tmp_path / "plate.mp4"
    source.write_bytes((media / "bars-timecode.mp4").read_bytes())
    result = render(make_job(tmp_path, passthrough, source, frame_range=(0, 9), context_size=81), None, CACHE)
    assert "timecode" not in streams(Path(result.output))["video"].get("tags", {})
    assert json.loads(Path(result.manifest).read_text())["output"]["timecode"] is None


def test_variable_rate_source_gets_its_audio_cut_at_the_real_timestamps(tmp_path, passthrough):
    """A VFR range from frame 10 (shown at 0.6 s) keeps its audio in sync (the tone that starts at 0.6 s starts
    the output, where frame ÷ rate would have put 200 ms of silence first); the output plays at the average
    rate, evenly spaced, and the Render Info and warnings say so."""
    source = vfr_clip(tmp_path / "phone.mp4")
    info = probe(source)
    assert info.fps == "25/1" and info.avg_fps != info.fps
    result = render(make_job(tmp_path, passthrough, source, frame_range=(10, 60), context_size=81), None, CACHE)
    output = Path(result.output)
    assert audio_onset_ms(output) < 15
    written = probe(output)
    assert written.frame_count == 51 and written.fps == info.avg_fps
    times = [float(p["pts_time"]) for p in ffprobe(output, "-select_streams", "v:0", "-show_entries",
                                                        "packet=pts_time")["packets"]]
    steps = np.diff(sorted(times))
    assert steps.max() - steps.min() < 0.002  # constant rate
    manifest = json.loads(Path(result.manifest).read_text())
    rate = manifest["frame_rate"]
    assert rate["variable"] is True and rate["output"] == info.avg_fps
    assert abs(rate["audio_start_seconds"] - TONE_AT) < 0.001
    assert any("variable frame rate" in w and "constant-rate at its average rate" in w
               for w in manifest["warnings"])


def test_audio_that_starts_after_the_picture_stays_on_its_frames(tmp_path, passthrough):
    """A clip whose audio track starts 0.2 s after its picture (and runs past its end, so it is encoded, not
    carried) keeps that gap in the render: a tone at 1.0 s of the picture is at 1.0 s of the output, not pulled
    0.2 s ahead of its frames."""
    source = tmp_path / "late-audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=2", "-itsoffset", "0.2", "-f", "lavfi",
           "-i", "aevalsrc='if(gte(t,0.8),0.5*sin(2*PI*440*t),0)':s=48000:d=2.4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(source))
    audio_start = float(streams(source)["audio"]["start_time"])
    assert audio_start > 0.15, audio_start  # the track really starts after the picture
    result = render(make_job(tmp_path, passthrough, source, frame_range=(0, 49), context_size=81), None, CACHE)
    assert json.loads(Path(result.manifest).read_text())["output"]["audio_from_source"] == "encoded"
    assert abs(audio_onset_ms(Path(result.output)) - 1000) < 30


def test_a_constant_rate_source_is_not_called_variable(tmp_path, passthrough):
    """A 25 fps clip keeps 25 fps, with no frame-rate warning."""
    source = timecoded_clip(tmp_path / "plate.mp4", frames=30)
    result = render(make_job(tmp_path, passthrough, source, frame_range=(5, 20), context_size=81), None, CACHE)
    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["frame_rate"]["variable"] is False and manifest["output"]["fps"] == "25/1"
    assert not any("frame rate" in warning for warning in manifest["warnings"])


@pytest.mark.parametrize("codec, pixel_format", [
    ("png", "rgba"),
    pytest.param("vp9", "yuva420p", marks=pytest.mark.slow),  # WebM: alpha in a side stream, decoded as yuv420p
    pytest.param("prores_ks", "yuva444p10le", marks=pytest.mark.slow),
])
def test_alpha_in_the_source_is_reported(tmp_path, passthrough, codec, pixel_format):
    """A source with transparency (VP9 with alpha, PNG with alpha, ProRes 4444 with alpha) is rendered with a
    warning in the Render Info that its alpha is not carried through."""
    suffix = ".webm" if codec == "vp9" else ".mov"
    encoder = {"vp9": "libvpx-vp9", "png": "png", "prores_ks": "prores_ks"}[codec]
    source = tmp_path / f"matte{suffix}"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=160x96:rate=25,format={pixel_format}", "-frames:v", "12",
           "-c:v", encoder, "-pix_fmt", pixel_format, *(["-profile:v", "4"] if codec == "prores_ks" else []),
           str(source))
    assert probe(source).alpha
    result = render(make_job(tmp_path, passthrough, source, frame_range=(0, 9), context_size=81), None, CACHE)
    warnings = json.loads(Path(result.manifest).read_text())["warnings"]
    assert any("alpha channel" in warning and "not carried" in warning for warning in warnings)


@pytest.mark.slow
def test_an_opaque_source_has_no_alpha_warning(tmp_path, passthrough):
    """ProRes 4444 without alpha is opaque: no warning."""
    source = tmp_path / "opaque.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25", "-frames:v", "12", "-c:v", "prores_ks",
           "-profile:v", "4", "-pix_fmt", "yuv444p10le", str(source))
    assert not probe(source).alpha
    result = render(make_job(tmp_path, passthrough, source, frame_range=(0, 9), context_size=81), None, CACHE)
    assert not any("alpha" in w for w in json.loads(Path(result.manifest).read_text())["warnings"])


EDITORIAL = [
    # codec, profile ffprobe reports, pixel format, output size
    ("prores_422_hq", "prores", "HQ", "yuv422p10le", 64),
    pytest.param("prores_4444", "prores", "4444", "yuv444p12le", 64, marks=pytest.mark.slow),
    pytest.param("dnxhr_hq", "dnxhd", "DNXHR HQ", "yuv422p", 256, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("codec, name, profile, pixel_format, size", EDITORIAL)
def test_editorial_codecs_resume_exactly_with_audio_and_timecode(tmp_path, passthrough, codec, name, profile,
                                                                  pixel_format, size):
    """ProRes 422 HQ, ProRes 4444 and DNxHR HQ come out in a MOV with PCM audio and the range's timecode; a
    render stopped after its first chunk and resumed is byte-identical to an uninterrupted one; the pictures
    are the source's (passthrough) within the codec's loss."""
    source = timecoded_clip(tmp_path / "plate.mp4", frames=40, size="320x180")
    common = dict(frame_range=(5, 34), context_size=13, context_overlap=4, output_size=size, output_codec=codec)
    whole = render(make_job(tmp_path, passthrough, source, "whole", output=tmp_path / "whole.mov", **common),
                   None, CACHE)
    job = make_job(tmp_path, passthrough, source, "resumed", output=tmp_path / "resumed.mov", **common)
    stopper = Recorder(stop_after=1)
    with pytest.raises(Interrupted):
        render(job, stopper, CACHE)
    assert sorted(path.suffix for path in job.work_dir.glob("segment-*")) == [".mov"]
    done = {record.index: record.seconds for record in stopper.chunks}
    render(job.model_copy(update={"done_chunks": done}), None, CACHE)
    assert sha(job.output) == sha(Path(whole.output))

    found = streams(job.output)
    assert (found["video"]["codec_name"], found["video"]["profile"], found["video"]["pix_fmt"]) == \
        (name, profile, pixel_format)
    assert found["audio"]["codec_name"] == "pcm_s24le"
    assert found["video"]["tags"]["timecode"] == "01:00:10:05"
    assert ffprobe(job.output, "-show_format")["format"]["format_name"].startswith("mov")
    info = probe(job.output)
    assert info.frame_count == 30 and info.fps == "25/1"
    width, height = info.width, info.height
    back = np.stack(list(read_frames(job.output, 0, 29, width, height))).astype(int)
    original = np.stack(list(read_frames(source, 5, 34, width, height))).astype(int)
    # 4:2:2 chroma on a busy 64x32 pattern, against the source's frames as decoded with full chroma detail
    assert np.abs(back - original).mean() < 9
    manifest = json.loads(job.manifest.read_text())
    assert manifest["output"]["output_codec"] == codec and manifest["output"]["container"] == "mov"


def test_dnxhr_refuses_frames_smaller_than_its_encoder_takes(tmp_path, passthrough, media):
    """DNxHR HQ at 64x32 is refused with the size it needs and the alternatives, before anything renders."""
    source = tmp_path / "plate.mp4"
    source.write_bytes((media / "chaplin.mp4").read_bytes())
    job = make_job(tmp_path, passthrough, source, output=tmp_path / "out.mov", output_codec="dnxhr_hq",
                   context_size=81, frame_range=(0, 9))
    with pytest.raises(SettingsError, match=r"at least 256x120.*64x32.*prores_422_hq"):
        render(job, None, CACHE)


def test_daemon_delivers_a_mov_that_a_further_pass_can_use(tmp_path, models_dir, capsys):
    """A request for ProRes 422 HQ becomes plate_r001.mov (status, Render Info, `hotshot status` and `hotshot info`
    name it); a further pass from the .mov keeps the lineage and the timecode; a VFR source's status warns that
    its output is constant-rate; DNxHR at 64 px is refused when the request is read."""
    from daemon.cli import main
    from tests.harness import drain, settings_for, status_of, write_request

    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    timecoded_clip(shot / "plate.mp4", frames=30)
    write_request(shot / "a.render.json", output_codec="prores_422_hq", frame_range=[5, 24], output_size=64)
    write_request(shot / "tiny.render.json", output_codec="dnxhr_hq", output_size=64)
    drain(settings)
    status = status_of(shot / "a.render.json")
    assert status["state"] == "done", status
    assert status["outputs"]["video"] == "plate_r001.mov"
    refused = status_of(shot / "tiny.render.json")
    assert refused["state"] == "failed" and "at least 256x120" in refused["error"]
    assert streams(shot / "plate_r001.mov")["video"]["codec_name"] == "prores"

    write_request(shot / "b.render.json", source="plate_r001.mov")
    drain(settings)
    status = status_of(shot / "b.render.json")
    assert status["state"] == "done" and status["outputs"]["video"] == "plate_r002.mp4", status
    manifest = json.loads((shot / "plate_r002.render-info.json").read_text())
    assert manifest["lineage"]["chain"] == ["plate.mp4", "plate_r001.mov", "plate_r002.mp4"]
    assert streams(shot / "plate_r002.mp4")["video"]["tags"]["timecode"] == "01:00:10:05"

    vfr_shot = settings.roots[0] / "sh020"
    vfr_shot.mkdir()
    vfr_clip(vfr_shot / "phone.mp4")
    write_request(vfr_shot / "v.render.json", frame_range=[0, 20], output_size=64)
    drain(settings)
    status = status_of(vfr_shot / "v.render.json")
    assert any("constant-rate at its average rate" in w for w in status["outputs"]["warnings"]), status

    assert main(["status", "--state", str(settings.state_dir)]) == 0
    listing = capsys.readouterr().out
    assert "plate_r001.mov" in listing and "1 warning" in listing
    assert main(["info", str(shot / "plate_r001.mov")]) == 0
    assert "prores_422_hq (prores), timecode 01:00:10:05" in capsys.readouterr().out


def test_segments_join_evenly_at_24_fps(tmp_path):
    """Chunks of 7, 8 and 9 frames at 24 fps (durations that are no whole number of milliseconds) join into an
    output at exactly 24 fps, every frame 1/24 s after the last, in MP4 and MOV alike."""
    from engine.encode import encode_segment, mux_output

    frames = [np.full((32, 64, 3), 10 * index, np.uint8) for index in range(24)]
    for codec, suffix in (("h264", ".mp4"), ("prores_422_hq", ".mov")):
        segments = [tmp_path / f"{codec}-{index}{suffix}" for index in range(3)]
        for segment, part in zip(segments, (frames[:7], frames[7:15], frames[15:]), strict=True):
            encode_segment(part, 64, 32, "24/1", segment, codec=codec)
        output = mux_output(segments, "24/1", 24, tmp_path / f"joined{suffix}", None, tmp_path, codec=codec)
        assert output.fps == "24/1"
        times = sorted(float(p["pts_time"]) for p in ffprobe(Path(output.path), "-select_streams", "v:0",
                                                               "-show_entries", "packet=pts_time")["packets"])
        assert np.allclose(np.diff(times), 1 / 24, atol=1e-4), np.diff(times)


def audio_md5(path: Path) -> str:
    """The md5 of the first audio stream's packets, as they are stored."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-c",
                           "copy", "-f", "md5", "-"], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def test_a_whole_clip_carries_its_audio_unchanged_and_a_range_reencodes_it(tmp_path, passthrough, media):
    """The whole of a clip with MP3 audio gets the source's audio packets unchanged (no generation loss), its
    Render Info saying "copied", and a stop after the first chunk resumes to the same bytes; a range of it
    gets its audio encoded in AAC and cut to the range."""
    source = tmp_path / "chaplin.mp4"
    source.write_bytes((media / "chaplin.mp4").read_bytes())
    common = dict(context_size=81, context_overlap=4, output_size=64)
    whole = render(make_job(tmp_path, passthrough, source, "whole", frame_range=(0, 240), **common), None, CACHE)
    assert audio_md5(Path(whole.output)) == audio_md5(source)
    assert streams(Path(whole.output))["audio"]["codec_name"] == "mp3"
    assert json.loads(Path(whole.manifest).read_text())["output"]["audio_from_source"] == "copied"
    job = make_job(tmp_path, passthrough, source, "resumed", frame_range=(0, 240), **common)
    stopper = Recorder(stop_after=1)
    with pytest.raises(Interrupted):
        render(job, stopper, CACHE)
    render(job.model_copy(update={"done_chunks": {r.index: r.seconds for r in stopper.chunks}}), None, CACHE)
    assert sha(job.output) == sha(Path(whole.output))

    part = render(make_job(tmp_path, passthrough, source, "part", frame_range=(50, 99), **common), None, CACHE)
    audio = streams(Path(part.output))["audio"]
    assert audio["codec_name"] == "aac" and abs(float(audio["duration"]) - 2.0) < 0.05
    assert json.loads(Path(part.manifest).read_text())["output"]["audio_from_source"] == "encoded"


def test_editorial_output_carries_pcm_as_is_and_encodes_other_audio(tmp_path, passthrough):
    """A whole MOV clip with 24-bit PCM rendered to ProRes keeps its audio samples bit for bit ("copied"); the
    same clip with AAC audio gets PCM encoded from it ("encoded")."""
    for acodec, expected in (("pcm_s24le", "copied"), ("aac", "encoded")):
        source = tmp_path / f"plate-{acodec}.mov"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25", "-f", "lavfi", "-i",
               "sine=frequency=440:sample_rate=48000", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
               "-c:a", acodec, str(source))
        result = render(make_job(tmp_path, passthrough, source, acodec, frame_range=(0, 24), context_size=81,
                                 output_codec="prores_422_hq", output=tmp_path / f"{acodec}.mov"), None, CACHE)
        assert streams(Path(result.output))["audio"]["codec_name"] == "pcm_s24le"
        assert (audio_md5(Path(result.output)) == audio_md5(source)) == (expected == "copied")
        assert json.loads(Path(result.manifest).read_text())["output"]["audio_from_source"] == expected
