"""The à-trous (starlet) wavelet transform with the B3-spline kernel.

Level ``j`` smooths the previous approximation with the separable kernel
``[1, 4, 6, 4, 1] / 16`` dilated by ``2**j`` (holes, "à trous"); the detail
band is the difference of consecutive approximations. The transform is
undecimated and redundant, so the detail bands plus the last approximation
sum back to the image exactly. Borders are mirrored (reflection), replicated
where the image is shorter than the dilated kernel.

References
----------
Starck, J.-L., Fadili, J., Murtagh, F. (2007). The undecimated wavelet
decomposition and its reconstruction. IEEE Trans. Image Process. 16(2),
297-309. https://doi.org/10.1109/TIP.2006.887733
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vemrestore.models._common import mirror_pad

__all__ = ["B3_SPLINE_KERNEL", "atrous_decompose", "atrous_halo"]

B3_SPLINE_KERNEL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def atrous_halo(num_levels: int) -> int:
    """Pixels of context each side that ``num_levels`` levels read: ``2 * (2**L - 1)``."""
    return 2 * (2**num_levels - 1)


def _smooth(x: torch.Tensor, dilation: int) -> torch.Tensor:
    channels = x.shape[1]
    kernel = torch.tensor(B3_SPLINE_KERNEL, dtype=x.dtype, device=x.device)
    pad = 2 * dilation
    x = mirror_pad(x, (pad, pad, pad, pad))
    rows = kernel.view(1, 1, 5, 1).expand(channels, 1, 5, 1)
    cols = kernel.view(1, 1, 1, 5).expand(channels, 1, 1, 5)
    x = F.conv2d(x, rows, dilation=(dilation, 1), groups=channels)
    return F.conv2d(x, cols, dilation=(1, dilation), groups=channels)


def atrous_decompose(
    image: torch.Tensor, *, num_levels: int = 3
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Split ``image`` into ``num_levels`` detail bands and a coarse approximation.

    Parameters
    ----------
    image : torch.Tensor, shape (N, C, H, W)
        Floating-point images; each channel is transformed on its own.
    num_levels : int
        Number of detail bands (scales 1, 2, 4, ... pixels).

    Returns
    -------
    details : list of torch.Tensor, each shape (N, C, H, W)
        Detail bands from fine to coarse.
    approximation : torch.Tensor, shape (N, C, H, W)
        The image smoothed ``num_levels`` times; ``sum(details) + approximation``
        equals ``image`` up to rounding.

    Raises
    ------
    ValueError
        If ``image`` is not 4D floating point or ``num_levels < 1``.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(1, 1, 32, 32)
    >>> details, coarse = atrous_decompose(x, num_levels=3)
    >>> len(details), bool(torch.allclose(sum(details) + coarse, x, atol=1e-6))
    (3, True)
    """
    if image.ndim != 4 or not image.is_floating_point():
        raise ValueError(
            f"atrous_decompose needs a floating-point (N, C, H, W) tensor, got "
            f"{tuple(image.shape)} {image.dtype}"
        )
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    details = []
    current = image
    for level in range(num_levels):
        smoother = _smooth(current, 2**level)
        details.append(current - smoother)
        current = smoother
    return details, current
