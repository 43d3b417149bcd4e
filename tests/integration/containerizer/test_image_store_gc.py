"""Image garbage collection on a real store: least recently used pulled
images go first, leased and imported ones stay, `corral image prune`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli.main import cli
from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.images import gc as image_gc
from corral.testing_images import layer_tar, write_oci

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the store's layers keep owners: root")]


def add(store: ImageStore, tmp: Path, name: str, size: int, pulled: bool = True) -> str:
    """An image of one layer holding ``size`` bytes, recorded as pulled (or imported)."""
    layer = layer_tar([("data/", None), (f"data/{name}", os.urandom(size))])
    path = write_oci(tmp / f"{name}.tar", [layer], f"{name}:1")
    image = store.import_tarball(path)
    if pulled:
        store.record(image, f"registry example.test/{name}:1", "registry")
    return image.id


def age(store: ImageStore, image_id: str, seconds_ago: float) -> None:
    """Pretend the image was last used ``seconds_ago`` (the used/ mark's mtime)."""
    mark = store.root / "used" / image_id.removeprefix("sha256:")
    mark.parent.mkdir(exist_ok=True)
    mark.touch()
    when = time.time() - seconds_ago
    os.utime(mark, (when, when))


def test_the_least_recently_used_pulled_images_go_until_the_store_fits(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    mib = 1 << 20
    old = add(store, tmp_path, "old", 2 * mib)
    mid = add(store, tmp_path, "mid", 2 * mib)
    new = add(store, tmp_path, "new", 2 * mib)
    mine = add(store, tmp_path, "mine", 2 * mib, pulled=False)
    leased = add(store, tmp_path, "leased", 2 * mib)
    for image_id, ago in ((old, 3000), (mid, 2000), (new, 1000), (mine, 9000), (leased, 9000)):
        age(store, image_id, ago)
    holder = tmp_path / "containers" / "c1" / "layers"
    store.lease(store.resolve("leased:1"), holder)
    age(store, leased, 9000)  # (the lease touched it: make it the oldest again)
    # 10 MiB of layers; a 9 MiB budget collects down to 8.5 MiB: one image goes.
    plan = image_gc.collect(store, budget_bytes=9 * mib)
    assert plan.remove == (old,)
    names = {n for i in store.images() for n in i.names}
    assert names == {"mid:1", "new:1", "mine:1", "leased:1"}
    assert plan.size_after < 8.5 * mib
    # Down to nothing: what is leased or imported stays.
    plan = image_gc.collect(store, budget_bytes=0)
    assert set(plan.remove) == {mid, new}
    assert {n for i in store.images() for n in i.names} == {"mine:1", "leased:1"}
    store.release(holder)
    assert image_gc.collect(store, budget_bytes=0).remove == (leased,)
    # A young image (used within MIN_AGE_S) is kept by the agent's rounds.
    young = add(store, tmp_path, "young", mib)
    assert image_gc.collect(store, budget_bytes=0).remove == ()
    assert image_gc.collect(store, budget_bytes=0, min_age_s=0).remove == (young,)
    assert sorted(p.name for p in (store.root / "sizes").iterdir()) == sorted(
        d.removeprefix("sha256:") for i in store.images() for d in i.layers
    )


def test_cli_prune(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    add(store, tmp_path, "pulled", 1 << 20)
    add(store, tmp_path, "imported", 1 << 20, pulled=False)
    runner = CliRunner()
    args = ["image", "prune", "--store", str(store.root)]
    result = runner.invoke(cli, [*args, "--dry-run"], obj={})
    assert result.exit_code == 0, result.output
    assert "would remove 1 image(s)" in result.output
    assert len(store.images()) == 2
    result = runner.invoke(cli, args, obj={})
    assert result.exit_code == 0, result.output
    assert "removed 1 image(s), 1.0 MiB" in result.output
    assert [i.names for i in store.images()] == [("imported:1",)]
    result = runner.invoke(cli, [*args, "--all"], obj={})
    assert "removed 1 image(s)" in result.output
    assert store.images() == []
    result = runner.invoke(cli, [*args, "--budget", "lots"], obj={})
    assert result.exit_code == 2
    assert "not a size such as 20GiB" in result.output
