"""Extract one layer tar safely, with whiteouts turned into their overlayfs form.

Safety (the tar comes from whoever made the image):

* member names are taken relative to the layer; a ``..`` component is refused,
  a leading ``/`` is dropped;
* a member is never written through a symlink or a non-directory: every parent
  component must be a real directory inside the layer (they are checked with
  ``lstat`` and created as directories when missing), and files are opened with
  ``O_NOFOLLOW | O_EXCL`` after the old entry is removed;
* a hard link must name a file earlier in the same layer;
* symlinks are stored as they are: they are only ever resolved inside the
  container's root, never by the agent;
* device nodes are skipped (counted), except the overlayfs whiteout (a
  character device 0:0).

Whiteouts (image-spec ``layer.md``) become what overlayfs expects in a lower
layer: ``DIR/.wh.NAME`` becomes a character device 0:0 at ``DIR/NAME``, and
``DIR/.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on ``DIR``. Other
``.wh..wh.`` entries (aufs bookkeeping) are dropped.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from corral.slave.containerizer.images.errors import ImageError

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_COPY_CHUNK = 1 << 20


@dataclass
class UnpackStats:
    files: int = 0
    whiteouts: int = 0
    opaque_dirs: int = 0
    devices_skipped: int = 0


def unpack_layer(stream: IO[bytes], dest: Path, layer: str) -> UnpackStats:
    """Extract the tar read from ``stream`` into the existing empty directory ``dest``.

    ``layer`` names the layer in errors. Raises ImageError on an unsafe or
    malformed member; ``dest`` is then partly filled and the caller removes it.
    """
    stats = UnpackStats()
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _unpack_member(tar, member, dest, layer, stats, dirs)
    except tarfile.TarError as e:
        raise ImageError(f"layer {layer}: not a valid tar: {e}") from None
    except OSError as e:
        raise ImageError(f"layer {layer}: cannot unpack: {e}") from None
    # Directory modes last and deepest first: a read-only directory must still
    # take its entries, and creating entries changes a directory's mtime.
    for path, member in sorted(dirs, key=lambda d: len(d[0].parts), reverse=True):
        # A later member may have replaced it, or one of its parents, with a
        # symlink: apply only to what is still a real directory of the layer.
        try:
            if _real_dir(dest, path):
                _own(path, member)
        except OSError as e:
            raise ImageError(f"layer {layer}: cannot set up directory {member.name!r}: {e}") from None
    return stats


def _real_dir(dest: Path, path: Path) -> bool:
    """``path`` is a directory reached from ``dest`` through directories only (no symlink)."""
    cur = dest
    for part in path.relative_to(dest).parts:
        cur = cur / part
        try:
            if not stat.S_ISDIR(os.lstat(cur).st_mode):
                return False
        except FileNotFoundError:
            return False
    return True


def _parts(name: str, layer: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"layer {layer}: member {name!r} escapes the layer ('..')")
    return parts


def _parent(dest: Path, parts: list[str], name: str, layer: str) -> Path:
    """The directory that holds ``parts[-1]``, made of real directories only."""
    cur = dest
    for part in parts[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ImageError(
                f"layer {layer}: member {name!r} goes through {str(cur.relative_to(dest))!r}, "
                "which is not a directory (a symlink?)"
            )
    return cur


def _clear(path: Path, keep_dir: bool) -> bool:
    """Remove what is at ``path``; True if it is a directory that was kept."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return False


def _unpack_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    dest: Path,
    layer: str,
    stats: UnpackStats,
    dirs: list[tuple[Path, tarfile.TarInfo]],
) -> None:
    parts = _parts(member.name, layer)
    if not parts:
        return  # the layer's root itself
    base = parts[-1]
    if base.startswith(WHITEOUT_PREFIX):
        # The directory the marker sits in (made if the layer does not list it).
        parent = _parent(dest, parts, member.name, layer)
        if base == OPAQUE:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            stats.opaque_dirs += 1
        elif not base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            target = parent / base.removeprefix(WHITEOUT_PREFIX)
            _clear(target, keep_dir=False)
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0))
            stats.whiteouts += 1
        return
    parent = _parent(dest, parts, member.name, layer)
    path = parent / base
    if member.isdir():
        if not _clear(path, keep_dir=True):
            os.mkdir(path, 0o755)
        dirs.append((path, member))
        return
    if member.ischr() or member.isblk():
        if member.ischr() and member.devmajor == 0 and member.devminor == 0:
            _clear(path, keep_dir=False)
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
            stats.whiteouts += 1
        else:
            stats.devices_skipped += 1
        return
    _clear(path, keep_dir=False)
    if member.isreg():
        source = tar.extractfile(member)
        if source is None:
            raise ImageError(f"layer {layer}: cannot read member {member.name!r}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            shutil.copyfileobj(source, out, _COPY_CHUNK)
        stats.files += 1
    elif member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        target_parts = _parts(member.linkname, layer)
        if not target_parts:
            raise ImageError(f"layer {layer}: hard link {member.name!r} has an empty target")
        target = _parent(dest, target_parts, member.linkname, layer) / target_parts[-1]
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise ImageError(
                f"layer {layer}: hard link {member.name!r} names {member.linkname!r}, "
                "which is not earlier in the layer"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"layer {layer}: hard link {member.name!r} names a directory")
        os.link(target, path, follow_symlinks=False)
        return  # shares the target's inode: owner and mode are the target's
    elif member.isfifo():
        os.mkfifo(path, 0o600)
    else:
        return  # tar types with nothing to create (e.g. GNU volume headers)
    _own(path, member)


def _own(path: Path, member: tarfile.TarInfo) -> None:
    """Owner, then mode (chown clears set-id bits), then mtime; never through a symlink."""
    os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
