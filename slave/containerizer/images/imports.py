"""Tarball paths a task names, opened the safe way (``--image-import-dir``)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

from corral.slave.beneath import open_beneath
from corral.slave.containerizer.images.errors import ImageError


def open_import(image: str, import_dirs: tuple[Path, ...]) -> IO[bytes]:
    """Open a task's tarball path for reading: under an import dir, no symlink, a regular file.

    Raises ImageError saying which rule the path breaks.
    """
    path = Path(image)
    if not import_dirs:
        raise ImageError(
            f"image {image!r}: this agent imports no tarball paths (no --image-import-dir); "
            f"import it with `corral image import FILE --name NAME` and give the task NAME"
        )
    if ".." in path.parts or "\0" in image:
        raise ImageError(f"image {image!r}: a tarball path must not contain '..'")
    for top in (Path(os.path.abspath(d)) for d in import_dirs):
        if path.is_relative_to(top) and path != top:
            return _open_beneath(top, path.relative_to(top).parts, image)
    raise ImageError(
        f"image {image!r}: tarball paths are accepted only under this agent's --image-import-dir "
        f"({', '.join(str(d) for d in import_dirs)})"
    )


def _open_beneath(top: Path, parts: tuple[str, ...], image: str) -> IO[bytes]:
    try:
        fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise ImageError(f"image {image!r}: the import directory {top} is unusable: {e.strerror}") from None
    try:
        try:
            nfd = open_beneath(fd, parts)
        except FileNotFoundError:
            raise ImageError(f"{image}: no such image file") from None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ImageError(
                    f"image {image!r}: a tarball path must not go through a symlink (or a non-directory)"
                ) from None
            raise ImageError(f"image {image!r}: cannot open it: {e.strerror}") from None
        os.close(fd)
        fd = nfd
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f"image {image!r}: not a regular file")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f
