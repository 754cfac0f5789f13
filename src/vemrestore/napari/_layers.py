"""napari image layers <-> vemrestore Volumes (scale = voxel size, translate = position, nm)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vemrestore.errors import UserInputError
from vemrestore.io import Volume

__all__ = ["volume_from_layer", "volume_of_layer"]


def volume_from_layer(data: Any, attributes: Mapping[str, Any]) -> Volume:
    """The `Volume` of an image layer's data and attributes (``layer.as_layer_data_tuple()``).

    Parameters
    ----------
    data : array-like or list of array-like
        The layer's data; of a multiscale layer, level 0 is used.
    attributes : mapping
        Layer attributes: ``scale`` (voxel size, nm), ``translate`` (nm),
        ``name``, ``multiscale``, ``rgb``.

    Raises
    ------
    UserInputError
        For an RGB layer or one that is not 3D (naming the layer).
    """
    name = attributes.get("name", "layer")
    if attributes.get("rgb"):
        raise UserInputError(f"layer {name!r} is RGB; pass a single-channel 3D image layer")
    if attributes.get("multiscale"):
        data = data[0]
    ndim = len(data.shape)
    if ndim != 3:
        raise UserInputError(
            f"layer {name!r} has {ndim} dimensions, shape {tuple(data.shape)}; "
            "a 3D (Z, Y, X) image layer is needed (split channels or time points first)"
        )
    return Volume(
        data,
        voxel_size=tuple(attributes.get("scale", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
        translation=tuple(attributes.get("translate", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
        source=None,
        metadata={"layer": name},
    )


def volume_of_layer(layer: Any) -> Volume:
    """The `Volume` of a napari image layer (``volume_from_layer`` of its data and attributes)."""
    attributes = {
        "name": layer.name,
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "multiscale": layer.multiscale,
        "rgb": getattr(layer, "rgb", False),
    }
    return volume_from_layer(layer.data, attributes)
