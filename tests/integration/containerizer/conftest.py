"""Fixtures for containerizer tests on the host's real cgroups (root only)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, Containerizer
from corral.slave.containerizer.images import ImageStore
from corral.testing_images import build_busybox_image

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


@pytest.fixture
async def ctz(tmp_path: Path) -> AsyncIterator[Containerizer]:
    if os.geteuid() != 0:
        pytest.skip("needs root for cgroups")
    containerizer = Containerizer(tmp_path / "work", cgroup_prefix=f"corral-test-{uuid.uuid4()}")
    try:
        yield containerizer
    finally:
        await containerizer.close(grace_s=0.2)
        leftovers = [
            d / containerizer.cgroup_prefix
            for d in containerizer.cgroups.dirs("")
            if (d / containerizer.cgroup_prefix).exists()
        ]
        assert not leftovers, f"cgroups left behind: {leftovers}"


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., ContainerConfig]:
    def make(*argv: str, **overrides: object) -> ContainerConfig:
        container_id = str(overrides.pop("container_id", uuid.uuid4().hex[:12]))
        fields: dict[str, object] = {
            "container_id": container_id,
            "argv": argv,
            "env": ENV,
            "sandbox": tmp_path / "sandboxes" / container_id,
            "cpus_milli": 500,
            "mem_bytes": 128 << 20,
        }
        fields.update(overrides)
        return ContainerConfig(**fields)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="module")
def busybox_layers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """The layers of the busybox test image, imported into a store of their own."""
    if not Path("/bin/busybox").exists():
        pytest.skip("needs Debian's busybox-static (/bin/busybox)")
    root = tmp_path_factory.mktemp("images")
    store = ImageStore(root / "store")
    return store.layer_dirs(store.import_tarball(build_busybox_image(root / "busybox.tar")))


@pytest.fixture
def cgroup2_root() -> Path:
    """Where a cgroup2 hierarchy is mounted (proc(5) mountinfo); skips without one."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        if tail.split()[:1] == ["cgroup2"]:
            return Path(head.split()[4])
    pytest.skip("no cgroup2 hierarchy mounted")
