"""Joining the Ray cluster, and joining it again after its head restarted (`executor = "ray"`).

`connect` joins the cluster at `ray_address` (or starts a Ray instance here)
before the daemon touches anything, so a missing Ray or an unreachable cluster
stops the start with a clear message and changes nothing.

Without Ray's GCS fault tolerance a restarted head is a new cluster, and the
daemon's connection to the old one is dead. A daemon that joined through Ray
Client (`ray://`) leaves it and connects anew in-process (daemon/ray_worker.py,
`RayWorker._rejoined`). A daemon joined by a plain address is a driver on a
cluster node, and Ray ends a driver that leaves a cluster whose raylet is gone;
so that daemon stops cleanly and `start_again` replaces its process with the
same `hotshot run`, whose `connect` waits for the cluster to answer instead of
refusing to start. Re-executing reuses the start-up path that already finds or
starts the slots and resumes requeued jobs from their checkpoints; a bridge
process that owned the Ray driver would put every call of every slot behind a
protocol of its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from typing import NoReturn

import structlog

from daemon.config import Settings
from daemon.errors import ConfigError

log = structlog.get_logger("hotshot.ray")
CONNECT_SECONDS = 5.0  # how long `connect` waits for the cluster's address to answer
REJOIN_SECONDS = 2.0  # how often a daemon whose cluster went away asks whether ray_address answers again
NODES_SECONDS = 2.0  # how long the daemon's status refresh waits for the head to list the nodes
REJOIN_VARIABLE = "HOTSHOT_RAY_REJOIN"  # set by `start_again`: the new process waits for the cluster to answer


def connect(settings: Settings):
    """Join the configured Ray cluster (or start Ray here when `ray_address` is unset); the `ray` module.

    Raises ConfigError when Ray is not installed or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError('executor = "ray" needs Ray, which is not installed: pip install "hotshot[ray]" '
                          '(or set executor = "local")') from exc
    if ray.is_initialized():
        return ray
    rejoining = os.environ.pop(REJOIN_VARIABLE, None)
    if rejoining:
        return wait_for_cluster(settings, float(rejoining))
    address = settings.ray_address
    if address is not None:
        check_reachable(address)
    options: dict = {"include_dashboard": False} if address is None else {}
    try:
        ray.init(address=address, namespace=settings.ray_namespace, log_to_driver=False, logging_level="WARNING",
                 configure_logging=False, **options)
    except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; each one means the same to the user
        where = f"the Ray cluster at {address!r}" if address else "a Ray instance on this machine"
        raise ConfigError(f"cannot start with executor = \"ray\": {where} cannot be reached ({type(exc).__name__}: "
                          f"{first_line(exc) or exc}); start the cluster (`ray start --head` "
                          "on the head node), fix ray_address, or set executor = \"local\"") from exc
    gpus = ray.cluster_resources().get("GPU", 0)
    if settings.ray_gpus_per_slot > gpus:
        ray.shutdown()
        raise ConfigError(f"ray_gpus_per_slot = {settings.ray_gpus_per_slot:g} but the Ray cluster at "
                          f"{address or 'this machine'} has {gpus:g} GPUs: start its nodes with their GPUs "
                          "(`ray start --num-gpus N`), or set ray_gpus_per_slot = 0 for CPU slots")
    return ray


def rejoining() -> bool:
    """Whether this process is a daemon that `start_again` started: its `connect` waits for the cluster."""
    return bool(os.environ.get(REJOIN_VARIABLE))


def wait_for_cluster(settings: Settings, since: float, leaving: threading.Event | None = None):
    """`connect`, tried again every REJOIN_SECONDS until the cluster answers (its head went away and is to come
    back); the `ray` module, or None if `leaving` was set first. `since`: when it went away (`time.time()`)."""
    while leaving is None or not leaving.is_set():
        try:
            ray = connect(settings)
        except ConfigError as exc:
            log.info("the Ray cluster does not answer yet", error=first_line(exc))
            if leaving is None:
                time.sleep(REJOIN_SECONDS)
            else:
                leaving.wait(REJOIN_SECONDS)
            continue
        log.warning("joined the Ray cluster again", address=settings.ray_address, seconds=round(time.time() - since, 1))
        return ray
    return None


def check_reachable(address: str) -> None:
    """Fail at once when nothing listens at the cluster's address (Ray itself would retry for minutes)."""
    where = address.removeprefix("ray://")
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            where = canonicalize_bootstrap_address("auto")
        except Exception:  # noqa: BLE001 - a stale record of a cluster: the same as none
            where = None
        if not where:
            raise ConfigError('ray_address = "auto" but no Ray cluster runs on this machine: start one with '
                              '`ray start --head`, name its address (ray_address = "HEAD:6379"), or leave '
                              'ray_address unset to start Ray with the daemon')
    host, _, port = where.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_SECONDS):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot start with executor = \"ray\": nothing answers at ray_address = {address!r} "
                          f"({exc}); start the cluster (`ray start --head` on the head node), fix ray_address, "
                          "or set executor = \"local\"") from exc


def left_cluster() -> bool:
    """Whether this driver (a daemon joined by a plain address) is cut off from the cluster it joined: its node's
    raylet no longer answers, or the head answers as another cluster (restarted without GCS fault tolerance; a
    raylet started again on a fixed port answers then too). A head that does not answer at all may be a GCS
    restarting with fault tolerance, which keeps the cluster: not counted until the raylet gives up on it."""
    import ray
    from ray._raylet import GcsClient

    node = getattr(ray._private.worker.global_worker, "node", None)
    if node is None:
        return True
    if not _answers(node.node_ip_address, node.node_manager_port):
        return True
    host, _, port = node.gcs_address.rpartition(":")
    if not _answers(host, int(port)):
        return False
    try:
        return GcsClient(address=node.gcs_address).cluster_id.hex() != node.cluster_id.hex()
    except Exception:  # noqa: BLE001 - the head is still coming up: ask again at the next failed call
        return False


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            return True
    except OSError:
        return False


def cluster_nodes() -> list[dict]:
    """The cluster's nodes: id, address, alive, CPUs and GPUs.

    A driver on a node asks through its own GCS client, with a timeout: `ray.nodes()` waits as long as the head
    is away, and when the head comes back as a new cluster it aborts the whole process (a failed check in Ray
    2.60's state accessor, "WrongClusterID"), where the client raises. Through Ray Client the head's server
    answers `ray.nodes()`."""
    import ray

    if ray.util.client.ray.is_connected():
        return [{"node_id": node["NodeID"], "address": node["NodeManagerAddress"], "alive": node["Alive"],
                 "cpus": node["Resources"].get("CPU", 0), "gpus": node["Resources"].get("GPU", 0)}
                for node in ray.nodes()]
    infos = ray._private.worker.global_worker.gcs_client.get_all_node_info(timeout=NODES_SECONDS)
    return [{"node_id": info.node_id.hex(), "address": info.node_manager_address, "alive": info.state == 0,
             "cpus": info.resources_total.get("CPU", 0), "gpus": info.resources_total.get("GPU", 0)}
            for info in infos.values()]


def first_line(exc: Exception) -> str:
    """The first line of an exception's message (Ray's run to pages), or nothing."""
    return str(exc).splitlines()[0] if str(exc) else ""


def start_again() -> NoReturn:
    """Replace this process with the daemon's program started anew, told to wait for the cluster to answer.

    For a daemon joined by a plain address whose cluster went away: Ray ends a driver that leaves such a cluster,
    so the daemon, its locks released and its database closed, becomes a new process image (same pid, so a
    service manager and the state folder's lock file see the same daemon) that joins the restarted cluster and
    starts as after any stop: new actors, the requeued jobs resume from their checkpoints."""
    from daemon import logs

    log.warning("starting the daemon again to join the Ray cluster when it answers again")
    sys.stdout.flush()
    sys.stderr.flush()
    logs.restore_stderr()
    # Ray's driver leaves descriptors open across exec (its log files); the new program needs none of them.
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if int(name) > 2 and os.get_inheritable(int(name)):
                os.close(int(name))
    os.environ[REJOIN_VARIABLE] = str(time.time())
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def slot_count(settings: Settings, ray) -> int:
    """Render slots: `ray_slots`, else one per GPU of the cluster (one CPU slot when it has none)."""
    if settings.ray_slots:
        return settings.ray_slots
    gpus = int(ray.cluster_resources().get("GPU", 0))
    per_slot = settings.ray_gpus_per_slot
    return max(1, int(gpus // per_slot) if per_slot and gpus else 1)
