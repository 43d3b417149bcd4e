"""The images error: part of the containerizer's hierarchy (see ../errors.py)::

ContainerError
└── ImageError      an image is missing, malformed, or a layer fails its digest
"""

from __future__ import annotations

from corral.slave.containerizer.errors import ContainerError


class ImageError(ContainerError):
    """An image cannot be imported or used; the message names the image, file or layer."""
