"""Lateral forward model: optional Gaussian PSF, then integer downsampling in (Y, X).

Geometry: the high-resolution (HR) image is first cropped to a multiple of the
factor ``k`` in Y and X, so ``apply(x)`` and ``apply(crop(x))`` agree. With
``mode="bin"`` low-resolution pixel ``i`` is the mean of HR pixels
``[i k, (i + 1) k)`` (centre ``(i + 0.5) k - 0.5`` in HR index coordinates, as
for axial sections); with ``mode="decimate"`` it is HR pixel ``i k`` of the
blurred image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from vemrestore.errors import UserInputError

__all__ = ["LateralDegradation", "LateralInfo"]

MAX_LATERAL_FACTOR = 64
_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default, shared by the torch path


@dataclass(frozen=True)
class LateralInfo:
    """What ``LateralDegradation.apply`` did.

    Attributes
    ----------
    scale_factor : int
        Downsampling factor in Y and X.
    psf_sigma : float or None
        Gaussian PSF sigma in HR pixels (None: no blur).
    mode : str
        ``"bin"`` or ``"decimate"``.
    hr_shape : tuple of int
        Shape of the cropped HR input, ``(..., k * Y_lr, k * X_lr)``: the
        ground truth a restoration is compared with.
    """

    scale_factor: int
    psf_sigma: float | None
    mode: str
    hr_shape: tuple[int, ...]


@dataclass(frozen=True)
class LateralDegradation:
    """Blur (optional) and downsample the last two axes by ``scale_factor``.

    Parameters
    ----------
    scale_factor : int
        Integer factor in Y and X, 1 to 64 (1: blur only).
    psf_sigma : float, optional
        Sigma of the Gaussian PSF in HR pixels, applied over the last two axes
        only (``scipy.ndimage.gaussian_filter`` with its default ``reflect``
        boundary and ``truncate=4``). None: no blur.
    mode : {"bin", "decimate"}
        ``"bin"``: mean of each ``k x k`` block (pixel binning, the default).
        ``"decimate"``: every ``k``-th pixel, starting at 0.

    Notes
    -----
    Input ``(Y, X)`` or ``(..., Y, X)``, NumPy or torch. NumPy results are
    float32; torch results keep a floating input dtype (else float32) and the
    device. Both paths give the same values up to float rounding.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(36, dtype=np.float32).reshape(6, 6)
    >>> low, info = LateralDegradation(2).apply(image[:5])
    >>> low.shape, info.hr_shape, float(low[0, 0])
    ((2, 3), (4, 6), 3.5)
    """

    scale_factor: int
    psf_sigma: float | None = None
    mode: Literal["bin", "decimate"] = "bin"

    def __post_init__(self) -> None:
        k = self.scale_factor
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise UserInputError(
                f"lateral scale_factor must be an integer, got {k!r} "
                "(e.g. 4 for 4 nm pixels restored from 16 nm)"
            )
        if not 1 <= k <= MAX_LATERAL_FACTOR:
            raise UserInputError(
                f"lateral scale_factor must be between 1 and {MAX_LATERAL_FACTOR}, got {k}"
            )
        if self.psf_sigma is not None and not (
            math.isfinite(self.psf_sigma) and self.psf_sigma > 0
        ):
            raise UserInputError(
                f"psf_sigma must be > 0 HR pixels, got {self.psf_sigma} (use None for no blur)"
            )
        if self.mode not in ("bin", "decimate"):
            raise UserInputError(f"unknown mode {self.mode!r} (choose 'bin' or 'decimate')")

    def crop(self, x: Any) -> Any:
        """Crop the last two axes of ``x`` to a multiple of ``scale_factor``.

        Raises
        ------
        UserInputError
            If ``x`` has fewer than two axes or is smaller than the factor.
        """
        if x.ndim < 2:
            raise UserInputError(
                f"lateral degradation needs an image (Y, X) or stack (..., Y, X), "
                f"got shape {tuple(x.shape)}"
            )
        k = int(self.scale_factor)
        height, width = (int(n) // k * k for n in x.shape[-2:])
        if height == 0 or width == 0:
            raise UserInputError(
                f"image of shape {tuple(x.shape)} is smaller than the lateral factor {k} "
                "(use a smaller factor or a larger image)"
            )
        return x[..., :height, :width]

    def apply(self, x: Any) -> tuple[Any, LateralInfo]:
        """Blur and downsample the last two axes of ``x``.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor
            ``(Y, X)`` image or ``(..., Y, X)`` stack.

        Returns
        -------
        low : numpy.ndarray (float32) or torch.Tensor
            ``(..., Y // k, X // k)``.
        info : LateralInfo
        """
        hr = self.crop(x)
        info = LateralInfo(
            scale_factor=int(self.scale_factor),
            psf_sigma=None if self.psf_sigma is None else float(self.psf_sigma),
            mode=self.mode,
            hr_shape=tuple(int(n) for n in hr.shape),
        )
        if type(x).__module__.startswith("torch"):
            return self._apply_torch(hr), info
        return self._apply_numpy(hr), info

    def _apply_numpy(self, hr: Any) -> np.ndarray:
        y = np.asarray(hr, dtype=np.float32)
        if self.psf_sigma is not None:
            y = ndimage.gaussian_filter(y, self.psf_sigma, truncate=_TRUNCATE, axes=(-2, -1))
        k = int(self.scale_factor)
        if self.mode == "decimate":
            return np.ascontiguousarray(y[..., ::k, ::k])
        *lead, height, width = y.shape
        blocks = y.reshape(*lead, height // k, k, width // k, k)
        return blocks.mean(axis=(-3, -1), dtype=np.float32)

    def _apply_torch(self, hr: Any) -> Any:
        import torch
        import torch.nn.functional as F

        dtype = hr.dtype if hr.dtype.is_floating_point else torch.float32
        *lead, height, width = hr.shape
        y = hr.to(dtype).reshape(-1, 1, height, width)
        if self.psf_sigma is not None:
            y = _gaussian_blur_torch(y, float(self.psf_sigma))
        k = int(self.scale_factor)
        y = y[..., ::k, ::k] if self.mode == "decimate" else F.avg_pool2d(y, k)
        return y.reshape(*lead, height // k, width // k)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1D kernel of ``scipy.ndimage.gaussian_filter`` (radius ``int(4 sigma + 0.5)``)."""
    radius = int(_TRUNCATE * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (t / sigma) ** 2)
    return weights / weights.sum()


def _gaussian_blur_torch(y: Any, sigma: float) -> Any:
    """Separable Gaussian over the last two axes of ``(N, 1, H, W)``, scipy 'reflect' boundary."""
    import torch
    import torch.nn.functional as F

    kernel = _gaussian_kernel(sigma)
    radius = len(kernel) // 2
    w = torch.as_tensor(kernel, dtype=y.dtype, device=y.device)
    for dim in (-2, -1):
        n = y.shape[dim]
        # numpy's "symmetric" padding is scipy's "reflect" (d c b a | a b c d), any radius.
        index = np.pad(np.arange(n), radius, mode="symmetric")
        y = y.index_select(dim, torch.as_tensor(index, device=y.device))
        weight = w.reshape(1, 1, -1, 1) if dim == -2 else w.reshape(1, 1, 1, -1)
        y = F.conv2d(y, weight)
    return y
