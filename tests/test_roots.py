"""Watch roots known as mount points: the empty folder a share that is down leaves behind."""

from __future__ import annotations

from daemon.roots import ROOT_LOCK_FILE
from daemon.store import Store
from tests.harness import settings_for, ticked_daemon


def remembered_as_mount(settings) -> str | None:
    store = Store.open(settings.database)
    try:
        return store.flag(f"mount {settings.roots[0]}")
    finally:
        store.close()


def test_a_daemon_started_while_the_share_is_down_counts_its_root_as_away_despite_its_own_lock(tmp_path,
                                                                                              models_dir):
    """A daemon starting over a root remembered as a mount takes its root lock in the empty folder the share left
    behind: that folder still reads as the share being down (the root is away, still remembered as a mount),
    not as a plain folder whose files were all deleted."""
    settings = settings_for(tmp_path, models_dir)
    root = settings.roots[0]
    store = Store.open(settings.database)
    store.set_flag(f"mount {root}", "1")  # as a daemon that saw the share mounted left it
    store.close()
    with ticked_daemon(settings) as daemon:  # its reconcile looks at the root too
        assert sorted(path.name for path in root.iterdir()) == [ROOT_LOCK_FILE]
        assert daemon.roots.check() == ([root], [])
        assert not daemon.roots.available(root)
    assert remembered_as_mount(settings) == "1"


def test_a_root_remembered_as_a_mount_that_now_holds_files_is_taken_as_a_plain_folder(tmp_path, models_dir):
    """The same root with a shot folder in it beside the lock is there: a plain folder now, no longer a mount."""
    settings = settings_for(tmp_path, models_dir)
    root = settings.roots[0]
    (root / "sh010").mkdir()
    store = Store.open(settings.database)
    store.set_flag(f"mount {root}", "1")
    store.close()
    with ticked_daemon(settings) as daemon:
        assert daemon.roots.check() == ([], [])
        assert daemon.roots.available(root)
    assert remembered_as_mount(settings) == "0"
