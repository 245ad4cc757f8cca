"""The command line: fast paths never import torch; models and info commands."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import CATALOG, PROJECT

PROBE = """
import sys
from daemon.cli import main
code = main(sys.argv[1:])
heavy = sorted(name for name in ("torch", "diffusers", "transformers") if name in sys.modules)
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


def run_cli(*args, cwd=PROJECT):
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_status_and_models_list_do_not_import_torch(tmp_path):
    request = tmp_path / "sh" / "r.render.json"
    request.parent.mkdir()
    request.write_text('{"prompt": "x"}')
    for args in (["status", "--state", str(tmp_path)], ["status", "--json", "--state", str(tmp_path)],
                 ["models", "list", "--state", str(tmp_path)], ["presets"],
                 ["estimate", "--state", str(tmp_path), str(request)],
                 ["pause", "--state", str(tmp_path)],
                 ["resume", "--state", str(tmp_path)]):
        done = run_cli(*args)
        assert done.returncode in (0, 1), done.stderr
        assert "HEAVY=\n" in done.stdout, (args, done.stdout)


def test_models_list_shows_the_catalog(tmp_path):
    done = run_cli("models", "list", "--state", str(tmp_path))
    assert "tiny-wan-vace" in done.stdout and "wan-vace" in done.stdout
    assert "built on first use" in done.stdout


def test_info_prints_a_render_info(tmp_path):
    manifest = {
        "render_id": "plate_r001", "output": {"video": "plate_r001.mp4", "width": 64, "height": 32, "frames": 48,
                                              "fps": "25/1"},
        "lineage": {"chain": ["plate.mp4", "plate_r001.mp4"]}, "frame_range": [0, 47],
        "model": {"id": "tiny-wan-vace", "backend": "wan-vace", "dtype": "float32", "device": "cpu"},
        "settings": {"steps": {"value": 4, "from": "model"}}, "chunk_plan": {"chunks": []}, "timing": {},
        "warnings": ["the source has no audio; the output has none"],
    }
    (tmp_path / "plate_r001.render-info.json").write_text(json.dumps(manifest))
    done = run_cli("info", str(tmp_path / "plate_r001.mp4"))
    assert done.returncode == 0, done.stderr
    assert "plate.mp4 → plate_r001.mp4" in done.stdout and "steps" in done.stdout and "(model)" in done.stdout
    missing = run_cli("info", str(tmp_path / "nope.mp4"))
    assert missing.returncode == 2 and "no Render Info" in missing.stderr


def test_bad_config_is_reported_clearly(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('stable_seconds = "soon"\nroots = ["hotfolders"]\n')
    done = run_cli("status", "--config", str(config))
    assert done.returncode == 2
    assert "stable_seconds" in done.stderr and "invalid settings" in done.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 1\n")
    done = run_cli("status", "--config", str(unknown))
    assert done.returncode == 2 and "colour" in done.stderr
    assert run_cli("status", "--config", str(tmp_path / "absent.toml")).returncode == 2


def test_catalog_is_the_shipped_one():
    assert CATALOG.is_file()
