"""The image store on a real filesystem: formats, digests, whiteouts, safe extraction (root)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from corral.cli.main import cli
from corral.slave.containerizer.images import ImageError, ImageStore
from corral.slave.containerizer.images.store import layers_in_mountinfo
from corral.slave.containerizer.images.unpack import unpack_layer
from corral.testing_images import busybox_layers, layer_tar, write_docker, write_oci

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for whiteout device nodes and trusted xattrs"),
]


@pytest.fixture(scope="module")
def layers() -> list[bytes]:
    if not Path("/bin/busybox").exists():
        pytest.skip("needs Debian's busybox-static (/bin/busybox)")
    return busybox_layers()


def _left_behind(store: ImageStore) -> list[str]:
    tmp = store.root / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


def test_oci_and_docker_save_import_to_the_same_image_and_share_layers(
    tmp_path: Path, layers: list[bytes]
) -> None:
    store = ImageStore(tmp_path / "store")
    oci = store.import_tarball(write_oci(tmp_path / "oci.tar", layers, "busybox:oci"))
    docker = store.import_tarball(write_docker(tmp_path / "docker.tar", layers, "busybox:docker"))
    assert oci.id == docker.id
    assert len(oci.layers) == 2
    assert sorted(os.listdir(tmp_path / "store" / "layers" / "sha256")) == sorted(
        d.removeprefix("sha256:") for d in oci.layers
    )
    found = store.resolve("busybox:oci")
    assert found.names == ("busybox:docker", "busybox:oci")
    assert found.config.cmd == ("/bin/sh", "-c", "echo hello from the image")
    assert "IMAGE_VAR=from-image" in found.config.env
    assert store.resolve(oci.id[:19]).id == oci.id
    assert _left_behind(store) == []


def test_whiteouts_become_overlayfs_whiteouts(tmp_path: Path, layers: list[bytes]) -> None:
    store = ImageStore(tmp_path / "store")
    image = store.import_tarball(write_oci(tmp_path / "oci.tar", layers))
    bottom, top = store.layer_dirs(image)
    assert (bottom / "etc" / "doomed").is_file()
    doomed = os.lstat(top / "etc" / "doomed")
    assert stat.S_ISCHR(doomed.st_mode)
    assert doomed.st_rdev == os.makedev(0, 0)
    assert not (top / "etc" / ".wh.doomed").exists()
    assert os.getxattr(top / "opaque", "trusted.overlay.opaque") == b"y"
    assert os.listdir(top / "opaque") == ["new"]
    assert os.readlink(bottom / "bin" / "sh") == "busybox"
    assert os.stat(bottom / "bin" / "busybox").st_mode & 0o777 == 0o755


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_a_layer_whose_digest_does_not_match_is_refused_and_not_stored(
    tmp_path: Path, layers: list[bytes], fmt: str
) -> None:
    write = write_oci if fmt == "oci" else write_docker
    path = write(tmp_path / "bad.tar", layers, "bad:1", corrupt_layer=0)
    store = ImageStore(tmp_path / "store")
    with pytest.raises(
        ImageError, match=r"layer 0 \(.*\) digest mismatch: expected sha256:[0-9a-f]{64}, got"
    ):
        store.import_tarball(path)
    assert os.listdir(tmp_path / "store" / "layers" / "sha256") == []
    assert _left_behind(store) == []
    with pytest.raises(ImageError, match="not in the image store"):
        store.resolve("bad:1")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable tarball|not an image tarball"),
        (b"this is not a tar file at all" * 40, "not a readable tarball|not an image tarball"),
    ],
)
def test_garbage_is_refused_with_a_sentence(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "junk.tar"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        ImageStore(tmp_path / "store").import_tarball(path)


def test_a_missing_file_and_a_truncated_tarball(tmp_path: Path, layers: list[bytes]) -> None:
    store = ImageStore(tmp_path / "store")
    with pytest.raises(ImageError, match="no such image file"):
        store.import_tarball(tmp_path / "nope.tar")
    good = write_docker(tmp_path / "good.tar", layers).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError):
        store.import_tarball(cut)
    assert _left_behind(store) == []


def _hostile(tmp_path: Path, members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            if isinstance(m, tuple):
                tar.addfile(m[0], io.BytesIO(m[1]))
            else:
                tar.addfile(m)
    return write_docker(tmp_path / "hostile.tar", [buf.getvalue()], "hostile:1")


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = size
    info.mode = 0o644
    return info


def test_unsafe_members_are_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    cases = [
        ([(_member("../escape", size=1), b"x")], "escapes the layer"),
        ([_member("etc", tarfile.SYMTYPE, "/etc"), (_member("etc/passwd", size=1), b"x")], "not a directory"),
        ([_member("hard", tarfile.LNKTYPE, "../../etc/shadow")], "escapes the layer"),
        ([_member("hard", tarfile.LNKTYPE, "not/there")], "not earlier in the layer"),
    ]
    for members, message in cases:
        with pytest.raises(ImageError, match=message):
            store.import_tarball(_hostile(tmp_path, members))  # type: ignore[arg-type]
        assert _left_behind(store) == []
    assert not (tmp_path / "escape").exists()


def test_devices_are_skipped_and_absolute_names_stay_inside(tmp_path: Path) -> None:
    dev = _member("dev/sda", tarfile.BLKTYPE)
    dev.devmajor, dev.devminor = 8, 0
    mem = _member("dev/mem", tarfile.CHRTYPE)
    mem.devmajor, mem.devminor = 1, 1
    store = ImageStore(tmp_path / "store")
    image = store.import_tarball(
        _hostile(
            tmp_path,
            [dev, mem, (_member("/abs/file", size=2), b"ok"), _member("abs/link", tarfile.SYMTYPE, "/")],
        )
    )
    (layer,) = store.layer_dirs(image)
    assert sorted(os.listdir(layer)) == ["abs", "dev"]
    assert os.listdir(layer / "dev") == []
    assert (layer / "abs" / "file").read_bytes() == b"ok"
    assert os.readlink(layer / "abs" / "link") == "/"


def test_concurrent_imports_of_one_image_are_safe(tmp_path: Path, layers: list[bytes]) -> None:
    path = write_oci(tmp_path / "oci.tar", layers)
    store_dir = tmp_path / "store"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ImageStore(store_dir).import_tarball(path)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    store = ImageStore(store_dir)
    (image,) = store.images()
    assert len(os.listdir(store_dir / "layers" / "sha256")) == 2
    assert all(
        (d / "bin" / "busybox").exists() or (d / "etc" / "layer2").exists() for d in store.layer_dirs(image)
    )
    assert _left_behind(store) == []


def test_rm_untags_then_removes_the_image_and_its_unshared_layers(
    tmp_path: Path, layers: list[bytes]
) -> None:
    store = ImageStore(tmp_path / "store")
    path = write_oci(tmp_path / "oci.tar", layers, "a:1")
    store.import_tarball(path)
    store.import_tarball(path, "b:2")
    first = store.remove("a:1")
    assert first.refs == ("a:1",)
    assert first.image is None
    assert len(os.listdir(tmp_path / "store" / "layers" / "sha256")) == 2
    second = store.remove("b:2")
    assert second.image is not None
    assert len(second.layers) == 2
    assert os.listdir(tmp_path / "store" / "layers" / "sha256") == []
    assert store.images() == []
    with pytest.raises(ImageError, match="not in the image store"):
        store.remove("b:2")


def test_cli_import_list_rm(tmp_path: Path, layers: list[bytes]) -> None:
    path = write_docker(tmp_path / "d.tar", layers, None)
    store = str(tmp_path / "store")
    runner = CliRunner()
    result = runner.invoke(cli, ["image", "import", str(path), "--name", "tiny", "--store", store], obj={})
    assert result.exit_code == 0, result.output
    assert "as tiny:latest: 2 layer(s)" in result.output
    result = runner.invoke(cli, ["image", "list", "--store", store], obj={})
    assert result.exit_code == 0
    assert "tiny:latest" in result.output
    result = runner.invoke(cli, ["image", "import", str(tmp_path / "none.tar"), "--store", store], obj={})
    assert result.exit_code == 4  # not found (corral/cli/exit.py)
    assert "no such image file" in result.output
    result = runner.invoke(cli, ["image", "rm", "tiny", "--store", store], obj={})
    assert result.exit_code == 0
    assert "removed sha256:" in result.output
    result = runner.invoke(cli, ["image", "list", "--store", store], obj={})
    assert "tiny" not in result.output


def test_layer_tar_helper_round_trips(tmp_path: Path) -> None:
    data = layer_tar([("d/", None), ("d/f", b"x"), ("d/l", "->f")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["d", "d/f", "d/l"]


_NAMES = st.lists(
    st.sampled_from(["a", "b", "..", ".", "", "c.wh.", ".wh.a", ".wh..wh..opq"]), min_size=1, max_size=4
)
_MEMBER = st.tuples(
    _NAMES.map("/".join),
    st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
    # Link targets stay inside the test's own directory even if followed (the
    # canary, or it by an absolute path): a regression must not touch the host.
    st.sampled_from(["a", "b/a", "canary", "..", "../canary", "../../canary", "CANARY"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.lists(_MEMBER, min_size=1, max_size=8))
# A directory, then a symlink in its place: its mode must not land on the target.
@example(members=[("b", tarfile.DIRTYPE, "a"), ("b", tarfile.SYMTYPE, "CANARY")])
@example(members=[("b/a", tarfile.DIRTYPE, "a"), ("b", tarfile.SYMTYPE, "../canary")])
def test_no_layer_writes_outside_itself(tmp_path: Path, members: list[tuple[str, bytes, str]]) -> None:
    """Whatever the member names, link targets and order: nothing outside the layer changes."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    canary = work / "canary"
    canary.mkdir(mode=0o700)
    os.chmod(canary, 0o700)
    before = os.stat(canary)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, link in members:
            if not name.strip("/."):
                continue
            target = str(canary) if link == "CANARY" else link
            info = _member(name, kind, target, size=1 if kind == tarfile.REGTYPE else 0)
            tar.addfile(info, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    dest = work / "layer"
    dest.mkdir()
    buf.seek(0)
    with contextlib.suppress(ImageError):
        unpack_layer(buf, dest, "fuzz")
    assert os.listdir(canary) == []
    assert sorted(os.listdir(work)) == ["canary", "layer"]
    after = os.stat(canary)
    assert (after.st_mode, after.st_uid, after.st_mtime_ns) == (
        before.st_mode,
        before.st_uid,
        before.st_mtime_ns,
    )


def test_a_tarball_named_by_a_task_is_imported_without_moving_tags(
    tmp_path: Path, layers: list[bytes]
) -> None:
    store = ImageStore(tmp_path / "store")
    mine = store.import_tarball(write_docker(tmp_path / "mine.tar", layers, "busybox:test"))
    other = write_oci(tmp_path / "other.tar", layers, "busybox:test", config={"Cmd": ["/bin/true"]})
    found = store.obtain(str(other), (tmp_path,))
    assert found.id != mine.id
    assert found.names == ()
    assert store.resolve("busybox:test").id == mine.id
    assert store.obtain(str(other), (tmp_path,)).id == found.id  # again: the layers are not read twice


def test_a_task_names_tarballs_only_under_import_dirs_and_only_regular_files(
    tmp_path: Path, layers: list[bytes]
) -> None:
    store = ImageStore(tmp_path / "store")
    top = tmp_path / "in"
    (top / "sub").mkdir(parents=True)
    good = write_docker(top / "sub" / "good.tar", layers, None)
    outside = write_docker(tmp_path / "outside.tar", layers, None)
    (top / "link.tar").symlink_to(outside)
    (top / "linkdir").symlink_to(tmp_path)
    os.mkfifo(top / "fifo.tar")
    refused = {
        str(good): ("no --image-import-dir", ()),
        str(outside): ("accepted only under this agent's --image-import-dir", (top,)),
        str(top / "sub" / ".." / ".." / "outside.tar"): ("must not contain '..'", (top,)),
        str(top / "link.tar"): ("through a symlink", (top,)),
        str(top / "linkdir" / "outside.tar"): ("through a symlink", (top,)),
        str(top / "fifo.tar"): ("not a regular file", (top,)),  # and does not block on the FIFO
        str(top / "sub"): ("not a regular file", (top,)),
        str(top / "none.tar"): ("no such image file", (top,)),
    }
    for image, (message, dirs) in refused.items():
        with pytest.raises(ImageError, match=re.escape(message)):
            store.obtain(image, dirs)
    assert store.images() == []
    assert store.obtain(str(good), (top,)).layers


def test_rm_keeps_layers_a_container_leases_until_the_lease_ends(tmp_path: Path, layers: list[bytes]) -> None:
    store = ImageStore(tmp_path / "store")
    image = store.import_tarball(write_oci(tmp_path / "oci.tar", layers, "a:1"))
    holder = tmp_path / "work" / "containers" / "c1" / "layers"
    dirs = store.lease(image, holder)
    assert dirs == store.layer_dirs(image)
    removed = store.remove("a:1")
    assert removed.layers == ()
    assert set(removed.layers_in_use) == set(image.layers)
    assert all(d.is_dir() for d in dirs)
    # A lease whose holder is gone (the container destroyed) no longer holds anything.
    store.import_tarball(write_oci(tmp_path / "oci.tar", layers, "a:1"))
    holder.unlink()
    assert set(store.remove("a:1").layers) == set(image.layers)
    assert os.listdir(tmp_path / "store" / "leases") == []
    # Leasing an image whose layers went fails clearly instead of mounting nothing.
    with pytest.raises(ImageError, match="is missing from the store"):
        store.lease(image, holder)
    store.release(holder)
    assert not holder.parent.exists()


def test_an_import_does_not_record_a_layer_rm_removed_meanwhile(
    tmp_path: Path, layers: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImageStore(tmp_path / "store")
    path = write_oci(tmp_path / "oci.tar", layers, "a:1")
    ensure = ImageStore._ensure_layer

    def ensure_then_lose(self: ImageStore, *args: object) -> None:
        ensure(self, *args)  # type: ignore[arg-type]
        shutil.rmtree(self.layer_dir(args[2].diff_id))  # type: ignore[attr-defined]  # as a racing rm would

    monkeypatch.setattr(ImageStore, "_ensure_layer", ensure_then_lose)
    with pytest.raises(ImageError, match="was removed while importing"):
        store.import_tarball(path)
    assert store.images() == []


def test_layers_in_use_decodes_mountinfo_escapes(tmp_path: Path) -> None:
    root = tmp_path / "my store" / "layers" / "sha256"
    hexd = "ab" * 32
    escaped = str(root).replace(" ", "\\040")
    line = (
        f"1234 1 0:99 / /x rw,relatime shared:1 - overlay overlay "
        f"rw,lowerdir={escaped}/{hexd}:{escaped}/{'cd' * 32},upperdir=/u,workdir=/w\n"
    )
    assert layers_in_mountinfo(line, root) == {hexd, "cd" * 32}
    assert layers_in_mountinfo(line.replace("\\040", " "), root / "other") == set()
