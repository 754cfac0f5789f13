"""The axial super-resolution protocol: degrade known-good data, restore, score.

Every registered method runs through the same steps, so a method added later
appears in the table by registering, with no change here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, check_finite, open_volume
from vemrestore.methods import get_method, method_config_class
from vemrestore.metrics import (
    data_consistency_psnr,
    peak_signal_noise_ratio,
    plane_frc_resolution,
    structural_similarity,
)

log = logging.getLogger(__name__)

AXIAL_SECTOR_DEG = 30.0
MIN_SCORED_SLICES = 16  # SSIM's 11-voxel window and FRC's 16-pixel planes fit


@dataclass
class AxialResult:
    """One row of the axial benchmark (one dataset, factor and method)."""

    dataset: str
    method: str
    factor: float
    psnr: float
    ssim: float
    frc_xz_nm: float
    consistency_psnr: float
    seconds: float
    fit_seconds: float
    mvox_per_s: float


def _data_range(truth: np.ndarray, dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max - np.iinfo(dtype).min)
    return float(truth.max() - truth.min())


def score_restoration(
    truth: np.ndarray,
    restored: np.ndarray,
    sections: np.ndarray,
    sectioning: AxialSectioning,
    *,
    voxel_size_nm: float,
    data_range: float,
) -> dict[str, float]:
    """Scores of a z-restoration on the region trimmed by 2k slices at each z end.

    ``frc_xz_nm`` is the axial resolution against the truth: the FRC between
    restored and true XZ planes, counting only frequencies within
    ``AXIAL_SECTOR_DEG`` of the z axis, read at the 1/7 threshold. (A
    single-image FRC cannot rank restorations: interpolation correlates the
    noise of neighbouring slices, which it counts as signal.)

    ``truth`` and ``restored`` are on the fine grid (same shape); ``sections``
    is what the method saw. Consistency re-applies ``sectioning`` to the whole
    restoration and compares with ``sections``.
    """
    if truth.shape != restored.shape:
        raise UserInputError(f"restored shape {restored.shape} differs from truth {truth.shape}")
    trim = int(np.ceil(2 * sectioning.scale_factor))
    if truth.shape[0] - 2 * trim < MIN_SCORED_SLICES:
        raise UserInputError(
            f"volume has {truth.shape[0]} slices, too few to trim {trim} at each end and keep "
            f"{MIN_SCORED_SLICES} for factor {sectioning.scale_factor:g} "
            "(use a taller volume or a smaller factor)"
        )
    region = slice(trim, truth.shape[0] - trim)
    t, r = truth[region], restored[region]
    vs = (voxel_size_nm,) * 3
    return {
        "psnr": peak_signal_noise_ratio(t, r, data_range=data_range),
        "ssim": structural_similarity(t, r, data_range=data_range),
        "frc_xz_nm": plane_frc_resolution(
            r, orientation="xz", voxel_size=vs, reference=t, sector_deg=AXIAL_SECTOR_DEG
        ).resolution_nm,
        "consistency_psnr": data_consistency_psnr(
            sections, restored, sectioning, data_range=data_range
        ),
    }


def run_axial_benchmark(
    data: Sequence[str | Path],
    *,
    factors: Sequence[float],
    methods: Sequence[str],
    profile: str = "box",
    method_options: dict[str, dict[str, Any]] | None = None,
) -> list[AxialResult]:
    """Degrade each isotropic volume by each factor, restore with each method, score.

    Parameters
    ----------
    data : sequence of path
        Isotropic volumes (ground truth), any supported format.
    factors : sequence of float
        Axial factors k; sections are simulated with ``AxialSectioning(k, profile=profile)``.
    methods : sequence of str
        Registered method names.
    profile : {"box", "gaussian"}
        Slice profile of the simulated sections.
    method_options : dict, optional
        Extra config options per method name (e.g. ``{"skeleton": {"train": {...}}}``).

    Returns
    -------
    list of AxialResult
    """
    for name in methods:
        get_method(name)  # fail on a typo before any work
    results = []
    for path in data:
        source = open_volume(path)
        check_finite(source)
        rows, _ = benchmark_volume(
            source.to_numpy(),
            dataset=f"{Path(str(path)).parent.name}/{Path(str(path)).stem}",
            voxel_size=source.voxel_size,
            factors=factors,
            methods=methods,
            profile=profile,
            method_options=method_options,
        )
        results += rows
    return results


def benchmark_volume(
    truth: np.ndarray,
    *,
    dataset: str,
    voxel_size: tuple[float, float, float],
    factors: Sequence[float],
    methods: Sequence[str],
    profile: str = "box",
    method_options: dict[str, dict[str, Any]] | None = None,
    keep_outputs: bool = False,
) -> tuple[list[AxialResult], dict[tuple[float, str], np.ndarray]]:
    """Run the protocol on one in-memory isotropic volume.

    Returns the rows and, with ``keep_outputs``, the sections (key ``(k, "input")``)
    and each restoration (key ``(k, method)``) for figures.
    """
    from vemrestore.engine import predict_array

    options = method_options or {}
    vz, vy, vx = voxel_size
    if not (np.isclose(vz, vy) and np.isclose(vy, vx)):
        log.warning(
            "%s has voxel size %s; the protocol expects isotropic data", dataset, voxel_size
        )
    data_range = _data_range(truth, truth.dtype)
    truth_full = truth.astype(np.float32)
    results, outputs = [], {}
    for factor in factors:
        sectioning = AxialSectioning(factor, profile=profile)  # type: ignore[arg-type]
        sections, info = sectioning.apply(truth_full)
        fine = truth_full[: info.num_fine]
        observed = Volume(sections, voxel_size=(vz * factor, vy, vx), source=dataset)
        if keep_outputs:
            outputs[(float(factor), "input")] = sections
        for name in methods:
            method = _build(name, factor, profile, options.get(name, {}))
            start = time.perf_counter()
            method.fit(observed)
            fitted = time.perf_counter()
            restored = predict_array(method, sections)
            done = time.perf_counter()
            scores = score_restoration(
                fine, restored, sections, sectioning, voxel_size_nm=vy, data_range=data_range
            )
            row = AxialResult(
                dataset=dataset,
                method=name,
                factor=float(factor),
                seconds=done - start,
                fit_seconds=fitted - start,
                mvox_per_s=restored.size / 1e6 / max(done - fitted, 1e-9),
                **scores,
            )
            log.info("%s", row)
            results.append(row)
            if keep_outputs:
                outputs[(float(factor), name)] = restored
    return results, outputs


def _build(name: str, factor: float, profile: str, extra: dict[str, Any]):
    from vemrestore.api import configure

    options = dict(extra)
    if "profile" in method_config_class(name).model_fields:
        options.setdefault("profile", profile)
    return configure(name, factor=factor, **options)


def format_table(results: Sequence[AxialResult]) -> str:
    """Markdown table of the results."""
    header = (
        "| dataset | method | factor | PSNR (dB) | SSIM | XZ FRC vs truth (nm) "
        "| consistency PSNR (dB) | seconds | output Mvox/s |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        lines.append(
            f"| {r.dataset} | {r.method} | {r.factor:g} | {r.psnr:.2f} | {r.ssim:.4f} | "
            f"{r.frc_xz_nm:.1f} | {r.consistency_psnr:.1f} | "
            f"{r.seconds:.2f} | {r.mvox_per_s:.2f} |"
        )
    return "\n".join(lines)


def _json_number(value: Any) -> Any:
    # Strict JSON has no inf (an exact reproduction scores inf dB): write it as a string.
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def save_results(
    results: Sequence[AxialResult],
    path: str | Path,
    provenance: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``{"results": [...], "command", "machine", "commit"}``; inf is written as "inf".

    The file appears complete or not at all (`atomic_output`); a missing
    folder is created, an existing file replaced only with ``overwrite``.
    """
    from vemrestore.io import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{k: _json_number(v) for k, v in asdict(r).items()} for r in results]
    payload = {"results": rows, **provenance}
    text = json.dumps(payload, indent=2, allow_nan=False)
    with atomic_output(path, overwrite=overwrite) as partial:
        partial.write_text(text)
    return path
