"""Small images as base64 PNG text, for JSON results and self-contained HTML."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

__all__ = ["decode_png", "encode_png"]

# (ndim, dtype) -> Pillow mode; PNG stores each of these losslessly.
_MODES = {
    (2, np.dtype(np.uint8)): "L",
    (2, np.dtype(np.uint16)): "I;16",
    (3, np.dtype(np.uint8)): "RGB",
}


def encode_png(array: np.ndarray) -> str:
    """Encode an image as base64 PNG text (ASCII, no ``data:`` prefix).

    Parameters
    ----------
    array : numpy.ndarray
        A 2D uint8 (grey) or uint16 (grey or labels) image, or an (H, W, 3)
        uint8 RGB image.

    Returns
    -------
    str
        Base64 of the PNG bytes; `decode_png` gives ``array`` back exactly.

    Raises
    ------
    ValueError
        For any other dtype or shape, or an empty image.
    """
    array = np.asarray(array)
    # Byte order is not part of the key: a big-endian uint16 is still uint16.
    mode = _MODES.get((array.ndim, array.dtype.newbyteorder("=")))
    if mode is None or (array.ndim == 3 and array.shape[2] != 3) or array.size == 0:
        raise ValueError(
            "encode_png takes a 2D uint8 or uint16 image or an (H, W, 3) uint8 image, "
            f"got shape {array.shape} and dtype {array.dtype}"
        )
    from PIL import Image

    native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    buffer = io.BytesIO()
    Image.fromarray(native).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """Decode base64 PNG text written by `encode_png` into its array.

    Parameters
    ----------
    text : str
        Base64 of a PNG image.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W) for grey, uint16 (H, W) for 16-bit grey, uint8 (H, W, 3) for RGB.

    Raises
    ------
    ValueError
        When ``text`` is not base64 of a grey or RGB PNG.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        data = base64.b64decode(text, validate=True)
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            mode = image.mode
            array = np.array(image)
    except (TypeError, binascii.Error, UnidentifiedImageError, OSError) as error:
        raise ValueError(f"not base64 PNG text ({error})") from None
    if mode not in ("L", "I;16", "RGB"):
        raise ValueError(f"PNG of mode {mode}; only L, I;16 and RGB are decoded")
    return array
