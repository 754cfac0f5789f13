"""Isotropy without ground truth: restored XZ/YZ planes against the volume's own XY planes.

What a user with a real anisotropic volume can check: after restoration, do
the planes across the sections look like the planes within them? Per method:

- ``feature_kid``: KID between segmenter-encoder features of restored XZ + YZ
  tiles and of the input's XY tiles (0 = indistinguishable);
- ``spectrum_log_error``: radial log power spectrum of restored XZ tiles vs XY
  tiles (decades; same tile size, so the same frequencies);
- ``z_hf_ratio``: high-frequency power along z over that along x, on the
  restored volume (1.0 = as sharp across sections as within them);
- ``frc_single_xy_nm``, ``frc_single_xz_nm``, ``frc_single_yz_nm``: single-image FRC resolution per
  orientation. Interpolation correlates neighbouring slices' noise, which the
  single-image FRC counts as signal, so it flatters smooth XZ/YZ planes: read
  it together with the spectra.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.bench._axial import (
    AxialReport,
    AxialResult,
    _build,
    _resolve_segmenter,
    dataset_name,
    timed_restoration,
)
from vemrestore.errors import UserInputError
from vemrestore.io import axial_ratio, check_finite, open_volume
from vemrestore.metrics import plane_frc_resolution, plane_tiles, spectrum_log_error, z_hf_ratio
from vemrestore.normalize import PercentileNormalization

log = logging.getLogger(__name__)

__all__ = ["run_isotropy_benchmark", "score_isotropy"]

TILE = 64
MAX_TILES = 256


def score_isotropy(
    restored: np.ndarray,
    observed: np.ndarray,
    *,
    pixel_nm: float,
    segmenter: Any,
) -> dict[str, float]:
    """Isotropy scores of one restoration (fine grid, isotropic) of ``observed`` (sections)."""
    from vemrestore.metrics import feature_kid

    norm = PercentileNormalization.from_data(observed)
    scores = {
        "feature_kid": feature_kid(
            restored,
            observed,
            segmenter=segmenter,
            normalization=norm,
            reference_orientations=("xy",),
            tile=TILE,
            max_tiles=MAX_TILES,
        )
    }
    within = plane_tiles(observed, orientation="xy", tile=TILE, max_tiles=MAX_TILES)
    xz = plane_tiles(restored, orientation="xz", tile=TILE, max_tiles=MAX_TILES)
    count = min(len(xz), len(within))
    scores |= spectrum_log_error(
        norm.apply(xz[:count]), norm.apply(within[:count]), voxel_size=pixel_nm, bands=4
    )
    side = min(restored.shape)
    cube = restored[:side, :side, :side]
    scores["z_hf_ratio"] = z_hf_ratio(cube, np.swapaxes(cube, 0, 2), axis=0)
    vs = (pixel_nm,) * 3
    for orientation in ("xy", "xz", "yz"):
        frc = plane_frc_resolution(restored, orientation=orientation, voxel_size=vs)
        scores[f"frc_single_{orientation}_nm"] = frc.resolution_nm
    return scores


def run_isotropy_benchmark(
    path: str | Path,
    *,
    methods: Sequence[str],
    factor: float | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    segmenter: Any = "learned",
) -> AxialReport:
    """Restore a real anisotropic volume with each method and score its isotropy.

    Parameters
    ----------
    path : path
        The anisotropic volume (sections along z).
    methods : sequence of str
        Axial methods; learned ones train on this volume (self-supervised).
    factor : float, optional
        Axial factor; default the volume's z / x voxel size.
    segmenter : {"learned", "classical"} or Segmenter
        Must be the learned one (KID needs its encoder).
    """
    source = open_volume(path)
    check_finite(source)
    if factor is None:
        factor = axial_ratio(source)
        if factor is None:
            raise UserInputError(
                f"{path}: voxel size unknown, so the axial factor is too; pass --factors K"
            )
    if not factor > 1:
        raise UserInputError(f"{path}: axial factor {factor:g} is not > 1 (already isotropic?)")
    segmenter = _resolve_segmenter(segmenter, ("perceptual",))
    if getattr(segmenter, "kind", "learned") == "classical":
        raise UserInputError(
            "--no-reference compares encoder features: it needs the learned segmenter"
        )
    observed = source.to_numpy().astype(np.float32)
    dataset = dataset_name(path)
    pixel_nm = float(source.voxel_size[2])
    options = method_options or {}
    report = AxialReport()
    for name in methods:
        log.info("%s: restoring x%g with %s", dataset, factor, name)
        method = _build(name, factor, "box", options.get(name, {}))
        outputs, timing = timed_restoration(method, source, observed)
        restored = outputs["restored"]
        scores = score_isotropy(restored, observed, pixel_nm=pixel_nm, segmenter=segmenter)
        report.results.append(AxialResult(dataset, name, float(factor), **timing, scores=scores))
    return report
