"""Content hashes for the Render Info: the source, the mask and every set of weights a render used.

A render is reproducible when its inputs are known byte for byte. Hashing a
source of gigabytes or weights of tens of gigabytes takes a while, so each
file's sha256 is kept in a cache folder (the daemon's state folder), keyed by
the file's identity: its real path, size, modification time, change time and
inode. A file rewritten in place gets a new key and is hashed afresh. A folder
(a diffusers model, an image sequence) is described by the hash of every file
in it and one digest over the sorted list.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from engine.files import write_json_atomic
from engine.job import RenderJob

CHUNK_BYTES = 8 * 2**20
CONTROL_ROLES = {"depth": ("depth",), "normal": ("depth",), "pose": ("pose_detector", "pose"),
                 "depth+pose": ("depth", "pose_detector", "pose"), "softedge": ("softedge",)}


class HashCache:
    """File hashes kept in a folder (None: nothing kept, every file hashed each time)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def file(self, path: Path) -> str:
        """The sha256 of a file's bytes (following links)."""
        stat = os.stat(path)
        identity = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}"
        entry = self.folder / f"{hashlib.sha256(identity.encode()).hexdigest()}.json" if self.folder else None
        if entry is not None:
            try:
                return json.loads(entry.read_text())["sha256"]
            except (OSError, ValueError, KeyError):
                pass
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK_BYTES):
                digest.update(block)
        if entry is not None:
            try:
                entry.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(entry, {"path": str(path), "sha256": digest.hexdigest()})
            except OSError:
                pass  # a cache that cannot be written costs time, not correctness
        return digest.hexdigest()

    def folder_manifest(self, folder: Path) -> dict:
        """Every file under `folder` (hidden ones left out) with its sha256, and one digest over the list."""
        names = sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*")
                       if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts))
        files = {name: self.file(Path(folder) / name) for name in names}
        return {"sha256": listing_digest(files), "files": files}

    def describe(self, path: Path) -> dict:
        """A file's or a folder's hash, as the Render Info shows it."""
        path = Path(path)
        if path.is_dir():
            return self.folder_manifest(path)
        return {"sha256": self.file(path)}


def listing_digest(files: dict[str, str]) -> str:
    """One sha256 over file names and their hashes, in name order."""
    return hashlib.sha256("".join(f"{name}\t{digest}\n" for name, digest in sorted(files.items())).encode()
                          ).hexdigest()


def weights_hashes(job: RenderJob, cache: HashCache) -> dict:
    """Hashes of every set of weights the job used: the model (and its motion adapter and ControlNets), the
    accelerator LoRA, the control preprocessors and the captioner. Weights named by a hub id are hashed in the
    local hub cache; weights that cannot be found are listed with a null hash and why."""
    found: dict[str, dict] = {}
    model = job.model
    if model.path or model.hub:
        found["model"] = _weights(cache, model.path, model.hub, model.revision)
    if model.motion_adapter is not None:
        adapter = model.motion_adapter
        found["motion_adapter"] = _weights(cache, adapter.path, adapter.hub, adapter.revision)
    if job.accelerator_lora:
        found["accelerator_lora"] = _weights(cache, job.accelerator_lora, None, None)
    types = {part for control in job.controls for part in control.type.split("+")}
    for name in sorted(types):
        weights = model.controlnet_models.get(name)
        if weights is not None:
            found[f"controlnet_{name}"] = _weights(cache, weights.path, weights.hub, weights.revision)
    catalog = job.control_catalog
    roles = {role for control in job.controls for role in CONTROL_ROLES.get(control.type, ())}
    if job.auto_prompt:
        roles.add("pose_detector")  # Auto Prompt counts the people in the shot with it
    for role in sorted(roles):
        weights = getattr(catalog, role, None) if catalog is not None else None
        if weights is not None:
            found[f"control_{role}"] = _weights(cache, weights.path, getattr(weights, "hub", None),
                                                getattr(weights, "revision", None))
    if job.auto_prompt and job.captioner is not None:
        captioner = job.captioner
        found["captioner"] = _weights(cache, captioner.path, captioner.hub, captioner.revision)
    return found


def _weights(cache: HashCache, path: str | None, hub: str | None, revision: str | None) -> dict:
    location = path if path is not None else (f"{hub}@{revision}" if revision else str(hub))
    folder = Path(path) if path is not None else _hub_snapshot(hub, revision)
    if folder is None or not folder.exists():
        return {"location": location, "sha256": None, "files": {}, "note": "not found on this machine"}
    return {"location": location, **cache.describe(folder)}


def _hub_snapshot(hub: str | None, revision: str | None) -> Path | None:
    """The hub repository's folder in the local hub cache, or None when it was never downloaded here."""
    if hub is None:
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not here"; the Render Info says so
        return None
