"""Containers on an image root and volumes, on this host's kernel (root).

The image is the busybox test image (corral.testing_images): layer 2 whites out
/etc/doomed and makes /opaque opaque, so neither /etc/doomed nor /opaque/old may
be visible in a container.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, ContainerError, Containerizer, kernel
from corral.slave.containerizer.images import Image, ImageStore
from corral.slave.containerizer.model import Isolation, Termination
from corral.slave.containerizer.overlay import Rootfs
from corral.slave.containerizer.volumes import Volume
from corral.slave.task_image import MAX_ID_FILE, image_user
from corral.testing_images import ESCAPE_TARGET, build_busybox_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mounts, namespaces and cgroups"),
]
Make = Callable[..., ContainerConfig]
BUSYBOX_ENV = {"PATH": "/bin"}
DEV_ENTRIES = {
    "fd",
    "mqueue",
    "full",
    "null",
    "ptmx",
    "pts",
    "random",
    "shm",
    "stderr",
    "stdin",
    "stdout",
    "tty",
    "urandom",
} | {"zero"}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, Image]:
    if not Path("/bin/busybox").exists():
        pytest.skip("needs Debian's busybox-static (/bin/busybox)")
    root = tmp_path_factory.mktemp("images")
    store = ImageStore(root / "store")
    return store, store.import_tarball(build_busybox_image(root / "busybox.tar"))


def _tree_digest(dirs: tuple[Path, ...]) -> str:
    """A digest of every path, mode and file content under ``dirs``."""
    h = hashlib.sha256()
    for top in dirs:
        for dirpath, dirnames, filenames in sorted(os.walk(top)):
            dirnames.sort()
            for name in sorted(filenames + dirnames):
                path = Path(dirpath) / name
                st = os.lstat(path)
                h.update(f"{path}:{st.st_mode}:{st.st_size}".encode())
                if path.is_file() and not path.is_symlink():
                    h.update(path.read_bytes())
    return h.hexdigest()


def _task_mounts() -> list[str]:
    """Host mounts a container could leak: overlays, and anything under /tmp."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype == "overlay" or fields[4].startswith("/tmp"):
            found.append(line)
    return found


@pytest.fixture(autouse=True)
def nothing_left(tmp_path: Path) -> Iterator[None]:
    before = _task_mounts()
    yield
    assert [m for m in _task_mounts() if m not in before] == [], "mounts left on the host"
    containers = tmp_path / "work" / "containers"
    assert not containers.exists() or os.listdir(containers) == [], "container directories left behind"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                root = os.readlink(entry / "root")
            except OSError:
                continue
            assert not root.startswith(str(tmp_path)), f"process {entry.name} still runs in {root}"


def on_image(make: Make, image: tuple[ImageStore, Image], *argv: str, **overrides: object) -> ContainerConfig:
    store, found = image
    read_only = bool(overrides.pop("read_only", False))
    overrides.setdefault("env", BUSYBOX_ENV)
    return make(*argv, rootfs=Rootfs(store.layer_dirs(found), read_only), **overrides)


async def run(ctz: Containerizer, config: ContainerConfig) -> tuple[Termination, str, str]:
    await ctz.launch(config)
    termination = await asyncio.wait_for(ctz.wait(config.container_id), 30)
    await ctz.destroy(config.container_id)
    return termination, (config.sandbox / "stdout").read_text(), (config.sandbox / "stderr").read_text()


async def test_the_task_runs_on_the_image_as_the_child_of_pid_1_with_its_hostname(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image]
) -> None:
    script = (
        "echo pid=$$; cat /proc/1/comm; hostname; cat /etc/layer2; "
        "ls /proc | grep -c '^[0-9]'; test -e /work && echo host-visible; pwd; ls /dev | tr '\\n' ' '"
    )
    config = on_image(make_config, image, "/bin/sh", "-c", script, container_id="img-pid")
    termination, out, err = await run(ctz, config)
    assert termination.exit_code == 0, err
    lines = out.splitlines()
    assert lines[:4] == ["pid=2", "corral-init", "img-pid", "layer 2 was here"]
    assert int(lines[4]) <= 4  # init, sh, and the ls/grep of the pipeline
    assert "host-visible" not in out
    assert lines[5] == "/mnt/sandbox"
    assert set(lines[6].split()) == DEV_ENTRIES


def _host_file(path: str) -> str:
    return Path(path).read_text()


def _escaped() -> bool:
    """Whether anything wrote where the test image's /etc/hosts symlink points (and clears it)."""
    escape = Path(ESCAPE_TARGET)
    found = escape.exists()
    escape.unlink(missing_ok=True)
    return found


@pytest.mark.parametrize("network", ["host", "none"])
async def test_the_container_gets_its_own_hostname_hosts_and_resolv_conf(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image], network: str
) -> None:
    _escaped()
    script = (
        "cat /etc/hostname; echo ---; cat /etc/hosts; echo ---; "
        "cat /etc/resolv.conf 2>/dev/null || echo no-resolv; test -L /etc/hosts && echo a-symlink; "
        "ping -c1 -W1 img-etc >/dev/null 2>&1 && echo resolves"
    )
    isolation = Isolation(network=network)
    config = on_image(
        make_config, image, "/bin/sh", "-c", script, container_id="img-etc", isolation=isolation
    )
    termination, out, err = await run(ctz, config)
    assert termination.exit_code == 0, err
    hostname, hosts, rest = out.split("---\n")
    assert hostname == "img-etc\n"
    assert hosts.endswith("127.0.1.1\timg-etc\n")
    if network == "host":
        assert hosts.startswith(_host_file("/etc/hosts"))  # the host's services resolve
        assert rest.startswith(_host_file("/etc/resolv.conf"))
    else:
        assert hosts.startswith("127.0.0.1\tlocalhost\n")
        assert rest.startswith("no-resolv")
    assert "a-symlink" not in rest  # the image's symlink was replaced, not followed
    assert "resolves" in rest  # its own name resolves through /etc/hosts
    assert not _escaped()


async def test_whiteouts_hide_what_upper_layers_deleted(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image]
) -> None:
    script = "test -e /etc/doomed && echo doomed-visible; ls /opaque; cat /opaque/new"
    termination, out, err = await run(ctz, on_image(make_config, image, "/bin/sh", "-c", script))
    assert termination.exit_code == 0, err
    assert out.splitlines() == ["new", "from layer 2"]


async def test_writes_never_reach_the_image_layers_and_the_upper_dir_is_removed(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image], tmp_path: Path
) -> None:
    store, found = image
    before = _tree_digest(store.layer_dirs(found))
    script = "echo changed > /etc/layer2 && rm /etc/passwd && mkdir /newdir && echo x > /bin/new && echo ok"
    config = on_image(make_config, image, "/bin/sh", "-c", script, container_id="img-write")
    await ctz.launch(config)
    termination = await asyncio.wait_for(ctz.wait(config.container_id), 30)
    upper = tmp_path / "work" / "containers" / "img-write" / "overlay" / "upper"
    assert (upper / "etc" / "layer2").read_text() == "changed\n"
    await ctz.destroy(config.container_id)
    assert termination.exit_code == 0, (config.sandbox / "stderr").read_text()
    assert _tree_digest(store.layer_dirs(found)) == before
    assert not upper.exists()
    # A second container sees the image as it was.
    termination, out, _ = await run(ctz, on_image(make_config, image, "/bin/cat", "/etc/layer2"))
    assert out == "layer 2 was here\n"


async def test_a_read_only_root_refuses_writes_but_tmp_and_the_sandbox_take_them(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image]
) -> None:
    script = "touch /root/x 2>&1; echo t > /tmp/t && echo s > /mnt/sandbox/s && echo done"
    config = on_image(make_config, image, "/bin/sh", "-c", script, read_only=True)
    termination, out, _ = await run(ctz, config)
    assert termination.exit_code == 0
    assert "Read-only file system" in out
    assert out.endswith("done\n")
    assert (config.sandbox / "s").read_text() == "s\n"


async def test_bind_volumes_read_only_and_read_write_and_a_sized_tmpfs(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image], tmp_path: Path
) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "data").write_text("from the host\n")
    volumes = (
        Volume("/data/ro", str(ro), read_only=True),
        Volume("/data/rw", str(rw)),
        Volume("scratch", tmpfs_size_bytes=8 << 20),
    )
    script = (
        "cat /data/ro/data; echo no > /data/ro/x 2>/dev/null || echo ro-refused; "
        "echo yes > /data/rw/x; grep ' /mnt/sandbox/scratch ' /proc/mounts"
    )
    config = on_image(make_config, image, "/bin/sh", "-c", script, volumes=volumes)
    termination, out, err = await run(ctz, config)
    assert termination.exit_code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["from the host", "ro-refused"]
    assert "tmpfs" in lines[2]
    assert "size=8192k" in lines[2]
    assert (rw / "x").read_text() == "yes\n"
    assert not (ro / "x").exists()


async def test_a_read_only_volume_is_read_only_all_the_way_down(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image], tmp_path: Path
) -> None:
    """A mount below the volume's source (here a tmpfs) is read-only in the container too."""
    source = tmp_path / "ro-tree"
    (source / "sub").mkdir(parents=True)
    kernel.mount(b"tmpfs", bytes(source / "sub"), b"tmpfs", 0, b"size=1m")
    try:
        script = "echo x > /data/sub/x 2>/dev/null && echo writable || echo ro-refused"
        config = on_image(
            make_config, image, "/bin/sh", "-c", script, volumes=(Volume("/data", str(source), True),)
        )
        termination, out, err = await run(ctz, config)
    finally:
        kernel.umount2(bytes(source / "sub"))
    assert termination.exit_code == 0, err
    assert out == "ro-refused\n"


async def test_volumes_without_an_image_are_mounted_on_the_host_tree_in_private(
    ctz: Containerizer, make_config: Make, tmp_path: Path
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "data").write_text("host data\n")
    config = make_config(
        "/bin/sh",
        "-c",
        "cat in/data; echo x > in/y 2>/dev/null || echo ro-refused",
        volumes=(Volume("in", str(ro), read_only=True),),
    )
    termination, out, err = await run(ctz, config)
    assert termination.exit_code == 0, err
    assert out.splitlines() == ["host data", "ro-refused"]


async def test_the_working_directory_is_created_in_the_image(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image]
) -> None:
    _termination, out, _ = await run(ctz, on_image(make_config, image, "/bin/pwd", workdir="/srv/app"))
    assert out == "/srv/app\n"


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        (
            Volume("/data", "/no/such/host/path"),
            r"volumes\[0\]\.host_path: /no/such/host/path cannot be used",
        ),
        (Volume("/proc/x", "/tmp"), r"volumes\[0\]\.container_path: /proc/x is managed by the containerizer"),
        (Volume("../up", "/tmp"), r"volumes\[0\]\.container_path: must not contain '\.\.'"),
        (Volume("/x", "relative"), r"volumes\[0\]\.host_path: must be an absolute path"),
    ],
)
async def test_bad_volumes_fail_the_launch_with_the_field_named(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image], volume: Volume, message: str
) -> None:
    with pytest.raises(ContainerError, match=message):
        await ctz.launch(on_image(make_config, image, "/bin/true", volumes=(volume,)))
    assert ctz.containers() == []
    # The containerizer keeps serving.
    _termination, out, _ = await run(ctz, on_image(make_config, image, "/bin/echo", "still fine"))
    assert out == "still fine\n"


async def test_a_layer_missing_from_the_store_fails_the_launch(
    ctz: Containerizer, make_config: Make, tmp_path: Path
) -> None:
    config = make_config("/bin/true", env=BUSYBOX_ENV, rootfs=Rootfs((tmp_path / "gone",)))
    with pytest.raises(ContainerError, match=r"rootfs\.layers\[0\]: .*/gone is missing"):
        await ctz.launch(config)


async def test_a_command_missing_from_the_image_exits_127(
    ctz: Containerizer, make_config: Make, image: tuple[ImageStore, Image]
) -> None:
    # python3 is on the host but not in the image.
    termination, _, err = await run(ctz, on_image(make_config, image, "python3", "-c", "1"))
    assert termination.exit_code == 127
    assert "python3" in err


def test_the_image_user_is_looked_up_in_the_image(image: tuple[ImageStore, Image], tmp_path: Path) -> None:
    store, found = image
    layers = store.layer_dirs(found)
    assert image_user("nobody", layers) == (65534, 65534, ())
    assert image_user("nobody:root", layers) == (65534, 0, ())
    assert image_user("65534", layers) == (65534, 65534, ())  # a listed uid: its primary gid
    assert image_user("1000", layers) == (1000, 0, ())  # an unlisted uid: gid 0, as runc
    assert image_user("1000:50", layers) == (1000, 50, ())
    with pytest.raises(ContainerError, match="no user 'daemon' in its /etc/passwd"):
        image_user("daemon", layers)
    with pytest.raises(ContainerError, match="no group 'wheel' in its /etc/group"):
        image_user("nobody:wheel", layers)
    # Supplementary groups from /etc/group, as runc: only without an explicit group.
    users = tmp_path / "users"
    (users / "etc").mkdir(parents=True)
    (users / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (users / "etc" / "group").write_text("app:x:1000:\nstaff:x:50:root,app\ndocker:x:999:app\nx:x:7:other\n")
    assert image_user("app", (*layers, users)) == (1000, 1000, (50, 999))
    assert image_user("1000", (*layers, users)) == (1000, 1000, (50, 999))
    assert image_user("app:staff", (*layers, users)) == (1000, 50, ())
    assert image_user("2000", (*layers, users)) == (2000, 0, ())
    # Only the first MiB of the files is read.
    padding = "#" * 100 + "\n"
    (users / "etc" / "passwd").write_text(
        padding * (MAX_ID_FILE // len(padding) + 1) + "late:x:5:5::/:/bin/sh\n"
    )
    with pytest.raises(ContainerError, match="no user 'late'"):
        image_user("late", (*layers, users))
    # A layer on top that deletes /etc/passwd (a whiteout) leaves no users.
    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    os.mknod(top / "etc" / "passwd", stat.S_IFCHR, os.makedev(0, 0))
    with pytest.raises(ContainerError, match="no user 'nobody'"):
        image_user("nobody", (*layers, top))
