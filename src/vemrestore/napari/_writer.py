"""napari writer: an image layer to OME-Zarr with its voxel size and position (nm)."""

from __future__ import annotations

from typing import Any

from vemrestore.errors import UserInputError
from vemrestore.io import write_volume
from vemrestore.napari._layers import volume_from_layer

__all__ = ["write_ome_zarr"]


def write_ome_zarr(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one 3D image layer to the OME-Zarr ``path`` through ``vemrestore.io.write_volume``.

    The layer's ``scale`` is written as the voxel size and its ``translate``
    as the position (nm). The store appears only once complete; an existing
    ``path`` is refused (choose a new name), never replaced.

    Returns
    -------
    list of str
        The written path (napari's writer protocol).

    Raises
    ------
    UserInputError
        For a layer that is not a single-channel 3D image, a ``path`` that is
        not ``.zarr``, or an existing ``path``.
    """
    if not str(path).rstrip("/").lower().endswith(".zarr"):
        raise UserInputError(f"{path}: the OME-Zarr writer writes .zarr stores (name it NAME.zarr)")
    written = write_volume(volume_from_layer(data, attributes), path)
    return [str(written)]
