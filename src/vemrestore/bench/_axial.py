"""The axial super-resolution protocol: degrade known-good data, restore, score.

Every registered method runs through the same steps, so a method added later
appears in the table by registering, with no change here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.bench._scores import DEFAULT_METRICS, AxialScorer
from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, check_finite, open_volume
from vemrestore.methods import get_method, method_config_class

log = logging.getLogger(__name__)

TRUTH_ROW = "truth"  # the ground truth scored like a method: the ceiling of every measure


@dataclass
class AxialResult:
    """One row of the axial benchmark (one dataset, factor and method).

    ``scores`` holds the measures of the chosen metric groups, by their JSON
    key (``psnr``, ``ssim``, ``frc_xz_nm``, ``consistency_psnr``, ``seg_vi``,
    ``feature_kid``, ...).
    """

    dataset: str
    method: str
    factor: float
    seconds: float
    fit_seconds: float
    mvox_per_s: float
    scores: dict[str, float] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """Flat JSON row: the fields, then the scores."""
        row = {k: v for k, v in asdict(self).items() if k != "scores"}
        return row | self.scores


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
    """The default scores of a z-restoration on the region trimmed by 2k slices at each z end.

    ``frc_xz_nm`` is the axial resolution against the truth: the FRC between
    restored and true XZ planes, counting only frequencies within
    ``AXIAL_SECTOR_DEG`` of the z axis, read at the 1/7 threshold. (A
    single-image FRC cannot rank restorations: interpolation correlates the
    noise of neighbouring slices, which it counts as signal.)

    ``truth`` and ``restored`` are on the fine grid (same shape); ``sections``
    is what the method saw. Consistency re-applies ``sectioning`` to the whole
    restoration and compares with ``sections``. See `AxialScorer` for the
    segmentation and perceptual groups.
    """
    scorer = AxialScorer(
        truth,
        sections,
        sectioning,
        voxel_size_nm=voxel_size_nm,
        data_range=data_range,
    )
    return scorer.score(restored)[0]


@dataclass
class AxialReport:
    """What an axial benchmark run produced.

    Attributes
    ----------
    results : list of AxialResult
        One row per dataset, factor and method (plus a ``truth`` row per factor
        when segmentation or perceptual measures are on).
    figures : list of dict
        With ``figures=True``: one entry per dataset and factor for the report.
    outputs : dict
        With ``keep_outputs=True``: the sections (key ``(k, "input")``) and
        each restoration (key ``(k, method)``).
    """

    results: list[AxialResult] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[tuple[float, str], np.ndarray] = field(default_factory=dict)


def run_axial_benchmark(
    data: Sequence[str | Path],
    *,
    factors: Sequence[float],
    methods: Sequence[str],
    profile: str = "box",
    method_options: dict[str, dict[str, Any]] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    labels: Sequence[str | Path | None] | None = None,
    segmenter: Any = "learned",
    figures: bool = False,
) -> AxialReport:
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
    metrics : sequence of str
        Metric groups (`vemrestore.bench.METRIC_GROUPS`); the cheap ones by default.
    labels : sequence of path or None, optional
        Ground-truth segmentation of each ``data`` volume (same shape), for ``seg``.
    segmenter : {"learned", "classical"} or Segmenter
        Segmenter of the ``seg`` and ``perceptual`` groups.
    figures : bool
        Keep crops, curves and labels for the report.

    Returns
    -------
    AxialReport
    """
    for name in methods:
        get_method(name)  # fail on a typo before any work
    label_paths = list(labels) if labels is not None else [None] * len(data)
    if len(label_paths) != len(data):
        raise UserInputError(
            f"--labels: {len(label_paths)} given for {len(data)} --data volumes "
            "(give one per volume, in the same order)"
        )
    segmenter = _resolve_segmenter(segmenter, metrics)
    report = AxialReport()
    for path, label_path in zip(data, label_paths, strict=True):
        source = open_volume(path)
        check_finite(source)
        truth_labels = None if label_path is None else open_volume(label_path).to_numpy()
        if truth_labels is not None and truth_labels.shape != source.shape:
            raise UserInputError(
                f"--labels {label_path} has shape {truth_labels.shape}, "
                f"--data {path} has {source.shape}"
            )
        part = benchmark_volume(
            source.to_numpy(),
            dataset=dataset_name(path),
            voxel_size=source.voxel_size,
            factors=factors,
            methods=methods,
            profile=profile,
            method_options=method_options,
            metrics=metrics,
            labels=truth_labels,
            segmenter=segmenter,
            figures=figures,
        )
        report.results += part.results
        report.figures += part.figures
    return report


def dataset_name(path: str | Path) -> str:
    """``folder/stem`` of a volume path: the dataset column of the tables."""
    return f"{Path(str(path)).parent.name}/{Path(str(path)).stem}"


def _resolve_segmenter(segmenter: Any, metrics: Sequence[str]) -> Any:
    """The segmenter the metrics need (loaded once), or None when none needs it."""
    if not {"seg", "perceptual"} & set(metrics):
        return None
    if isinstance(segmenter, str):
        from vemrestore.metrics import load_segmenter

        return load_segmenter(segmenter)
    return segmenter


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
    metrics: Sequence[str] = DEFAULT_METRICS,
    labels: np.ndarray | None = None,
    segmenter: Any = "learned",
    figures: bool = False,
) -> AxialReport:
    """Run the protocol on one in-memory isotropic volume (see `run_axial_benchmark`)."""
    from vemrestore.methods.interpolate import upsample_axial

    options = method_options or {}
    vz, vy, vx = voxel_size
    if not (np.isclose(vz, vy) and np.isclose(vy, vx)):
        log.warning(
            "%s has voxel size %s; the protocol expects isotropic data", dataset, voxel_size
        )
    segmenter = _resolve_segmenter(segmenter, metrics)
    data_range = _data_range(truth, truth.dtype)
    truth_full = truth.astype(np.float32)
    report = AxialReport()
    with_truth_row = bool({"seg", "perceptual"} & set(metrics))
    for factor in factors:
        sectioning = AxialSectioning(factor, profile=profile)  # type: ignore[arg-type]
        sections, info = sectioning.apply(truth_full)
        fine = truth_full[: info.num_fine]
        scorer = AxialScorer(
            fine,
            sections,
            sectioning,
            voxel_size_nm=vy,
            data_range=data_range,
            metrics=tuple(metrics),
            labels=None if labels is None else labels[: info.num_fine],
            segmenter=segmenter,
        )
        observed = Volume(sections, voxel_size=(vz * factor, vy, vx), source=dataset)
        if keep_outputs:
            report.outputs[(float(factor), "input")] = sections
        extras: dict[str, dict[str, Any]] = {}
        # Whole volumes kept for the figure only (they are cropped there).
        restorations = {}
        if figures:
            restorations["input"] = upsample_axial(sections, factor, kind="nearest")[
                : info.num_fine
            ]
        if with_truth_row:
            log.info("%s x%g: scoring the truth itself (the ceiling)", dataset, factor)
            scores, extras[TRUTH_ROW] = scorer.score(fine)
            report.results.append(AxialResult(dataset, TRUTH_ROW, float(factor), 0, 0, 0, scores))
        for name in methods:
            log.info("%s x%g: restoring with %s", dataset, factor, name)
            method = _build(name, factor, profile, options.get(name, {}))
            outputs, timing = timed_restoration(method, observed, sections)
            restored = outputs["restored"]
            done = time.perf_counter()
            scores, extras[name] = scorer.score(restored, std=outputs.get("std"))
            log.info(
                "%s x%g %s: %.1f s to restore, %.1f s to score",
                dataset,
                factor,
                name,
                timing["seconds"],
                time.perf_counter() - done,
            )
            row = AxialResult(dataset, name, float(factor), **timing, scores=scores)
            report.results.append(row)
            if figures:
                restorations[name] = restored
            else:
                extras[name].pop("segmentation", None)
            if keep_outputs:
                report.outputs[(float(factor), name)] = restored
        if figures:
            report.figures.append(_figure(dataset, factor, scorer, fine, restorations, extras))
    return report


def _figure(
    dataset: str,
    factor: float,
    scorer: AxialScorer,
    fine: np.ndarray,
    restorations: dict[str, np.ndarray],
    extras: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    from vemrestore.bench._figures import axial_figure

    region = scorer.region
    volumes = {TRUTH_ROW: fine[region]} | {n: v[region] for n, v in restorations.items()}
    segmentations = {n: e["segmentation"] for n, e in extras.items() if "segmentation" in e}
    spectra = {n: e["spectrum"] for n, e in extras.items() if "spectrum" in e}
    return axial_figure(
        dataset=dataset,
        factor=factor,
        volumes=volumes,
        segmentations=segmentations,
        frc={n: e["frc"] for n, e in extras.items() if "frc" in e and n != TRUTH_ROW},
        spectra=spectra,
    )


def timed_restoration(
    method: Any, observed: Volume, sections: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """``method`` fitted on ``observed`` and run on ``sections``; the timing fields of a row.

    The outputs are ``"restored"`` and, for a method with one (SkelEM with
    several samples), its uncertainty map ``"std"``, from one prediction pass.
    """
    from vemrestore.engine import predict_array

    start = time.perf_counter()
    method.fit(observed)
    fitted = time.perf_counter()
    names = [name for name in ("restored", "std") if name in method.outputs]
    outputs = predict_array(method, sections, outputs=names)
    done = time.perf_counter()
    return outputs, {
        "seconds": done - start,
        "fit_seconds": fitted - start,
        "mvox_per_s": outputs["restored"].size / 1e6 / max(done - fitted, 1e-9),
    }


def _build(name: str, factor: float, profile: str, extra: dict[str, Any]):
    from vemrestore.api import configure

    options = dict(extra)
    if "profile" in method_config_class(name).model_fields:
        options.setdefault("profile", profile)
    return configure(name, factor=factor, **options)


_COLUMNS = {  # JSON key -> (column title, format)
    "psnr": ("PSNR (dB)", ".2f"),
    "ssim": ("SSIM", ".4f"),
    "frc_xz_nm": ("XZ FRC vs truth (nm)", ".1f"),
    "consistency_psnr": ("consistency PSNR (dB)", ".1f"),
    "seg_vi_split": ("VI split", ".3f"),
    "seg_vi_merge": ("VI merge", ".3f"),
    "seg_arand": ("ARAND", ".3f"),
    "feature_kid": ("feature KID", ".4f"),
    "ms_ssim_xz": ("MS-SSIM XZ", ".4f"),
    "spectrum_log_error": ("XZ spectrum error (dec)", ".3f"),
    "z_hf_ratio": ("z HF power ratio", ".2f"),
    "std_error_spearman": ("std/error Spearman", ".2f"),
    "frc_single_xy_nm": ("XY FRC (nm)", ".1f"),
    "frc_single_xz_nm": ("XZ FRC (nm)", ".1f"),
    "frc_single_yz_nm": ("YZ FRC (nm)", ".1f"),
}


def format_table(results: Sequence[AxialResult]) -> str:
    """Markdown table of the results: the measures present in any row, then timing."""
    keys = [k for k in _COLUMNS if any(k in r.scores for r in results)]
    titles = ["dataset", "method", "factor", *(_COLUMNS[k][0] for k in keys)]
    titles += ["seconds", "output Mvox/s"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in results:
        cells = [r.dataset, r.method, f"{r.factor:g}"]
        cells += [format(r.scores[k], _COLUMNS[k][1]) if k in r.scores else "" for k in keys]
        cells += [f"{r.seconds:.2f}", f"{r.mvox_per_s:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_results(
    results: Sequence[AxialResult],
    path: str | Path,
    provenance: dict[str, Any],
    *,
    overwrite: bool = False,
    figures: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write ``{"results": [...], "command", "machine", "commit", "figures"}`` (`save_record`)."""
    from vemrestore.bench._provenance import save_record

    payload = {"results": [r.as_row() for r in results], **provenance}
    if figures:
        payload["figures"] = list(figures)
    return save_record(payload, path, overwrite=overwrite)
