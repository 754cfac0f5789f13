"""Scores for restored volumes: PSNR, SSIM/MS-SSIM, Fourier ring correlation, data
consistency, segmentation agreement (VI, adapted Rand, boundary F1) with the
project's boundary segmenter, feature distances (KID, Frechet), power spectra,
and how well an uncertainty map ranks the error.

Importing this package never imports torch: the learned segmenter and MS-SSIM
import it when they are used.
"""

from vemrestore.metrics._consistency import data_consistency_psnr
from vemrestore.metrics._features import (
    FeatureExtractor,
    feature_kid,
    frechet_distance,
    kernel_inception_distance,
    multiscale_ssim,
)
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
from vemrestore.metrics._segmenter import (
    SEGMENTER_KINDS,
    Segmenter,
    load_segmenter,
    plane_tiles,
)
from vemrestore.metrics._spectrum import radial_power_spectrum, spectrum_log_error, z_hf_ratio
from vemrestore.metrics._uncertainty import uncertainty_error_correlation

__all__ = [
    "SEGMENTER_KINDS",
    "FRCCurve",
    "FRCResolution",
    "FeatureExtractor",
    "Segmenter",
    "adapted_rand_error",
    "boundary_f1",
    "data_consistency_psnr",
    "feature_kid",
    "fourier_ring_correlation",
    "frc_resolution",
    "frechet_distance",
    "kernel_inception_distance",
    "load_segmenter",
    "multiscale_ssim",
    "orientation_scores",
    "peak_signal_noise_ratio",
    "plane_frc_resolution",
    "plane_tiles",
    "radial_power_spectrum",
    "seeded_watershed",
    "single_image_frc",
    "spectrum_log_error",
    "structural_similarity",
    "threshold_segmentation",
    "uncertainty_error_correlation",
    "variation_of_information",
    "z_hf_ratio",
]
