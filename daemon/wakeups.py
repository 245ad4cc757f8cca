"""The threads that wake the loop: the file watcher and APScheduler's triggers.

They only put messages on the daemon's inbox (a hint, a reconcile request, a render window's edge); what
comes of them is decided on the loop's thread, and what a window's edge means is worked out from the clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.config import Settings
from daemon.messages import HintSink, Inbox, Reconcile, WindowEdge

if TYPE_CHECKING:
    from daemon.watch import Watcher

log = structlog.get_logger("hotshot.daemon")


def start_watcher(settings: Settings, inbox: Inbox) -> Watcher:
    """Watch the roots; every event is a hint on the inbox, and events lost ask for a reconcile at once."""
    from daemon.watch import Watcher

    def events_lost() -> None:
        """The kernel's queue of file events overflowed (on the watcher's thread): scan the roots now."""
        log.warning("file events were lost (the kernel's inotify queue overflowed; fs.inotify.max_queued_events "
                    "may be raised): scanning the roots now")
        inbox.put(Reconcile())

    watcher = Watcher(settings.roots, HintSink(inbox), polling=settings.observer == "polling",
                      poll_seconds=settings.poll_seconds, overflowed=events_lost)
    watcher.start()
    return watcher


def start_scheduler(settings: Settings, inbox: Inbox) -> BackgroundScheduler:
    """APScheduler, rebuilt from the settings at each start: the reconcile interval and, for every render
    window, cron triggers at its opening and closing. They only wake the loop; the clock decides."""
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(inbox.put, "interval", args=[Reconcile()], seconds=settings.reconcile_seconds, id="reconcile")
    for name, window in settings.render_windows.items():
        opens, closes = window.triggers()
        scheduler.add_job(inbox.put, opens, args=[WindowEdge(name, "opens")], id=f"window {name} opens")
        scheduler.add_job(inbox.put, closes, args=[WindowEdge(name, "closes")], id=f"window {name} closes")
    scheduler.start()
    return scheduler
