"""Settings: file, environment and flags, validated at start-up with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.errors import ConfigError
from daemon.service import Daemon
from tests.conftest import CATALOG


def test_flags_beat_environment_beat_file(tmp_path, monkeypatch):
    config = tmp_path / "hotshot.toml"
    config.write_text('stable_seconds = 5.0\nreconcile_seconds = 7.0\nroots = ["a"]\n')
    monkeypatch.setenv("HOTSHOT_RECONCILE_SECONDS", "9")
    monkeypatch.setenv("HOTSHOT_DEVICES", '["cpu", "cpu"]')
    settings = load_settings(config, roots=[tmp_path / "flag-root"])
    assert settings.stable_seconds == 5.0
    assert settings.reconcile_seconds == 9.0
    assert settings.devices == ["cpu", "cpu"]
    assert settings.roots == [(tmp_path / "flag-root").resolve()]
    assert settings.database == Path("var/hotshot.db").resolve()


def test_state_inside_a_watch_root_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="lies inside the watch root"):
        load_settings(None, roots=[tmp_path], state_dir=tmp_path / "var")


def test_missing_root_and_bad_catalog_stop_the_daemon_at_start(tmp_path):
    with pytest.raises(ConfigError, match="does not exist or is not a folder"):
        Daemon(load_settings(None, roots=[tmp_path / "absent"], state_dir=tmp_path / "state",
                             catalogs=[CATALOG]))
    broken = tmp_path / "models.toml"
    broken.write_text('[models.x]\nbackend = "stable-video"\npath = "x"\n')
    (tmp_path / "root").mkdir()
    with pytest.raises(ConfigError, match="model 'x' is invalid: backend"):
        Daemon(load_settings(None, roots=[tmp_path / "root"], state_dir=tmp_path / "state", catalogs=[broken]))


def test_a_second_daemon_on_the_same_state_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    settings = load_settings(None, roots=[tmp_path / "root"], state_dir=tmp_path / "state", catalogs=[CATALOG])
    first = Daemon(settings)
    try:
        with pytest.raises(ConfigError, match="another hotshot daemon"):
            Daemon(settings)
    finally:
        first.store.close()
        first.release_locks()


def test_operations_settings_are_checked(tmp_path):
    """Render windows, the full-clip policy and notifications are validated at start-up, naming the problem."""
    root = tmp_path / "root"
    base = dict(roots=[root], state_dir=tmp_path / "state", catalogs=[CATALOG])
    with pytest.raises(ConfigError, match="window 'overnight': unknown timezone 'Europe/Londn'"):
        load_settings(None, **base, windows={"overnight": {"start": "20:00", "end": "06:00",
                                                           "timezone": "Europe/Londn"}})
    with pytest.raises(ConfigError, match="window 'overnight': at_close: Input should be 'finish' or 'pause'"):
        load_settings(None, **base, windows={"overnight": {"start": "20:00", "end": "06:00", "at_close": "stop"}})
    with pytest.raises(ConfigError, match="defer_full_clips names the render window 'nightly', which is not"):
        load_settings(None, **base, defer_full_clips={"window": "nightly", "longer_than_frames": 100})
    with pytest.raises(ConfigError, match=f"notify root {tmp_path / 'elsewhere'} is not a watch root"):
        load_settings(None, **base, notify=[{"root": str(tmp_path / "elsewhere"), "command": ["true"]}])
    with pytest.raises(ConfigError, match="notify needs a webhook, a command or both"):
        load_settings(None, **base, notify=[{"root": str(root)}])
    settings = load_settings(None, **base, windows={"overnight": {"start": "20:00", "end": "06:00"}},
                             notify=[{"root": str(root), "webhook": "http://127.0.0.1:9/hook"}])
    assert list(settings.render_windows) == ["overnight"] and settings.notify[0].root == root.resolve()
    assert settings.devices == "auto" and settings.keep_failed_checkpoints_hours == 72


def test_the_shipped_settings_file_loads(tmp_path):
    """config/hotshot.toml, with its examples as written, is valid."""
    from tests.conftest import PROJECT

    settings = load_settings(PROJECT / "config" / "hotshot.toml", state_dir=tmp_path / "state")
    assert settings.devices == "auto"
