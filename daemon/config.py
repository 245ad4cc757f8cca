"""The daemon's settings: one typed object, validated at start-up.

Sources, strongest first: `hotshot run` flags, environment variables
(`HOTSHOT_<NAME>`, lists as JSON), the TOML config file (default
`config/hotshot.toml`), the defaults below. Relative paths are taken from the
directory hotshot is started in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from daemon.errors import ConfigError
from daemon.notify import NotifySpec
from daemon.windows import RenderWindow, parse_windows
from engine.errors import validation_problems

DEFAULT_CONFIG = Path("config/hotshot.toml")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class DeferFullClips(BaseModel):
    """Send full-clip renders longer than `longer_than_frames` to `window` unless their request says `when`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: str
    longer_than_frames: int = Field(default=0, ge=0)


class NotifyRoute(NotifySpec):
    """Notifications for the jobs of one watch root (`root`), or of every root when `root` is left out."""

    root: Path | None = None


class PathMapping(BaseModel):
    """One shared-storage prefix as the daemon sees it (`from`) and as the render nodes mount it (`to`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from", min_length=1)
    target: str = Field(alias="to", min_length=1)

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path_map entries are absolute folders; {value!r} is not")
        return value.rstrip("/") or "/"


class Settings(BaseSettings):
    """Every setting of the daemon, with its default."""

    model_config = SettingsConfigDict(env_prefix="HOTSHOT_", extra="forbid", validate_default=True)

    roots: list[Path] = Field(default=[Path("hotfolders")], min_length=1, description="watch roots")
    state_dir: Path = Field(default=Path("var"), description="database, work files, built models")
    database: Path | None = Field(default=None, description="SQLite file; default <state_dir>/hotshot.db")
    models_dir: Path | None = Field(default=None, description="relative model paths; default <state_dir>/models")
    catalogs: list[Path] = Field(default=[Path("config/models.toml")], min_length=1,
                                 description="model catalog files; later entries replace earlier ones")
    presets_file: Path = Field(default=Path("config/presets.toml"), description="named quick-starts")
    default_model: str = "tiny-wan-vace"
    first_frame_number: int = Field(default=1001, ge=0, description="image sequence number of source frame 0")
    credits_per_gpu_second: float = Field(default=0.01, ge=0, description="cost estimate rate")
    observer: Literal["native", "polling"] = "native"
    poll_seconds: float = Field(default=1.0, gt=0)
    stable_seconds: float = Field(default=2.0, ge=0)
    # A safety net for lost events (each scan reads every folder of the roots: 100,000 files twice a minute
    # were most of an idle daemon's CPU); the watcher's events and the start-up scan find files at once.
    reconcile_seconds: float = Field(default=300.0, gt=0)
    source_wait_seconds: float = Field(default=600.0, ge=0)
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)
    allow_hard_links: bool = Field(default=False, description="read sources, stills and masks with several links")
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_seconds: float = Field(default=30.0, ge=0)
    devices: list[str] | Literal["auto"] = Field(
        default="auto", description='"auto" (one worker per CUDA device found) or one worker per listed device')
    model_cache_gb: float = Field(default=40.0, ge=0, description="models a worker keeps loaded; 0 = no limit")
    device_memory_gb: float | None = Field(default=None, gt=0, description="memory (GB) a job may use on its "
                                           "device, instead of the free memory detected (a shared GPU, tests)")
    executor: Literal["local", "ray"] = Field(
        default="local", description='"local": worker processes here; "ray": one Ray actor per slot of a cluster')
    ray_address: str | None = Field(
        default=None, description='"auto", "ray://host:port" or "host:port"; unset: start a Ray instance here')
    ray_slots: int | None = Field(default=None, ge=1,
                                  description="render slots (actors) on the cluster; default one per GPU, else one")
    ray_gpus_per_slot: float = Field(default=1.0, ge=0, description="GPUs each slot reserves; 0 = CPU slots")
    ray_cpus_per_slot: float = Field(default=1.0, gt=0, description="CPUs each slot reserves (and torch's threads)")
    ray_namespace: str = Field(default="hotshot", min_length=1, description="where the named actors live")
    path_map: list[PathMapping] = Field(default_factory=list,
                                        description="daemon path prefix -> render node path prefix")
    status_every_seconds: float = Field(default=2.0, gt=0)
    worker_stall_seconds: float = Field(default=1800.0, ge=0, description="kill a worker silent this long; 0 = never")
    ffprobe_timeout_seconds: float = Field(default=30.0, gt=0)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    windows: dict[str, dict[str, Any]] = Field(default_factory=dict, description="render windows, by name")
    defer_full_clips: DeferFullClips | None = None
    notify: list[NotifyRoute] = Field(default_factory=list, description="job-end notifications per watch root")
    keep_failed_checkpoints_hours: float = Field(default=72.0, ge=0)
    archive_after_days: float = Field(default=0.0, ge=0,
                                      description="finished jobs older than this move to the archive; 0 = never")
    render_overlap: bool = Field(default=True, description="decode and encode beside diffusion; false: one "
                                                          "stage at a time (same output; for debugging)")
    web_bind: str = Field(default="127.0.0.1:8765", description="HOST:PORT `hotshot web` listens on")
    web_token: str | None = Field(default=None, min_length=16,
                                  description="secret the web workspace asks for; required off loopback")
    web_allowed_hosts: list[str] = Field(default_factory=list,
                                         description="extra Host names the web workspace answers to")
    web_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0, description="largest image the page may upload")

    _render_windows: dict[str, RenderWindow] = PrivateAttr(default_factory=dict)

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list):
            if not value:
                raise ValueError('list at least one device, like ["cuda:0", "cuda:1"], or write "auto"')
            for device in value:
                if not DEVICE.fullmatch(device):
                    raise ValueError(f'unknown device {device!r}; use "auto", "cpu", "mps", "cuda" or "cuda:N"')
        return value

    @field_validator("windows")
    @classmethod
    def _valid_windows(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        parse_windows(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @model_validator(mode="after")
    def _absolute_and_apart(self) -> Settings:
        self.roots = [root.expanduser().resolve() for root in self.roots]
        self.state_dir = self.state_dir.expanduser().resolve()
        self.database = (self.database or self.state_dir / "hotshot.db").expanduser().resolve()
        self.models_dir = (self.models_dir or self.state_dir / "models").expanduser().resolve()
        self.catalogs = [catalog.expanduser().resolve() for catalog in self.catalogs]
        self.presets_file = self.presets_file.expanduser().resolve()
        for root in self.roots:
            for name, path in (("state_dir", self.state_dir), ("database", self.database)):
                if path == root or root in path.parents:
                    raise ValueError(f"{name} {path} lies inside the watch root {root}; keep it on local disk outside")
        self._render_windows = parse_windows(self.windows)
        if self.defer_full_clips and self.defer_full_clips.window not in self._render_windows:
            raise ValueError(f"defer_full_clips names the render window {self.defer_full_clips.window!r}, which is "
                             f"not configured; windows: {', '.join(self._render_windows) or 'none'}")
        routes = []
        for route in self.notify:
            if route.root is not None:
                root = route.root.expanduser().resolve()
                if root not in self.roots:
                    raise ValueError(f"notify root {root} is not a watch root; watch roots: "
                                     f"{', '.join(map(str, self.roots))}")
                route = route.model_copy(update={"root": root})
            routes.append(route)
        self.notify = routes
        return self

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"

    @property
    def render_windows(self) -> dict[str, RenderWindow]:
        return self._render_windows

    @property
    def device_kind(self) -> str:
        """"cuda" if the workers will (probably) render on CUDA, else "cpu"; used for cost estimates."""
        from daemon.gpus import device_kind

        return device_kind(self.devices if isinstance(self.devices, list) else [self.devices])  # no GPU count needed


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the config file (if any), the environment and `overrides`.

    An explicitly named config file must exist; the default one may be absent.
    """
    path = config_file or DEFAULT_CONFIG
    if config_file is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path if path.is_file() else None)

    try:
        return FromFile(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        problems = validation_problems(exc.errors(), "settings")
        raise ConfigError(f"invalid settings (from {path}, HOTSHOT_* variables or flags): {problems}") from exc
