"""Pulling images from a real registry (Debian's docker-registry, images
pushed with skopeo) into the agent's store: tags, digests, a multi-platform
index, shared layers fetched once, corruption, authentication, a transfer
cut short and a registry that is gone."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from corral import testing_registry
from corral.slave.containerizer.images import ImageError, ImageStore
from corral.slave.containerizer.images.pull import Puller
from corral.slave.containerizer.images.registry import RegistryClient
from corral.slave.containerizer.images.registry_config import RegistryAuth, RegistryConfig
from corral.testing import corral_command
from corral.testing_images import busybox_layers, layer_tar, write_oci
from corral.testing_registry import RegistryServer, write_oci_dir

pytestmark = pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs Debian's busybox-static")
FAST = RegistryConfig(retries=2, backoff_s=0.05, timeout_s=10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    reason = testing_registry.available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide a registry: {reason}")
        pytest.skip(reason)
    server = RegistryServer(tmp_path / "registry")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def layers() -> list[bytes]:
    return busybox_layers()


def _push_busybox(
    registry: RegistryServer, tmp_path: Path, layers: list[bytes], ref: str, **config: object
) -> None:
    cfg = {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], **config} if config else None
    tar = write_oci(tmp_path / f"{abs(hash(ref))}.tar", layers, None, config=cfg)
    registry.push(f"oci-archive:{tar}", ref)


def _store_leftovers(store: ImageStore) -> list[str]:
    tmp = store.root / "tmp"
    return os.listdir(tmp) if tmp.is_dir() else []


def test_pull_by_tag_then_by_digest_and_the_store_knows_both(
    registry: RegistryServer, tmp_path: Path, layers: list[bytes]
) -> None:
    _push_busybox(registry, tmp_path, layers, "team/busybox:v1")
    store = ImageStore(tmp_path / "store")
    puller = Puller(store, RegistryClient(FAST))
    image = puller.obtain(f"{registry.host}/team/busybox:v1")
    assert len(image.layers) == 2
    assert puller.layers_fetched == 2
    digest_ref = next(n for n in image.names if "@sha256:" in n)
    # By digest: the same image, nothing fetched again, and the store resolves every name.
    assert puller.obtain(digest_ref).id == image.id
    assert puller.obtain(f"{registry.host}/team/busybox:v1", "always").id == image.id
    assert puller.layers_fetched == 2
    assert store.resolve(f"{registry.host}/team/busybox:v1").id == image.id
    with pytest.raises(ImageError, match="not in the image store"):
        store.resolve(f"{registry.host}/team/busybox")  # :latest was never pulled


def test_pull_policies_and_a_moved_tag(registry: RegistryServer, tmp_path: Path, layers: list[bytes]) -> None:
    ref = f"{registry.host}/team/app:stable"
    _push_busybox(registry, tmp_path, layers, "team/app:stable", Env=["V=1"])
    store = ImageStore(tmp_path / "store")
    puller = Puller(store, RegistryClient(FAST))
    with pytest.raises(ImageError, match="pull policy is never"):
        puller.obtain(ref, "never")
    first = puller.obtain(ref)
    # The tag moves to another image (same layers, another config).
    _push_busybox(registry, tmp_path, layers, "team/app:stable", Env=["V=2"])
    assert puller.obtain(ref, "if-not-present").id == first.id  # the stored one
    assert puller.obtain(ref, "never").id == first.id
    moved = puller.obtain(ref, "always")
    assert moved.id != first.id
    assert "V=2" in moved.config.env
    assert puller.layers_fetched == 2  # the layers were shared


def test_a_multi_platform_index_gives_this_hosts_image(
    registry: RegistryServer, tmp_path: Path, layers: list[bytes]
) -> None:
    arm = layer_tar([("etc/", None), ("etc/arch", b"arm64\n")])
    amd = layer_tar([("etc/", None), ("etc/arch", b"amd64\n")])
    layout = write_oci_dir(
        tmp_path / "multi",
        [
            ("arm64", [layers[0], arm], {"Env": ["ARCH=arm64"]}),
            ("amd64", [layers[0], amd], {"Env": ["ARCH=amd64"]}),
        ],
    )
    registry.push(f"oci:{layout}:multi", "team/multi:1", all_platforms=True)
    only_arm = write_oci_dir(tmp_path / "arm-only", [("arm64", [layers[0], arm], {"Env": ["ARCH=arm64"]})])
    registry.push(f"oci:{only_arm}:multi", "team/arm-only:1", all_platforms=True)
    store = ImageStore(tmp_path / "store")
    puller = Puller(store, RegistryClient(FAST))
    image = puller.obtain(f"{registry.host}/team/multi:1")
    assert image.config.env == ("ARCH=amd64",)
    assert (store.layer_dir(image.layers[1]) / "etc/arch").read_text() == "amd64\n"
    with pytest.raises(ImageError, match=r"no linux/amd64 image in its index \(it has linux/arm64\)"):
        puller.obtain(f"{registry.host}/team/arm-only:1")


def test_shared_layers_are_fetched_once_by_concurrent_pulls(
    registry: RegistryServer, tmp_path: Path, layers: list[bytes]
) -> None:
    top_a = layer_tar([("etc/", None), ("etc/a", b"a\n")])
    top_b = layer_tar([("etc/", None), ("etc/b", b"b\n")])
    registry.push(f"oci-archive:{write_oci(tmp_path / 'a.tar', [layers[0], top_a], None)}", "team/a:1")
    registry.push(f"oci-archive:{write_oci(tmp_path / 'b.tar', [layers[0], top_b], None)}", "team/b:1")
    store = ImageStore(tmp_path / "store")
    puller = Puller(store, RegistryClient(FAST))
    refs = [f"{registry.host}/team/a:1", f"{registry.host}/team/b:1"] * 3  # two images, three launches each
    with ThreadPoolExecutor(6) as pool:
        images = list(pool.map(puller.obtain, refs))
    assert len({i.id for i in images}) == 2
    assert puller.layers_fetched == 3  # the shared base once, each top once
    assert _store_leftovers(store) == []


def test_a_corrupted_blob_is_refused_and_nothing_is_kept(
    registry: RegistryServer, tmp_path: Path, layers: list[bytes]
) -> None:
    _push_busybox(registry, tmp_path, layers, "team/bad:1")
    manifest = _manifest(registry, "team/bad", "1")
    top = manifest["layers"][1]["digest"]
    blob = registry.blob_path(top)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same length
    blob.write_bytes(bytes(data))
    store = ImageStore(tmp_path / "store")
    with pytest.raises(ImageError, match=rf"layer 1 \({top[:19]}\)"):
        Puller(store, RegistryClient(FAST)).obtain(f"{registry.host}/team/bad:1")
    assert store.refs() == {}
    assert _store_leftovers(store) == []
    bottom = json.loads(_config_blob(registry, manifest))["rootfs"]["diff_ids"]
    assert not store.layer_dir(bottom[1]).exists()


def test_unknown_tags_repositories_and_a_registry_that_is_gone_say_so(
    registry: RegistryServer, tmp_path: Path, layers: list[bytes]
) -> None:
    _push_busybox(registry, tmp_path, layers, "team/busybox:v1")
    puller = Puller(ImageStore(tmp_path / "store"), RegistryClient(FAST))
    with pytest.raises(ImageError, match=r"team/busybox:v9 not found \(MANIFEST_UNKNOWN\)"):
        puller.obtain(f"{registry.host}/team/busybox:v9")
    with pytest.raises(ImageError, match=r"team/nothing:v1 not found \((NAME|MANIFEST)_UNKNOWN\)"):
        puller.obtain(f"{registry.host}/team/nothing:v1")
    with pytest.raises(ImageError, match="bad repository 'Team/Upper'"):
        puller.obtain(f"{registry.host}/Team/Upper:v1")
    host = registry.host
    registry.stop()
    with pytest.raises(ImageError, match=f"registry {host} unreachable"):
        puller.obtain(f"{host}/team/busybox:v1", "always")


class CuttingProxy:
    """A loopback TCP proxy that closes any connection once the registry has
    sent ``cut`` bytes on it: a transfer cut short, every time."""

    def __init__(self, target: int, cut: int) -> None:
        self.target, self.cut = target, cut
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cuts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
        client.settimeout(10)

        def up() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    upstream.sendall(data)

        threading.Thread(target=up, daemon=True).start()
        sent = 0
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if sent + len(data) > self.cut:
                    client.sendall(data[: self.cut - sent])
                    self.cuts += 1
                    break
                client.sendall(data)
                sent += len(data)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


def test_a_transfer_cut_short_is_retried_then_fails_leaving_nothing_half_written(
    registry: RegistryServer, tmp_path: Path, layers: list[bytes]
) -> None:
    # A layer of 2 MiB that gzip cannot shrink: the cut lands inside its blob.
    noise = layer_tar([("noise", os.urandom(2 << 20))])
    registry.push(f"oci-archive:{write_oci(tmp_path / 'n.tar', [layers[0], noise], None)}", "team/noise:1")
    proxy = CuttingProxy(registry.port, cut=256 << 10)
    try:
        store = ImageStore(tmp_path / "store")
        puller = Puller(store, RegistryClient(FAST))
        with pytest.raises(ImageError, match=r"(the transfer failed|cut short).*\(tried 3 times\)"):
            puller.obtain(f"127.0.0.1:{proxy.port}/team/noise:1")
        assert proxy.cuts >= 3
        assert store.refs() == {}
        assert _store_leftovers(store) == []
        # Through the registry itself the same pull completes, reusing the layer it had.
        assert puller.obtain(f"{registry.host}/team/noise:1").layers
    finally:
        proxy.close()


def test_a_registry_with_authentication(tmp_path: Path, layers: list[bytes]) -> None:
    bcrypt = pytest.importorskip("bcrypt")
    if testing_registry.available():
        pytest.skip(testing_registry.available() or "")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("puller:" + bcrypt.hashpw(b"s3cret-enough", bcrypt.gensalt(rounds=4)).decode() + "\n")
    server = RegistryServer(tmp_path / "registry", htpasswd=htpasswd)
    server.start()
    try:
        tar = write_oci(tmp_path / "bb.tar", layers, None)
        server.push(f"oci-archive:{tar}", "team/private:1", creds="puller:s3cret-enough")
        ref = f"{server.host}/team/private:1"
        store = ImageStore(tmp_path / "store")
        with pytest.raises(ImageError, match="unauthorized to pull team/private anonymously"):
            Puller(store, RegistryClient(FAST)).obtain(ref)
        wrong = RegistryConfig(credentials={server.host: RegistryAuth("puller", "not-it")}, retries=0)
        with pytest.raises(ImageError, match="unauthorized to pull team/private with the credentials given"):
            Puller(store, RegistryClient(wrong)).obtain(ref)
        right = RegistryConfig(credentials={server.host: RegistryAuth("puller", "s3cret-enough")}, retries=0)
        assert Puller(store, RegistryClient(right)).obtain(ref).layers
    finally:
        server.stop()


def test_corral_image_pull(registry: RegistryServer, tmp_path: Path, layers: list[bytes]) -> None:
    _push_busybox(registry, tmp_path, layers, "team/busybox:v1")
    env = {**os.environ, "CORRAL_IMAGE_STORE": str(tmp_path / "store")}

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*corral_command(), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    res = corral("image", "pull", f"{registry.host}/team/busybox:v1")
    assert res.returncode == 0, res.stderr
    assert f"as {registry.host}/team/busybox:v1, {registry.host}/team/busybox@sha256:" in res.stdout
    listed = corral("image", "list")
    assert f"{registry.host}/team/busybox:v1" in listed.stdout
    res = corral("image", "pull", f"{registry.host}/team/busybox:nope")
    assert res.returncode != 0
    assert "team/busybox:nope not found (MANIFEST_UNKNOWN)" in res.stderr


def _manifest(registry: RegistryServer, repo: str, tag: str) -> dict[str, object]:
    import urllib.request

    req = urllib.request.Request(
        f"http://{registry.host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _config_blob(registry: RegistryServer, manifest: dict[str, object]) -> bytes:
    config = manifest["config"]
    assert isinstance(config, dict)
    return registry.blob_path(config["digest"]).read_bytes()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
async def test_an_agent_pulls_what_its_tasks_name_and_a_failed_pull_fails_the_task(
    registry: RegistryServer, tmp_path: Path, layers: list[bytes]
) -> None:
    from corral.frameworks import Task, TaskState
    from corral.resources import Resources
    from corral.testing import framework, local_cluster

    _push_busybox(
        registry, tmp_path, layers, "team/busybox:v1", Cmd=["/bin/sh", "-c", "echo pulled; cat /etc/layer2"]
    )
    small = Resources.of(cpus=0.1, mem=32)
    ref = f"{registry.host}/team/busybox:v1"
    async with local_cluster(tmp_path / "cluster", agents=1) as cluster:
        tasks = [
            Task("by-tag", "", small, image=ref),
            Task("again", "", small, image=ref, pull_policy="always"),
            Task("missing", "true", small, image=f"{registry.host}/team/busybox:v9"),
            Task("never", "true", small, image=f"{registry.host}/team/other:v1", pull_policy="never"),
        ]
        async with framework(cluster.master_address) as (driver, rec):
            driver.launch(await rec.next_offer(), tasks)
            done = {t.task_id: await rec.wait_terminal(t.task_id, timeout=60) for t in tasks}
        assert done["by-tag"].state is TaskState.FINISHED, done["by-tag"]
        assert done["again"].state is TaskState.FINISHED, done["again"]
        assert done["missing"].state is TaskState.FAILED
        assert "team/busybox:v9 not found (MANIFEST_UNKNOWN)" in done["missing"].message
        assert done["never"].state is TaskState.FAILED
        assert "pull policy is never" in done["never"].message
        (out,) = (cluster.work_dir / "agent-0" / "sandboxes").glob("*/by-tag-*/stdout")
        assert out.read_text() == "pulled\nlayer 2 was here\n"
        store = ImageStore(cluster.work_dir / "images")
        assert ref in store.refs()
    assert os.listdir(tmp_path / "cluster" / "images" / "tmp") == []
    assert os.listdir(tmp_path / "cluster" / "images" / "leases") == []
