"""``corral image``: pull, import, list and remove images in a host's image store.

The store is the one the agents of this host use (``corral agent --image-store``):
an image imported here can be named by ``NAME:TAG`` in a task.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from corral import logging as corral_logging
from corral.cli import exit as exit_codes
from corral.cli.common import fail
from corral.cli.output import Column, Listing, key, output_option, show
from corral.slave.containerizer.images import ImageError, ImageStore, default_store_dir

F = TypeVar("F", bound=Callable[..., Any])


def _store_option(fn: F) -> F:
    return click.option(
        "--store",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Image store directory (default: the running `corral local`'s, else "
        "$CORRAL_IMAGE_STORE, $CORRAL_HOME/images or /var/lib/corral/images, as for `corral agent`).",
    )(fn)


def _default_store() -> Path:
    """The running ``corral local``'s store (it records it), else the agents' default."""
    from corral.cli.discovery import recorded_local

    local = recorded_local()
    if local is not None and local.get("image_store") and not os.environ.get("CORRAL_IMAGE_STORE"):
        return Path(str(local["image_store"]))
    return default_store_dir()


def _errors(fn: F) -> F:
    """An ImageError (exit 4) or OSError (exit 1) is one sentence, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ImageError as e:
            fail(str(e), exit_codes.REFUSED)
        except OSError as e:
            fail(str(e), exit_codes.FAILED)

    return wrapper  # type: ignore[return-value]


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@click.group("image")
@click.pass_context
def image(ctx: click.Context) -> None:
    """Container images in the local store: pulled from a registry, or imported
    from OCI image-layout or `docker save` tarballs."""
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    corral_logging.configure(obj.get("log_level") or os.environ.get("CORRAL_LOG_LEVEL") or "warning")


@image.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", default=None, metavar="NAME[:TAG]", help="Tag it so (default: the names it carries).")
@_store_option
@_errors
def import_(file: Path, name: str | None, store: Path | None) -> None:
    """Import FILE: verify every layer's digest and unpack new layers into the store."""
    found = ImageStore(store or _default_store()).import_tarball(file, name)
    names = ", ".join(found.names) or "(no name; use the id)"
    click.echo(f"imported {found.id[:19]} as {names}: {len(found.layers)} layer(s)")


@image.command("pull")
@click.argument("ref", metavar="HOST[:PORT]/REPO[:TAG|@DIGEST]")
@click.option(
    "--registry-config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar="CORRAL_REGISTRY_CONFIG",
    help="Registry credentials and plain-HTTP hosts (TOML, as for `corral agent`).",
)
@_store_option
@_errors
def pull(ref: str, registry_config: Path | None, store: Path | None) -> None:
    """Pull REF from its registry into the store (layers it has are not fetched again)."""
    from corral.slave.containerizer.images.pull import Puller
    from corral.slave.containerizer.images.registry import RegistryClient
    from corral.slave.containerizer.images.registry_config import RegistryConfig

    config = RegistryConfig.load(registry_config) if registry_config else RegistryConfig()
    client = RegistryClient(config)
    try:
        found = Puller(ImageStore(store or _default_store()), client).pull(ref)
    finally:
        client.close()
    click.echo(f"pulled {found.id[:19]} as {', '.join(found.names)}: {len(found.layers)} layer(s)")


IMAGE_COLUMNS = (
    Column("name", key("name")),
    Column("id", lambda r: r["id"][7:19]),
    Column("layers", lambda r: str(len(r["layers"])), right=True),
    Column("size", lambda r: _human(r["size_bytes"]), right=True),
    Column("full id", key("id"), wide=True),
)


@image.command("list")
@_store_option
@output_option
@_errors
def list_(store: Path | None, output: str | None) -> None:
    """List the images in the store (one row per name)."""
    images = ImageStore(store or _default_store()).images()
    rows = [
        {"name": name, "id": found.id, "layers": list(found.layers), "size_bytes": found.size_bytes}
        for found in images
        for name in found.names or ("<none>",)
    ]
    show(output, Listing(IMAGE_COLUMNS, rows, "images", "no images"))


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from corral.slave.containerizer.images.gc import parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@image.command("prune")
@click.option(
    "--budget",
    callback=_size,
    metavar="SIZE",
    help="Remove least recently used images until the layers fit in 80/85 of SIZE (20GiB, 500MiB). "
    "Default: every image no container uses.",
)
@click.option("--all", "include_imported", is_flag=True, help="Imported images too, not only pulled ones.")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@_store_option
@_errors
def prune(budget: int | None, include_imported: bool, dry_run: bool, store: Path | None) -> None:
    """Remove images no container uses: pulled ones (they can be pulled again), or with --all every one.

    The agents do the same by themselves once their store passes its budget
    (`corral agent --image-gc-budget`, default 85% of its disk).
    """
    from corral.slave.containerizer.images import gc

    found = ImageStore(store or _default_store())
    # Without a budget: down to nothing that is not in use, whatever its age.
    result = gc.collect(found, 0 if budget is None else budget, include_imported, dry_run, min_age_s=0.0)
    verb = "would remove" if dry_run else "removed"
    freed = result.freed_bytes if not dry_run else result.size_before - result.size_after
    click.echo(
        f"{verb} {len(result.remove)} image(s), {_human(freed)}; {_human(result.size_after)} of layers left"
    )
    for image_id in result.remove:
        click.echo(f"  {image_id[:19]}")


@image.command("rm")
@click.argument("ref")
@_store_option
@_errors
def rm(ref: str, store: Path | None) -> None:
    """Untag REF (NAME[:TAG] or an image id); drop the image and its unused layers once nameless."""
    removed = ImageStore(store or _default_store()).remove(ref)
    click.echo(f"untagged {', '.join(removed.refs) or '(nothing)'}")
    if removed.image:
        click.echo(f"removed {removed.image[:19]} and {len(removed.layers)} layer(s)")
    if removed.layers_in_use:
        click.echo(f"kept {len(removed.layers_in_use)} layer(s) mounted by running containers")
