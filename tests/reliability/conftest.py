"""The reliability suite: every test here is marked `reliability`; the long ones also `slow`.

`make test` runs the fast subset (not slow); `make test-reliability` runs them all and records the figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import drain, settings_for, status_of, write_request
from tests.reliability.support import QUICK, copy_plate, sha

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def quick_reference(tmp_path_factory, media, models_dir) -> str:
    """The sha256 of the QUICK passthrough request rendered without interruption."""
    tmp = tmp_path_factory.mktemp("quick-reference")
    settings = settings_for(tmp, models_dir)
    shot = settings.roots[0] / "sh010"
    copy_plate(media, shot)
    request = write_request(shot / "r.render.json", **QUICK)
    drain(settings)
    assert status_of(request)["state"] == "done", status_of(request)
    return sha(shot / "plate_r001.mp4")
