"""Tasks on the busybox test image through a real cluster: master, agent, framework over gRPC."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks import Task, TaskState, Volume
from corral.resources import Resources
from corral.slave.containerizer.images import ImageStore
from corral.testing import framework, local_cluster
from corral.testing_images import busybox_layers, layer_tar, write_docker, write_oci

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs Debian's busybox-static"),
]
SMALL = Resources.of(cpus=0.1, mem=32)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(
        tmp_path / "cluster",
        agents=1,
        image_import_dirs=(tmp_path / "in",),
        allowed_host_paths=(tmp_path / "data",),
    ) as c:
        yield c
    # After the agent's shutdown: no overlay, no container directory, no half-imported layer.
    mounts = Path("/proc/self/mountinfo").read_text()  # noqa: ASYNC240 (a small proc file)
    assert str(tmp_path) not in mounts
    assert os.listdir(tmp_path / "cluster" / "agent-0" / "containers") == []
    assert os.listdir(tmp_path / "cluster" / "images" / "tmp") == []
    # Every launch leased its layers, and every lease ended with its container.
    assert os.listdir(tmp_path / "cluster" / "images" / "leases") == []


def _stdout(cluster: LocalCluster, task_id: str) -> str:
    (path,) = (cluster.work_dir / "agent-0" / "sandboxes").glob(f"*/{task_id}-*/stdout")
    return path.read_text()


async def test_tasks_run_on_an_image_by_name_and_by_tarball_path(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    layers = busybox_layers()
    ImageStore(cluster.work_dir / "images").import_tarball(
        write_oci(tmp_path / "bb.tar", layers, "busybox:test")
    )
    (tmp_path / "in").mkdir()
    tarball = write_docker(tmp_path / "in" / "bb-docker.tar", layers, None)
    config = {"User": "nobody", "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["id -u; pwd"], "WorkingDir": "/srv"}
    as_nobody = write_oci(tmp_path / "in" / "nobody.tar", layers, None, config=config)
    data = tmp_path / "data"
    data.mkdir()
    (data / "in").write_text("from the host\n")
    script = (
        "echo $$ $(hostname) $CORRAL_SANDBOX $MESOS_SANDBOX $IMAGE_VAR $(pwd); cat /etc/layer2; "
        "cat /data/in; echo x > /data/x 2>/dev/null || echo ro; test -e /etc/doomed || echo whited-out"
    )
    tasks = [
        Task(
            "by-name",
            script,
            SMALL,
            image="busybox:test",
            hostname="boxed",
            volumes=(Volume("/data", str(data), read_only=True),),
        ),
        Task("by-path", "", SMALL, image=str(tarball)),  # no command: the image's Cmd
        Task(
            "ro-root",
            "touch /x 2>/dev/null || echo refused",
            SMALL,
            image="busybox:test",
            read_only_root=True,
        ),
        Task("as-user", "", SMALL, image=str(as_nobody)),  # the image's User, Entrypoint, WorkingDir
    ]
    async with framework(cluster.master_address) as (driver, rec):
        driver.launch(await rec.next_offer(), tasks)
        for t in tasks:
            status = await rec.wait_terminal(t.task_id, timeout=60)
            assert status.state is TaskState.FINISHED, status
    assert _stdout(cluster, "by-name").splitlines() == [
        "2 boxed /mnt/sandbox /mnt/sandbox from-image /mnt/sandbox",
        "layer 2 was here",
        "from the host",
        "ro",
        "whited-out",
    ]
    assert _stdout(cluster, "by-path") == "hello from the image\n"
    assert _stdout(cluster, "ro-root") == "refused\n"
    assert _stdout(cluster, "as-user") == "65534\n/srv\n"


async def test_bad_images_and_volumes_fail_their_task_and_the_agent_keeps_serving(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    layers = busybox_layers()
    top = tmp_path / "in"
    top.mkdir()
    # A layer of its own: a layer already in the store (from good.tar) is not read again.
    extra = layer_tar([("etc/", None), ("etc/extra", b"only in the corrupt image\n")])
    corrupt = write_oci(top / "corrupt.tar", [*layers, extra], "bad:1", corrupt_layer=2)
    garbage = top / "garbage.tar"
    garbage.write_bytes(b"no image here" * 100)
    good = write_oci(top / "good.tar", layers, "busybox:test")
    outside = write_oci(tmp_path / "outside.tar", layers, "busybox:test")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "escape").symlink_to(tmp_path / "in")
    (top / "link.tar").symlink_to(outside)
    os.mkfifo(top / "fifo.tar")
    bad = {
        "unknown-name": (
            Task("unknown-name", "true", SMALL, image="nope:1"),
            "image 'nope:1' is not in the image",
        ),
        "missing-file": (
            Task("missing-file", "true", SMALL, image=str(top / "none.tar")),
            "no such image file",
        ),
        "digest": (Task("digest", "true", SMALL, image=str(corrupt)), "layer 2 (blobs/sha256/"),
        "garbage": (
            Task("garbage", "true", SMALL, image=str(garbage)),
            "not a readable tarball (plain, gzip",
        ),
        "outside": (
            Task("outside", "true", SMALL, image=str(outside)),
            "accepted only under this agent's --image-import-dir",
        ),
        "symlink": (Task("symlink", "true", SMALL, image=str(top / "link.tar")), "through a symlink"),
        "fifo": (Task("fifo", "true", SMALL, image=str(top / "fifo.tar")), "not a regular file"),
        "volume": (
            Task("volume", "true", SMALL, image=str(good), volumes=(Volume("/d", str(tmp_path / "absent")),)),
            "volumes[0].host_path",
        ),
        "host-root": (
            Task("host-root", "true", SMALL, volumes=(Volume("t", ""), Volume("/h", "/"))),
            "volumes[1].host_path: / (really /) is not under this agent's --allowed-host-paths",
        ),
        "escape": (
            Task(
                "escape",
                "true",
                SMALL,
                image=str(good),
                volumes=(Volume("/e", str(tmp_path / "data/escape")),),
            ),
            f"(really {top}) is not under",
        ),
    }
    async with framework(cluster.master_address) as (driver, rec):
        driver.launch(await rec.next_offer(), [t for t, _ in bad.values()])
        for task_id, (_, message) in bad.items():
            status = await rec.wait_terminal(task_id, timeout=60)
            assert status.state is TaskState.FAILED, status
            assert status.reason == "CONTAINER_LAUNCH_FAILED", status
            assert message in status.message, status.message
        assert "digest mismatch" in rec.latest("digest").message  # type: ignore[union-attr]
        # The agent still runs tasks, on the image too.
        driver.launch(await rec.next_offer(), [Task("after", "cat /etc/layer2", SMALL, image=str(good))])
        status = await rec.wait_terminal("after", timeout=60)
        assert status.state is TaskState.FINISHED, status
    assert _stdout(cluster, "after") == "layer 2 was here\n"
