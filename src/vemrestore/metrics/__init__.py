"""Scores for restored volumes: PSNR, SSIM, Fourier ring correlation, data consistency,
segmentation agreement (VI, adapted Rand, boundary F1) and power spectra.

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
from vemrestore.metrics._segmentation import (
    adapted_rand_error,
    boundary_f1,
    seeded_watershed,
    threshold_segmentation,
    variation_of_information,
)
from vemrestore.metrics._spectrum import radial_power_spectrum, spectrum_log_error, z_hf_ratio

__all__ = [
    "FRCCurve",
    "FRCResolution",
    "adapted_rand_error",
    "boundary_f1",
    "data_consistency_psnr",
    "fourier_ring_correlation",
    "frc_resolution",
    "orientation_scores",
    "peak_signal_noise_ratio",
    "plane_frc_resolution",
    "radial_power_spectrum",
    "seeded_watershed",
    "single_image_frc",
    "spectrum_log_error",
    "structural_similarity",
    "threshold_segmentation",
    "variation_of_information",
    "z_hf_ratio",
]
