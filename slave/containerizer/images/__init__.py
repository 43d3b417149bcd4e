"""Container images: OCI image-layout and ``docker save`` tarballs in a content-addressed store.

``formats.py`` reads the tarballs, ``unpack.py`` extracts one layer safely
(whiteouts in overlayfs form), ``store.py`` keeps layers and image records on
disk. Agent side only: nothing here runs in the fork server.
"""

from corral.slave.containerizer.images.errors import ImageError
from corral.slave.containerizer.images.formats import ImageConfig
from corral.slave.containerizer.images.store import Image, ImageStore, default_store_dir, is_path_ref

__all__ = ["Image", "ImageConfig", "ImageError", "ImageStore", "default_store_dir", "is_path_ref"]
