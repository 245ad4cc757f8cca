"""Folder conventions: what is read, what is ignored, which paths a request may name."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.conventions import is_ignored, kind_of, resolve_in_shot, status_path
from daemon.errors import PathEscapeError


@pytest.mark.parametrize("name,kind", [
    ("plate.mov", "video"), ("PLATE.MP4", "video"), ("a.mkv", "video"), ("a.webm", "video"), ("a.avi", "video"),
    ("a.mxf", "video"), ("restyle.render.json", "request"), ("restyle.render.status.json", None),
    ("plate_r001.render-info.json", None), ("notes.txt", None), ("settings.json", None),
])
def test_kinds(name, kind):
    assert kind_of(Path(name)) == kind


@pytest.mark.parametrize("rel", [".hidden.mp4", "shot/.plate.mp4", ".cache/shot/plate.mp4", "shot/plate.mp4.part",
                                 "shot/plate.tmp", "shot/plate.mp4~", "shot/plate.crdownload"])
def test_hidden_and_temporary_names_are_ignored(rel):
    root = Path("/r")
    assert is_ignored(root / rel, root)


def test_regular_names_are_not_ignored():
    assert not is_ignored(Path("/r/show/sh010/plate.mov"), Path("/r"))


def test_status_file_name():
    assert status_path(Path("/r/s/restyle.render.json")) == Path("/r/s/restyle.render.status.json")


def test_paths_must_stay_in_the_shot_and_the_root(tmp_path):
    root = tmp_path / "root"
    shot = root / "sh010"
    shot.mkdir(parents=True)
    (tmp_path / "outside.mp4").write_bytes(b"x")
    (shot / "plate.mp4").write_bytes(b"x")
    (shot / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    (shot / "inner.mp4").symlink_to(shot / "plate.mp4")
    assert resolve_in_shot(shot, root, "plate.mp4", "source") == shot / "plate.mp4"
    assert resolve_in_shot(shot, root, "inner.mp4", "source") == shot / "inner.mp4"
    for value, why in [("../outside.mp4", "climbs out"), ("sub/../../x.mp4", "climbs out"),
                       (str(tmp_path / "outside.mp4"), "absolute"), ("~/x.mp4", "absolute"),
                       ("link.mp4", "outside the watch root"), (".plate.mp4", "hidden"), ("", "empty")]:
        with pytest.raises(PathEscapeError, match=why):
            resolve_in_shot(shot, root, value, "source")
