"""The agent's configuration (the ``corral agent`` flags) and its one fatal error."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.resources import Resources
from corral.slave import gc as sandbox_gc
from corral.slave.containerizer.images.registry_config import RegistryConfig
from corral.transport import Credentials


class AgentRejected(Exception):
    """The master refused this agent's registration (bad resources or attributes)."""


@dataclass
class AgentConfig:
    master: str
    work_dir: Path
    resources: Resources | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    hostname: str = field(default_factory=socket.gethostname)
    cgroup_prefix: str = "corral"
    default_kill_grace_s: float = 3.0
    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 5.0
    credentials: Credentials | None = None
    #: i-th of n slices of this host, when several agents share it
    share: tuple[int, int] = (0, 1)
    #: how often a task's sandbox is measured against its ``disk`` resource
    disk_watch_interval_s: float = 15.0
    #: processes (and threads) one task may have at once, so a fork bomb
    #: cannot take the node down; None means unlimited
    task_pids_max: int | None = 4096
    #: at start: "reconnect" re-attaches to the tasks an earlier run left,
    #: "cleanup" kills them and forgets them (see slave/recovery.py)
    recover: str = "reconnect"
    #: finished sandboxes are removed this long after their task ended, sooner
    #: as the work disk fills (see slave/gc.py)
    gc_delay_s: float = 7 * 86400.0
    gc_disk_headroom: float = 0.1
    gc_interval_s: float = sandbox_gc.GC_INTERVAL_S
    #: where task images are kept (shared with `corral image`); None: <work_dir>/images
    image_store: Path | None = None
    #: remove unused pulled images, least recently used first, once the store
    #: passes ``image_gc_budget`` bytes (None: 85% of its disk), see images/gc.py
    image_gc: bool = True
    image_gc_budget: int | None = None
    #: credentials and plain-HTTP hosts of image registries (``--registry-config``)
    registries: RegistryConfig = field(default_factory=RegistryConfig)
    #: directories under which a task may name an image tarball by path
    #: (``--image-import-dir``); none: tasks name images in the store only
    image_import_dirs: tuple[Path, ...] = ()
    #: host paths (and what is below them) tasks may bind-mount as volumes
    #: (``--allowed-host-paths``); none: tmpfs and sandbox volumes only
    allowed_host_paths: tuple[Path, ...] = ()
    #: serve Prometheus metrics on this HOST:PORT (``--metrics-listen``)
    metrics_listen: str | None = None
    #: seccomp profiles tasks may name besides the default (``--seccomp-profile NAME=PATH``)
    seccomp_profiles: Mapping[str, Path] = field(default_factory=dict)
    #: whether a task may ask for no seccomp filter (``--allow-unconfined-seccomp``)
    allow_unconfined_seccomp: bool = False
    #: host device nodes tasks may ask for (``--allowed-devices``); none by default
    allowed_devices: tuple[str, ...] = ()
    #: run tasks that do not say otherwise in a user namespace (``--user-namespaces``)
    user_namespaces: bool = False
