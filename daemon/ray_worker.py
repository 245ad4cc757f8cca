"""The daemon's side of render slots on a Ray cluster (`executor = "ray"`).

The daemon joins the cluster first (daemon/ray_cluster.py). Each `RayWorker`
is one slot: a named, detached actor (daemon/ray_actor.py) in the settings'
namespace, found again by a restarted daemon (which takes over the render it
may still run for the daemon before, `reclaim`) or created anew. It is a third
`Worker` beside the process and thread workers: the daemon assigns, stops,
cancels and kills it through the same calls, and its reports arrive on the
inbox the same way, pulled from the actor by a thread of the daemon.

Paths cross the path map twice: a job's paths are translated to the nodes'
mounts on the way out, and the paths in reports back to the daemon's on the way
in. A slot whose node cannot read the watch roots or write the work folder is
reported and gets no work.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import structlog

from daemon.config import PathMapping, Settings
from daemon.errors import ConfigError
from daemon.messages import ClusterGone, FromWorker, Inbox, Interrupted, Ready, ToWorker, WorkerExited
from daemon.ray_actor import ATTACH_IDLE_SECONDS
from daemon.ray_cluster import (
    check_reachable,
    cluster_nodes,
    first_line,
    left_cluster,
    slot_count,
    wait_for_cluster,
)
from daemon.states import Job
from daemon.workers import Worker, WorkerPool
from engine import faults

log = structlog.get_logger("hotshot.ray")
REPORT_WAIT_SECONDS = 1.0  # how long one pull of reports waits in the actor; bounds how fast a reader notices a stop
CALL_SECONDS = 30.0  # a control call (send, kill) that has not come back by then finds the slot unreachable
UNREACHABLE_SECONDS = 30.0  # an actor that does not answer this long is given up (its job resumes elsewhere)
NODE_LOST_CODE = -1  # the exit code a slot whose actor died reports
RECLAIM_MISSED = "the daemon restarted while this job ran and its slot no longer holds it"


class PathMap:
    """Translates paths between the daemon's mounts and the render nodes' (`path_map`)."""

    def __init__(self, mappings: list[PathMapping]) -> None:
        self.out = [(entry.source, entry.target) for entry in mappings]
        self.back = [(entry.target, entry.source) for entry in mappings]

    def to_node(self, value: Any) -> Any:
        return _mapped(value, self.out)

    def to_daemon(self, value: Any) -> Any:
        return _mapped(value, self.back)


def _mapped(value: Any, pairs: list[tuple[str, str]]) -> Any:
    """`value` with every string that is a path under a mapped prefix moved to the other side (the longest
    matching prefix wins); dicts, lists, tuples and messages (dataclasses) walked through."""
    if not pairs:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{field.name: _mapped(getattr(value, field.name), pairs)
                                             for field in dataclasses.fields(value)})
    if isinstance(value, str):
        for source, target in sorted(pairs, key=lambda pair: len(pair[0]), reverse=True):
            if value == source or value.startswith(source.rstrip("/") + "/"):
                return target + value[len(source):] if source != "/" else target.rstrip("/") + value
        return value
    if isinstance(value, dict):
        return {key: _mapped(item, pairs) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mapped(item, pairs) for item in value)
    return value


class RayWorker(Worker):
    """One render slot: a named Ray actor, and a thread of the daemon that pulls its reports."""

    settings: Settings  # set by `make_ray_pool`, shared by the slots of one daemon
    gone: threading.Event  # set by `make_ray_pool`: the cluster went away; through Ray Client the next slot to
    # start joins anew, by a plain address the daemon starts itself again (daemon/ray_cluster.py)
    rejoin: threading.Lock  # set by `make_ray_pool`: one slot rejoins, the others wait for it

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actor = None
        self.where: dict = {}
        self.refused: list[str] = []
        self.state = "starting"
        self._ready = threading.Event()
        self._leaving = threading.Event()
        self._thread: threading.Thread | None = None
        self.paths = PathMap(self.settings.path_map)

    def start(self) -> None:
        self._ready.clear()
        self._leaving.clear()
        held = self.job_id  # a job `reclaim` left with this slot stays its until the actor says otherwise
        self._started()
        self.job_id = held
        self.state = "starting"
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-ray", daemon=True)
        self._thread.start()

    @property
    def actor_name(self) -> str:
        return f"hotshot-{self.name}"

    def _actor(self):
        import ray

        from daemon.ray_actor import RenderSlot

        gpus = self.settings.ray_gpus_per_slot
        options: dict = {"name": self.actor_name, "namespace": self.settings.ray_namespace, "lifetime": "detached",
                         "get_if_exists": True, "max_concurrency": 4, "num_gpus": gpus,
                         "num_cpus": self.settings.ray_cpus_per_slot,
                         "max_restarts": 0}
        return ray.remote(RenderSlot).options(**options).remote(self.actor_name, "auto" if gpus else "cpu",
                                                                 self.cache_bytes, self.log_level,
                                                                 faults.environment())

    def _run(self) -> None:
        """Find or create the actor, prove its node can do the work, then forward its reports until it dies."""
        import ray

        if not self._rejoined():
            return
        try:
            self.actor = actor = self._actor()
            probe = actor.probe.remote(self.paths.to_node([str(root) for root in self.settings.roots]),
                                       self.paths.to_node(str(self.settings.work_dir)))
            problems = self._wait(probe)
            if problems is None:
                return
            self.where = ray.get(actor.where.remote(), timeout=CALL_SECONDS)
            # A job this slot rendered for an earlier daemon is kept only by a slot that can do the work.
            attached = ray.get(actor.attach.remote(None if problems else self.job_id),
                               timeout=CALL_SECONDS + ATTACH_IDLE_SECONDS)
            if self.job_id is not None and attached.get("job") != self.job_id:
                log.info("the slot no longer holds the job it rendered for the last daemon; it is queued again",
                         worker=self.name, job=self.job_id)
                self.inbox.put(FromWorker(self.name, Interrupted(self.job_id, RECLAIM_MISSED)))
            if problems:
                self.refused = problems
                self.state = "refused"
                log.error("a render node cannot do the work; it gets no jobs", worker=self.name,
                          node=self.where.get("node"), node_ip=self.where.get("node_ip"),
                          node_id=self.where.get("node_id"), problems=problems)
                return
            self.where = attached
        except Exception as exc:  # noqa: BLE001 - any Ray failure here is a slot that did not start
            if not self._leaving.is_set():
                log.warning("a render slot did not start", worker=self.name, error=f"{type(exc).__name__}: {exc}")
                self._cluster_gone(exc)
                self.state = "lost"
                self.lost_because = f"its Ray actor could not be reached ({type(exc).__name__})"
                self.inbox.put(WorkerExited(self.name, None, NODE_LOST_CODE))
            return
        self.refused = []
        self.state = "ready"
        self._ready.set()
        log.info("render slot ready", worker=self.name, node=self.where.get("node"),
                 node_ip=self.where.get("node_ip"), node_id=self.where.get("node_id"), pid=self.where.get("pid"))
        self.inbox.put(FromWorker(self.name, Ready(self.where.get("pid") or 0)))
        self._forward(actor)

    def _wait(self, reference) -> Any:
        """The value of `reference`, waiting as long as the cluster needs to place the actor; None if the daemon
        leaves meanwhile."""
        import ray

        while not self._leaving.is_set():
            ready, _ = ray.wait([reference], timeout=REPORT_WAIT_SECONDS)
            if ready:
                return ray.get(reference)
        return None

    def _forward(self, actor) -> None:
        """Pull the actor's reports onto the inbox until it dies, or stays unreachable for UNREACHABLE_SECONDS."""
        import ray
        from ray.exceptions import ActorDiedError, GetTimeoutError

        unreachable_since: float | None = None
        pending = None
        while not self._leaving.is_set():
            # A pull that is slow to answer is waited for again, not asked anew: its reports must not be lost.
            pending = pending or actor.reports.remote(REPORT_WAIT_SECONDS)
            try:
                reports = ray.get(pending, timeout=REPORT_WAIT_SECONDS + CALL_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the actor died, its node was lost, or the head went away
                if self._leaving.is_set():
                    return
                if not isinstance(exc, GetTimeoutError):
                    pending = None
                # A dead actor is final. One that does not answer may be a network blip (Ray says "temporarily
                # unavailable"); after UNREACHABLE_SECONDS it is given up and killed, so its name is free again.
                unreachable_since = unreachable_since or time.monotonic()
                if self._cluster_gone(exc):
                    self._lost(actor, exc)
                    return
                if not isinstance(exc, ActorDiedError) and time.monotonic() - unreachable_since < UNREACHABLE_SECONDS:
                    time.sleep(REPORT_WAIT_SECONDS / 4)
                    continue
                self._lost(actor, exc)
                return
            unreachable_since, pending = None, None
            for report in reports:
                self.inbox.put(FromWorker(self.name, self.paths.to_daemon(report)))

    def _cluster_gone(self, exc: Exception) -> bool:
        """Whether the cluster itself is gone for this daemon (its head stopped or restarted), not one actor.

        Through Ray Client, the client raises ConnectionError once it gives up, or the head does not answer at
        all. A daemon joined by a plain address is a driver on a node, cut off once its node's raylet is gone
        (with the head on the head node; on another node once the raylet gives up on the head) or the head
        answers as a new cluster."""
        if self.client:
            gone = isinstance(exc, ConnectionError)
            if not gone:
                try:
                    check_reachable(self.settings.ray_address)
                except ConfigError:
                    gone = True
        else:
            gone = left_cluster()
        if gone and not self.gone.is_set():
            self.gone.set()  # the next slot to start joins anew (Ray Client); with a plain address the daemon does
            if not self.client:
                self.inbox.put(ClusterGone(f"{type(exc).__name__}: {first_line(exc)}"))
        return gone

    def _rejoined(self) -> bool:
        """After the cluster went away, the first slot to start again drops the old connection, waits until
        ray_address answers and connects anew; the other slots wait for it. False if the daemon leaves meanwhile,
        or if it joined by a plain address: that driver cannot leave its cluster and live (Ray ends the process),
        so the daemon starts itself anew instead (`ClusterGone`, `start_again`)."""
        with self.rejoin:
            if not self.gone.is_set():
                return True
            if not self.client:
                return False
            import ray

            log.warning("the Ray cluster went away; waiting for it to answer again", address=self.settings.ray_address)
            gone_at = time.time()
            ray.shutdown()
            if wait_for_cluster(self.settings, gone_at, self._leaving) is None:
                return False
            self.gone.clear()
            return True

    @property
    def client(self) -> bool:
        """Whether the daemon joined through Ray Client (`ray://`), which can leave a cluster and join anew."""
        return str(self.settings.ray_address or "").startswith("ray://")

    def _lost(self, actor, exc: Exception) -> None:
        import ray

        self._ready.clear()
        self.state = "lost"
        self.lost_because = f"its Ray actor on node {self.where.get('node_ip')} was lost ({type(exc).__name__})"
        log.warning("a render slot was lost", worker=self.name, node_id=self.where.get("node_id"),
                    error=f"{type(exc).__name__}: {first_line(exc)}")
        if not self.gone.is_set():  # with the cluster gone its actors are gone too, and there is no one to ask
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone, or the head is away
                log.info("the lost actor could not be killed", worker=self.name)
        self.inbox.put(WorkerExited(self.name, None, NODE_LOST_CODE))

    @property
    def alive(self) -> bool:
        return self._ready.is_set() and not self.gone.is_set()  # no slot takes work once the cluster is gone

    def send(self, message: ToWorker) -> bool:
        if self.actor is None or not self.alive:
            return False
        message = self.paths.to_node(message)
        import ray

        try:
            # Waited for: a cancel sent right after a job must not overtake it on the actor's threads.
            ray.get(self.actor.send.remote(message), timeout=CALL_SECONDS)
        except Exception:  # noqa: BLE001 - unreachable; the reader notices the loss and reports the exit
            return False
        return True

    def kill(self, reason: str) -> None:
        """End the actor (a hung render cannot stop itself); its job fails and is retried with `reason`."""
        if self.actor is None:
            return
        import ray

        self.killed_because = reason
        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            log.info("the actor was already gone", worker=self.name)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Leave the slot's actor running for the next daemon (models stay loaded); stop reading its reports.

        A render still under way was asked to stop after its chunk by the daemon's stop; one that has not
        finished by now stays with the slot, and the next daemon takes it over (`reclaim`)."""
        self._leaving.set()
        self._ready.clear()
        self.state = "detached"
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict:
        """What `hotshot status` shows of this slot."""
        return {"slot": self.name, "actor": self.actor_name, "state": self.state, "job": self.job_id,
                "node": self.where.get("node"), "node_ip": self.where.get("node_ip"),
                "node_id": self.where.get("node_id"), "models": sorted(self.models), "problems": self.refused}

    def rendered_by(self) -> dict:
        return {"node": self.where.get("node"), "node_ip": self.where.get("node_ip"),
                "node_id": self.where.get("node_id"), "actor": self.actor_name}


def reclaim(pool: WorkerPool, running: list[Job]) -> None:
    """Leave each job the database says was running on a slot of `pool` with that slot, before the daemon
    requeues orphans: a Ray actor outlives a daemon that was killed, so its render may still be under way, or
    ended with nobody to tell. The slot's `attach` finds out; the render carries on for this daemon (no chunk is
    rendered twice, and no second render of the job writes in its work folder meanwhile), or the job is queued
    again. A job being cancelled is not reclaimed: its cancel is finished and its render dropped."""
    import ray

    slots = {handle.name: handle for handle in pool if isinstance(handle, RayWorker)}
    namespace = next(iter(slots.values())).settings.ray_namespace if slots else None
    for job in running:
        handle = slots.get(job.worker or "")
        if handle is None and (job.worker or "").startswith("slot-"):
            _end_stray_slot(f"hotshot-{job.worker}", namespace)
        if handle is None or handle.job_id is not None or job.cancel_reason:
            continue
        try:  # no actor of that name: nothing renders the job, it resumes on the first slot free
            ray.get_actor(handle.actor_name, namespace=namespace)
        except ValueError:
            continue
        handle.job_id = job.id
        log.info("a job that ran on a render slot before the restart waits for that slot", job=job.id,
                 worker=handle.name)


def _end_stray_slot(name: str, namespace: str | None) -> None:
    """End the actor of a slot this daemon no longer has (fewer `ray_slots` than before): its render of a job
    that is requeued must not go on writing in the work folder the job resumes from."""
    import ray

    try:
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    except ValueError:
        return  # gone already
    log.warning("ended the actor of a render slot this daemon no longer has", actor=name)


def make_ray_pool(settings: Settings, inbox: Inbox, log_level: str, cache_bytes: int | None) -> WorkerPool:
    """One `RayWorker` per render slot of the cluster `connect` joined."""
    import ray

    slots = slot_count(settings, ray)
    kind = type("ConfiguredRayWorker", (RayWorker,), {"settings": settings, "gone": threading.Event(),
                                                       "rejoin": threading.Lock()})
    return WorkerPool([kind(f"slot-{index}", "ray", inbox, "json", log_level, cache_bytes=cache_bytes)
                       for index in range(slots)])


def cluster_status(pool: WorkerPool) -> dict:
    """The cluster as `hotshot status` shows it: its nodes and, per slot, where it runs and what it renders."""
    try:
        nodes = cluster_nodes()
    except Exception:  # noqa: BLE001 - the head is away: the slots still say what they know
        nodes = []
    return {"executor": "ray", "updated": time.time(), "nodes": nodes,
            "slots": [handle.status() for handle in pool if isinstance(handle, RayWorker)]}
