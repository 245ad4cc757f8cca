"""The cluster block of `hotshot status`: the Ray nodes and what each render slot does (`executor = "ray"`).

The daemon keeps the picture in its database (`Store.set_cluster`) when a slot
changes and every half minute; the CLI only reads it.
"""

from __future__ import annotations

import time

from daemon.store import Store


def cluster_data(store: Store) -> dict | None:
    """The cluster as the daemon last saw it, or None when it renders on local workers."""
    return store.cluster()


def cluster_lines(cluster: dict | None, daemon_running: bool) -> list[str]:
    """A few lines for the text output: the nodes, then one line per slot."""
    if not cluster:
        return []
    nodes = [node for node in cluster["nodes"] if node["alive"]]
    cpus = sum(node["cpus"] for node in nodes)
    gpus = sum(node["gpus"] for node in nodes)
    age = time.time() - cluster["updated"]
    when = f"{age:.0f} s ago" if daemon_running else "when the daemon last ran"
    lines = ["", f"Cluster  Ray, {len(nodes)} node{'s' * (len(nodes) != 1)} ({cpus:g} CPUs, {gpus:g} GPUs), "
                 f"{len(cluster['slots'])} render slot{'s' * (len(cluster['slots']) != 1)}; as seen {when}"]
    for slot in cluster["slots"]:
        where = f"node {slot['node_ip']} ({slot['node_id'][:8]})" if slot.get("node_id") else "not placed yet"
        doing = f"job {slot['job']}" if slot["job"] is not None else "idle" if slot["state"] == "ready" else ""
        if slot["problems"]:
            doing = "gets no work: " + "; ".join(slot["problems"])
        models = f"  holds {', '.join(slot['models'])}" if slot["models"] else ""
        lines.append(f"  {slot['slot']:<8} {slot['state']:<9} {where:<30} {doing}{models}")
    return lines
