"""Scores for restored volumes: PSNR, SSIM, Fourier ring correlation, data consistency.

NumPy, SciPy and scikit-image only: importing this package never imports torch.
"""

from vemrestore.metrics._consistency import data_consistency_psnr
from vemrestore.metrics._frc import (
    FRCCurve,
    FRCResolution,
    fourier_ring_correlation,
    frc_resolution,
    plane_frc_resolution,
    single_image_frc,
)
from vemrestore.metrics._image import (
    orientation_scores,
    peak_signal_noise_ratio,
    structural_similarity,
)

__all__ = [
    "FRCCurve",
    "FRCResolution",
    "data_consistency_psnr",
    "fourier_ring_correlation",
    "frc_resolution",
    "orientation_scores",
    "peak_signal_noise_ratio",
    "plane_frc_resolution",
    "single_image_frc",
    "structural_similarity",
]
