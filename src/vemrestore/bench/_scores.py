"""What the axial benchmark measures, by group, against a ground-truth volume.

Groups (``--metrics``): ``psnr``, ``ssim``, ``frc`` and ``consistency`` (the
defaults: cheap, but they reward blur), ``seg`` (the project's segmenter on the
restoration vs the ground-truth labels, or vs the segmentation of the truth
image when there are none) and ``perceptual`` (feature KID on segmenter-encoder
features of XZ/YZ planes, MS-SSIM, the XZ power-spectrum error and the fraction
of the truth's z high-frequency power restored). Everything that depends only
on the truth (its segmentation, its spectrum) is computed once per factor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.metrics import (
    adapted_rand_error,
    data_consistency_psnr,
    peak_signal_noise_ratio,
    plane_frc_resolution,
    radial_power_spectrum,
    spectrum_log_error,
    structural_similarity,
    uncertainty_error_correlation,
    variation_of_information,
    z_hf_ratio,
)
from vemrestore.normalize import PercentileNormalization

log = logging.getLogger(__name__)

__all__ = [
    "AXIAL_SECTOR_DEG",
    "DEFAULT_METRICS",
    "METRIC_GROUPS",
    "AxialScorer",
    "SectionedCube",
    "parse_metrics",
    "section_cube",
    "xz_planes",
]

AXIAL_SECTOR_DEG = 30.0
METRIC_GROUPS = ("psnr", "ssim", "frc", "consistency", "seg", "perceptual")
DEFAULT_METRICS = ("psnr", "ssim", "frc", "consistency")
SPECTRUM_BANDS = 4
KID_TILES = 256  # per orientation (XZ, YZ) and volume
MIN_SCORED_SLICES = 16  # SSIM's 11-voxel window and FRC's 16-pixel planes fit


def parse_metrics(items: Iterable[str]) -> tuple[str, ...]:
    """Metric groups from user items (``"all"`` expands), in the canonical order.

    Examples
    --------
    >>> parse_metrics(["seg", "psnr"])
    ('psnr', 'seg')
    >>> parse_metrics(["all"]) == METRIC_GROUPS
    True
    """
    chosen = set()
    for item in items:
        if item == "all":
            chosen.update(METRIC_GROUPS)
        elif item in METRIC_GROUPS:
            chosen.add(item)
        else:
            raise UserInputError(
                f"--metrics: unknown group {item!r} (choose from {', '.join(METRIC_GROUPS)}, all)"
            )
    return tuple(g for g in METRIC_GROUPS if g in chosen)


def xz_planes(volume: np.ndarray) -> np.ndarray:
    """The XZ planes of a (Z, Y, X) volume as a stack (Y, Z, X)."""
    return np.moveaxis(np.asarray(volume), 1, 0)


@dataclass
class AxialScorer:
    """Scores restorations of one sectioned truth volume.

    Parameters
    ----------
    truth : numpy.ndarray, shape (Z, Y, X)
        Ground truth on the fine grid (float).
    sections : numpy.ndarray
        What the methods saw; ``sectioning`` made it from ``truth``.
    voxel_size_nm : float
        Isotropic voxel size.
    data_range : float
        For PSNR, SSIM and MS-SSIM.
    metrics : tuple of str
        Groups to compute (see `METRIC_GROUPS`).
    labels : numpy.ndarray, optional
        Ground-truth segmentation of ``truth`` (same shape), for ``seg``.
    segmenter : Segmenter, optional
        Needed by ``seg`` and ``perceptual``.

    Scores are computed on the region trimmed by ``2k`` slices at each z end.
    """

    truth: np.ndarray
    sections: np.ndarray
    sectioning: AxialSectioning
    voxel_size_nm: float
    data_range: float
    metrics: tuple[str, ...] = DEFAULT_METRICS
    labels: np.ndarray | None = None
    segmenter: Any = None
    region: slice = field(init=False)
    cache: dict[str, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        trim = int(np.ceil(2 * self.sectioning.scale_factor))
        if self.truth.shape[0] - 2 * trim < MIN_SCORED_SLICES:
            raise UserInputError(
                f"volume has {self.truth.shape[0]} slices, too few to trim {trim} at each end "
                f"and keep {MIN_SCORED_SLICES} for factor {self.sectioning.scale_factor:g} "
                "(use a taller volume or a smaller factor)"
            )
        if self.labels is not None and self.labels.shape != self.truth.shape:
            raise UserInputError(
                f"labels shape {self.labels.shape} does not match the volume {self.truth.shape}"
            )
        self.region = slice(trim, self.truth.shape[0] - trim)
        needs_segmenter = {"seg", "perceptual"} & set(self.metrics)
        if needs_segmenter and self.segmenter is None:
            raise UserInputError(f"metrics {sorted(needs_segmenter)} need a segmenter")
        self.normalization = PercentileNormalization.from_data(self.truth)

    @property
    def true_region(self) -> np.ndarray:
        return self.truth[self.region]

    def segmentation(self, volume: np.ndarray) -> np.ndarray:
        """The segmenter's 3D segmentation of the scored region of ``volume``."""
        return self.segmenter.segment(volume[self.region], normalization=self.normalization)

    def reference_segmentation(self) -> tuple[np.ndarray, str]:
        """Labels to score against and what they are (ground-truth labels or truth image)."""
        if "reference_seg" not in self.cache:
            if self.labels is not None:
                self.cache["reference_seg"] = (self.labels[self.region], "labels")
            else:
                self.cache["reference_seg"] = (self.segmentation(self.truth), "truth image")
        return self.cache["reference_seg"]

    def score(
        self, restored: np.ndarray, *, std: np.ndarray | None = None
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """Scores of one restoration, and its curves and labels for figures.

        With the method's uncertainty map ``std`` (same shape), also
        ``std_error_spearman``: its rank correlation with the absolute error
        (``uncertainty_error_correlation``), whatever the metric groups.
        """
        if restored.shape != self.truth.shape:
            raise UserInputError(
                f"restored shape {restored.shape} differs from truth {self.truth.shape}"
            )
        t, r = self.true_region, restored[self.region]
        vs = (self.voxel_size_nm,) * 3
        scores: dict[str, float] = {}
        extras: dict[str, Any] = {}
        if std is not None:
            scores["std_error_spearman"] = uncertainty_error_correlation(std[self.region], r, t)
        if "psnr" in self.metrics:
            scores["psnr"] = peak_signal_noise_ratio(t, r, data_range=self.data_range)
        if "ssim" in self.metrics:
            scores["ssim"] = structural_similarity(t, r, data_range=self.data_range)
        if "frc" in self.metrics:
            frc = plane_frc_resolution(
                r, orientation="xz", voxel_size=vs, reference=t, sector_deg=AXIAL_SECTOR_DEG
            )
            scores["frc_xz_nm"] = frc.resolution_nm
            curve = frc.curve
            extras["frc"] = {
                "frequency": (curve.frequencies / self.voxel_size_nm).tolist(),
                "frc": curve.correlation.tolist(),
            }
        if "consistency" in self.metrics:
            scores["consistency_psnr"] = data_consistency_psnr(
                self.sections, restored, self.sectioning, data_range=self.data_range
            )
        if "seg" in self.metrics:
            reference, kind = self.reference_segmentation()
            truth_itself = restored is self.truth and kind == "truth image"
            labels = reference if truth_itself else self.segmentation(restored)
            scores |= variation_of_information(labels, reference, ignore_labels=(0,))
            scores |= adapted_rand_error(labels, reference, ignore_labels=(0,))
            extras["segmentation"] = labels
        if "perceptual" in self.metrics:
            scores |= self._perceptual(t, r, extras)
        return scores, extras

    def _perceptual(self, t: np.ndarray, r: np.ndarray, extras: dict[str, Any]) -> dict:
        from vemrestore.metrics import feature_kid, multiscale_ssim

        # 64-pixel tiles, smaller (a multiple of the encoder's stride) on small volumes.
        stride = self.segmenter.network.size_multiple
        tile = min(64, min(t.shape) // stride * stride)
        scores = {
            "feature_kid": feature_kid(
                r,
                t,
                segmenter=self.segmenter,
                normalization=self.normalization,
                tile=tile,
                max_tiles=KID_TILES,
            )
        }
        try:
            scores["ms_ssim_xz"] = multiscale_ssim(
                r, t, data_range=self.data_range, orientation="xz"
            )
        except UserInputError as error:  # planes too small for its coarsest scale
            log.warning("MS-SSIM not computed: %s", error)
            scores["ms_ssim_xz"] = float("nan")
        spectrum = spectrum_log_error(
            xz_planes(r), xz_planes(t), voxel_size=self.voxel_size_nm, bands=SPECTRUM_BANDS
        )
        scores |= spectrum
        scores["z_hf_ratio"] = z_hf_ratio(r, t, axis=0)
        frequency, log_power = radial_power_spectrum(xz_planes(r), voxel_size=self.voxel_size_nm)
        extras["spectrum"] = {"frequency": frequency.tolist(), "log_power": log_power.tolist()}
        return scores


@dataclass
class SectionedCube:
    """An isotropic cube sectioned along z, ready to restore and score.

    Attributes
    ----------
    sections : numpy.ndarray
        The thick sections (float32), what a method sees.
    observed : Volume
        ``sections`` with their voxel size (z times the factor) and source.
    fine : numpy.ndarray
        The truth on the fine grid the restorations have.
    scorer : AxialScorer
        Every measure of ``METRIC_GROUPS`` against ``fine`` (and the labels).
    """

    sections: np.ndarray
    observed: Any
    fine: np.ndarray
    scorer: AxialScorer


def section_cube(
    truth: np.ndarray,
    factor: float,
    *,
    labels: np.ndarray | None,
    segmenter: Any,
    voxel_size_nm: float,
    source: str,
) -> SectionedCube:
    """Section ``truth`` by ``factor`` (box profile) and score with all metric groups.

    The benchmark scripts' common start: one forward model, one scorer.
    """
    from vemrestore.io import Volume

    sectioning = AxialSectioning(factor)
    sections, info = sectioning.apply(truth)
    sections = sections.astype(np.float32)
    fine = truth[: info.num_fine]
    scorer = AxialScorer(
        fine,
        sections,
        sectioning,
        voxel_size_nm=voxel_size_nm,
        data_range=255.0,
        metrics=METRIC_GROUPS,
        labels=None if labels is None else labels[: info.num_fine],
        segmenter=segmenter,
    )
    size = (voxel_size_nm * factor, voxel_size_nm, voxel_size_nm)
    observed = Volume(sections, voxel_size=size, source=source)
    return SectionedCube(sections, observed, fine, scorer)
