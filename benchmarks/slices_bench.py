"""Benchmark the restoration of missing and damaged serial sections, by PSNR and by structure.

Protocol (per dataset):

- ``isbi`` (the default; ISBI 2012 ``train_raw.tif``, which has membrane
  labels in ``train_membranes.tif``): the diffusion restorer trains
  self-supervised on sections 0-14 only (``ISBI_TRAIN_SECTIONS``; its
  section 5 is hidden only for validation), and the sigma of ``linear+blur``
  is chosen on them too. The project's segmenter trained on the same
  sections (``benchmarks/train_segmenter.py``), so the scored stack,
  sections 15-29 (``ISBI_SCORED_SECTIONS``), is unseen by both. Section ids
  in the results are ``train_raw`` ids;
- ``medulla`` (FIB-SEM, no labels): training on ``sample1``, scoring on a
  60-section slab of ``sample2`` (ids within the slab), PSNR and SSIM only;
- ``isbi_test`` (the earlier ISBI protocol, not run by default): training on
  all of ``train_raw``, scoring on ``test_raw`` (no labels), PSNR and SSIM only;
- cases, each scored against the hidden truth (8-bit data range 255):
  ``single``: isolated sections hidden (all at once, separated by known sections;
  ISBI 17, 20, 23, 26); ``pair``: runs of two consecutive sections hidden
  (ISBI 18-19, 24-25); ``mask``: synthetic crack/fold/blob masks of
  ``vemrestore.degrade.SliceDamage`` on real sections; every masked pixel is
  treated as unknown and only the masked pixels are scored (PSNR on them;
  SSIM map averaged over them);
- methods: ``slices-linear``, ``slices-flow`` (TV-L1) and ``slices-diffusion``
  (conditioned on ``--estimate``, flow by default), sampled in 1 step from
  pure noise (``diffusion-1step``) and in 4 steps from each of
  ``--strengths`` (``diffusion-4step`` from pure noise, ``diffusion-4step-s0.5``
  from the estimate half-noised: the method's default), all through
  ``vemrestore.engine.predict_array``; ``seconds_per_section`` is prediction
  wall time per restored section. The diffusion model trains from scratch
  for ``--steps``, or with ``--prior`` fine-tunes a prior
  (``SLICES_FINE_TUNE``: early stopping on the training stack's section 5);
- reference row ``linear+blur``: linear interpolation smoothed by a Gaussian
  whose sigma maximises PSNR on the training sections. Where neighbouring
  sections differ a lot (ISBI, 50 nm), PSNR rewards a smooth prediction of
  the mean; this row shows how much of a PSNR gain smoothing alone buys.

Structure scores (labelled stacks), per restored section with the learned
segmenter (``vemrestore.metrics.load_segmenter``), every row's intensities
scaled by the true stack's ``PercentileNormalization``:

- ``membrane_f1``: ``boundary_f1(boundary_map(restored) > 0.5, membranes == 0,
  tolerance=2)``;
- ``seg_vi_split``, ``seg_vi_merge``, ``seg_vi`` and ``seg_arand``: the 2D
  segmentation (``segment(..., mode="2d")``) against the connected components
  of the true interior (``scipy.ndimage.label(membranes > 0)`` per section),
  membrane pixels ignored (``ignore_labels=(0,)``);
- ``feature_kid``: KID between segmenter features of the 64x64 XY tiles of the
  restored sections and of the scored stack's other (not hidden) real
  sections, i.e. how real the restorations look (whole sections only: not
  for ``mask``). The reference is not the hidden truth itself: tiles paired
  with their own restoration make the unbiased estimator strongly negative
  and unordered;
- in the ``mask`` case, F1, VI and ARAND count the masked pixels only.

Each case's first row, ``truth``, puts the true sections through the same
scoring (no PSNR/SSIM): the ceiling of F1/VI/ARAND, i.e. what the segmenter
reaches on real data; its KID (real against other real sections) is the
baseline, about 0.

Runs (ISBI; one CPU thread each, about 60 min from scratch, 25 min with the prior)::

    # from scratch, flow-conditioned (benchmarks/results/slices_isbi_flow.json)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/slices_bench.py --datasets isbi \\
        --steps 1500 --estimate flow --strengths 1,0.5,0.3 --threads 1 \\
        --out benchmarks/results/slices_isbi_flow.json
    # the shipped prior fine-tuned on sections 0-14 (slices_isbi_prior.json)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/slices_bench.py --datasets isbi \\
        --prior shipped --steps 600 --strengths 1,0.5,0.3 --threads 1 \\
        --out benchmarks/results/slices_isbi_prior.json
    # linear-conditioned, as before the flow estimate (slices_isbi_structure.json)
    nice -n 10 .venv/bin/python benchmarks/slices_bench.py --datasets isbi --steps 1500 \\
        --estimate linear --strengths 1 --out benchmarks/results/slices_isbi_structure.json

Smoke run (a few minutes)::

    .venv/bin/python benchmarks/slices_bench.py --quick

Results go to ``--out`` (default ``benchmarks/results/slices.json``, or
``slices_quick.json``) with the report's ``figures`` entry (a restored
section of the ``single`` case and its segmentation per row), a figure
``<json stem>_isbi.png`` (neighbours, truth and each method) and a
Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from scipy.ndimage import gaussian_filter
from scipy.ndimage import label as connected_components
from skimage.metrics import structural_similarity as skimage_ssim
from skimage.segmentation import relabel_sequential

from vemrestore.bench import markdown_table, provenance
from vemrestore.bench.datasets import real_dataset
from vemrestore.degrade import SliceDamage
from vemrestore.engine import predict_array
from vemrestore.io import atomic_output
from vemrestore.io._volume import Volume
from vemrestore.methods.priors import SLICES_FINE_TUNE, SLICES_PRIOR
from vemrestore.methods.slices import (
    DiffusionSlices,
    DiffusionSlicesConfig,
    FlowSlices,
    FlowSlicesConfig,
    LinearSlices,
    LinearSlicesConfig,
    SliceDamageMap,
)
from vemrestore.methods.slices.interp import fill_linear
from vemrestore.metrics import (
    adapted_rand_error,
    boundary_f1,
    feature_kid,
    peak_signal_noise_ratio,
    structural_similarity,
    variation_of_information,
)
from vemrestore.metrics._segmenter import Segmenter, load_segmenter
from vemrestore.normalize import PercentileNormalization

RESULTS = Path(__file__).resolve().parent / "results"
DATA_RANGE = 255.0
# Sampling steps of the second diffusion row (the first uses the config default, 1 step).
SAMPLED_STEPS = 4
# ISBI 2012 train_raw: restorer, blur sigma and segmenter are fitted on the first half only.
ISBI_TRAIN_SECTIONS = range(0, 15)
ISBI_SCORED_SECTIONS = range(15, 30)
ISBI_SINGLE = (17, 20, 23, 26)
ISBI_PAIRS = ((18, 19), (24, 25))
# Boundary-map threshold and match distance (pixels) of the membrane F1.
MEMBRANE_THRESHOLD = 0.5
F1_TOLERANCE = 2
STRUCTURE_KEYS = ("membrane_f1", "seg_vi_split", "seg_vi_merge", "seg_vi", "seg_arand")
# Side of the crops in the report's figure entry.
FIGURE_CROP = 256

Restorer = Callable[[np.ndarray, SliceDamageMap], np.ndarray]


def load(name: str) -> np.ndarray:
    path = real_dataset(name)
    if path is None:
        raise SystemExit(f"dataset {name} not found (set VEMRESTORE_DATA to ../shared/data)")
    return tifffile.imread(path).astype(np.float32)


def isbi_labelled() -> dict[str, Any]:
    """ISBI train_raw: train on sections 0-14, score 15-29 against their membrane labels."""
    raw, membranes = load("isbi_train"), load("isbi_membranes")
    first, scored = ISBI_SCORED_SECTIONS.start, list(ISBI_SCORED_SECTIONS)
    return {
        "protocol": (
            f"train on train_raw sections {ISBI_TRAIN_SECTIONS.start}-"
            f"{ISBI_TRAIN_SECTIONS.stop - 1}, score sections {first}-{scored[-1]} "
            "(membranes from train_membranes.tif)"
        ),
        "train": raw[list(ISBI_TRAIN_SECTIONS)],
        "test": raw[scored],
        "membranes": membranes[scored],
        "first": first,
        "single": [z - first for z in ISBI_SINGLE],
        "pair": [(a - first, b - first) for a, b in ISBI_PAIRS],
        "mask_count": 4,
    }


def isbi_test_raw() -> dict[str, Any]:
    """The earlier ISBI protocol: train on all of train_raw, score test_raw (no labels)."""
    return {
        "protocol": "train on train_raw (all 30 sections), score test_raw",
        "train": load("isbi_train"),
        "test": load("isbi_test"),
        "first": 0,
        "single": [3, 7, 11, 15, 19, 23, 27],
        "pair": [(5, 6), (13, 14), (21, 22)],
        "mask_count": 6,
    }


def medulla() -> dict[str, Any]:
    """FIB-SEM: train on sample1, score a 60-section slab of sample2 (slab ids)."""
    return {
        "protocol": "train on medulla sample1, score sample2 sections 100-159",
        "train": load("medulla_sample1"),
        "test": load("medulla_sample2")[100:160],
        "first": 0,
        "single": [5, 13, 21, 29, 37, 45, 53],
        "pair": [(9, 10), (25, 26), (41, 42)],
        "mask_count": 8,
    }


DATASETS: dict[str, Callable[[], dict[str, Any]]] = {
    "isbi": isbi_labelled,
    "medulla": medulla,
    "isbi_test": isbi_test_raw,
}


def datasets(names: list[str], quick: bool) -> dict[str, dict[str, Any]]:
    """Training stack, evaluation stack (and labels), hidden sections of each named dataset."""
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise SystemExit(
            f"unknown dataset(s) {unknown} in --datasets (choose from {list(DATASETS)})"
        )
    out = {name: DATASETS[name]() for name in names}
    if quick:
        for d in out.values():
            d["train"] = d["train"][:20, :128, :128]
            for key in ("test", "membranes"):
                if key in d:
                    d[key] = d[key][:30, :128, :128]
            d["single"], d["pair"], d["mask_count"] = d["single"][:2], d["pair"][:1], 2
    return out


def train_diffusion(
    train: np.ndarray, steps: int, threads: int, estimate: str, prior: str | None
) -> tuple[DiffusionSlices, dict]:
    """The diffusion restorer trained on ``train``: from scratch, or fine-tuned from ``prior``."""
    options = {"num_steps": steps, "device": "cpu", "num_threads": threads}
    if prior is None:
        options |= {"validate_every": max(1, steps // 6), "checkpoint_every": steps}
        config = DiffusionSlicesConfig(estimate=estimate, train=options)
    else:  # the prior fixes the network and the estimate; a fine-tune with early stopping
        config = DiffusionSlicesConfig(
            **SLICES_PRIOR, prior=prior, train=SLICES_FINE_TUNE | options
        )
    method = DiffusionSlices(config)
    start = time.perf_counter()
    method.fit(Volume(train), progress=False)
    r = method.train_result
    info = {
        "steps": r.steps,
        "seconds": round(time.perf_counter() - start, 1),
        "val_losses": [(s, round(v, 5)) for s, v in r.val_losses],
        "config": config.model_dump(mode="json"),
        "prior": (method.training_record() or {}).get("prior"),
    }
    return method, info


BLUR_SIGMAS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def blurred_linear(damaged: np.ndarray, damage: SliceDamageMap, sigma: float) -> np.ndarray:
    """Linear interpolation, Gaussian-smoothed in-plane on the restored voxels only."""
    mask = damage.region_mask(tuple(slice(0, n) for n in damaged.shape))  # type: ignore[arg-type]
    out = fill_linear(damaged, mask)
    if sigma > 0:
        for z in damage.damaged:
            out[z][mask[z]] = gaussian_filter(out[z], sigma)[mask[z]]
    return out


def choose_blur(train: np.ndarray) -> float:
    """Sigma maximising the PSNR of blurred linear interpolation of single training sections."""
    ids = list(range(1, train.shape[0] - 1, 2))
    scores = []
    for sigma in BLUR_SIGMAS:
        values = []
        for z in ids:
            linear = 0.5 * (train[z - 1] + train[z + 1])
            estimate = gaussian_filter(linear, sigma) if sigma else linear
            values.append(peak_signal_noise_ratio(train[z], estimate, data_range=DATA_RANGE))
        scores.append(np.mean(values))
    return BLUR_SIGMAS[int(np.argmax(scores))]


def masked_psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float:
    """PSNR over the voxels in ``mask`` (data range 255)."""
    return peak_signal_noise_ratio(reference[mask][None], test[mask][None], data_range=DATA_RANGE)


def masked_ssim(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map (Wang et al. settings) over ``mask``."""
    _, full = skimage_ssim(
        reference,
        test,
        data_range=DATA_RANGE,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    return float(full[mask].mean())


def score_case(
    truth: np.ndarray, restored: np.ndarray, damage: SliceDamageMap
) -> tuple[float, float, list[float]]:
    """PSNR over all restored voxels, mean SSIM over restored sections/regions, per-section PSNR."""
    mask = damage.region_mask(tuple(slice(0, n) for n in truth.shape))  # type: ignore[arg-type]
    psnr = masked_psnr(truth, restored, mask)
    per_section, ssims = [], []
    for z in damage.damaged:
        m = mask[z]
        per_section.append(round(masked_psnr(truth[z], restored[z], m), 3))
        if m.all():
            ssims.append(structural_similarity(truth[z], restored[z], data_range=DATA_RANGE))
        else:
            ssims.append(masked_ssim(truth[z], restored[z], m))
    return psnr, float(np.mean(ssims)), per_section


def structure_scores(
    segmenter: Segmenter,
    restored: np.ndarray,
    reference: np.ndarray,
    membranes: np.ndarray,
    *,
    normalization: PercentileNormalization,
    region: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Membrane F1, 2D-segmentation VI/ARAND and feature KID of restored sections.

    Parameters
    ----------
    segmenter : Segmenter
        Gives the boundary maps, 2D segmentations and tile features.
    restored : numpy.ndarray, shape (Z, Y, X)
        The restored sections.
    reference : numpy.ndarray, shape (Z', Y, X)
        Real sections whose tile features KID compares with the restored
        ones' (others than the restored sections' truth, see the module notes).
    membranes : numpy.ndarray, shape (Z, Y, X)
        Labels of the restored sections' truth: 0 on membranes, > 0 inside cells.
    normalization : PercentileNormalization
        Intensity scaling of every input to the segmenter (the true stack's,
        so all restorations are judged on one scale).
    region : numpy.ndarray of bool, shape (Z, Y, X), optional
        The pixels scored by F1, VI and ARAND (default: all). KID, which needs
        whole tiles, is computed only when the region is everything.

    Returns
    -------
    scores : dict
        ``STRUCTURE_KEYS`` (means over sections), ``membrane_f1_per_section``,
        ``seg_vi_per_section`` and ``feature_kid`` (None unless whole sections).
    labels : numpy.ndarray of int32, shape (Z, Y, X)
        The segmenter's 2D segmentation of ``restored``.
    """
    inside = np.ones(restored.shape, bool) if region is None else region
    boundaries = segmenter.boundary_map(restored, normalization=normalization) > MEMBRANE_THRESHOLD
    labels = segmenter.segment(restored, mode="2d", normalization=normalization)
    sections = []
    for z in range(len(restored)):
        cells = np.where(inside[z], connected_components(membranes[z] > 0)[0], 0)
        sections.append(
            {
                "membrane_f1": boundary_f1(
                    boundaries[z] & inside[z],
                    (membranes[z] == 0) & inside[z],
                    tolerance=F1_TOLERANCE,
                ),
                **variation_of_information(labels[z], cells, ignore_labels=(0,)),
                **adapted_rand_error(labels[z], cells, ignore_labels=(0,)),
            }
        )
    scores: dict[str, Any] = {
        k: round(float(np.mean([s[k] for s in sections])), 4) for k in STRUCTURE_KEYS
    }
    scores["membrane_f1_per_section"] = [round(s["membrane_f1"], 4) for s in sections]
    scores["seg_vi_per_section"] = [round(s["seg_vi"], 4) for s in sections]
    kid = None
    if inside.all():
        kid = feature_kid(
            restored,
            reference,
            segmenter=segmenter,
            normalization=normalization,
            orientations=("xy",),
        )
    scores["feature_kid"] = None if kid is None else float(f"{kid:.4g}")
    return scores, labels


def cases(data: dict[str, Any], seed: int) -> dict[str, tuple[np.ndarray, SliceDamageMap]]:
    """Damaged inputs and damage maps: single, pair, mask."""
    test = data["test"]
    out = {}
    single = SliceDamageMap.build(test.shape, missing=data["single"])
    pair = SliceDamageMap.build(test.shape, missing=[z for p in data["pair"] for z in p])
    for name, damage in (("single", single), ("pair", pair)):
        damaged = test.copy()
        damaged[list(damage.missing)] = 0
        out[name] = (damaged, damage)
    damaged, info = SliceDamage(kinds=("crack", "fold", "blob"), count=data["mask_count"]).apply(
        test, rng=seed
    )
    out["mask"] = (damaged, SliceDamageMap.build(test.shape, mask=info.mask))
    return out


def predicting(method: Any) -> Restorer:
    """A restorer running ``method`` through the engine on the given damage."""

    def restore(damaged: np.ndarray, damage: SliceDamageMap) -> np.ndarray:
        method.set_damage(damage)
        return predict_array(method, damaged)

    return restore


def sampled_label(strength: float) -> str:
    """Row name of the few-step sampler started at ``strength`` (1: from pure noise)."""
    return f"diffusion-{SAMPLED_STEPS}step" + ("" if strength == 1.0 else f"-s{strength:g}")


def restorers(
    data: dict[str, Any], diffusion: DiffusionSlices, sigma: float, strengths: list[float]
) -> dict[str, Restorer]:
    """Each row's restorer, in table order; ``truth`` (labelled stacks only) is the true stack."""
    out: dict[str, Restorer] = {}
    if "membranes" in data:
        out["truth"] = lambda damaged, damage: data["test"]
    out |= {
        "linear": predicting(LinearSlices(LinearSlicesConfig())),
        "flow": predicting(FlowSlices(FlowSlicesConfig())),
        "diffusion-1step": predicting(
            diffusion.with_inference(num_inference_steps=1, strength=1.0)
        ),
        **{
            sampled_label(strength): predicting(
                diffusion.with_inference(num_inference_steps=SAMPLED_STEPS, strength=strength)
            )
            for strength in strengths
        },
        "linear+blur": lambda damaged, damage: blurred_linear(damaged, damage, sigma),
    }
    return out


def image_scores(truth: np.ndarray, restored: np.ndarray, damage: SliceDamageMap) -> dict:
    """The PSNR/SSIM keys of a row (None for the truth itself, whose PSNR is infinite)."""
    if restored is truth:
        return {"psnr": None, "ssim": None, "psnr_per_section": None}
    psnr, ssim, per_section = score_case(truth, restored, damage)
    return {"psnr": round(psnr, 3), "ssim": round(ssim, 4), "psnr_per_section": per_section}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit grey levels of an image in the 0-255 range (rounded, clipped)."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def report_figure(
    name: str,
    section: str,
    restored: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The report's entry: crops of one restored section (Y, X) and its segmentation, per row."""
    from vemrestore.report import encode_png

    crop = (slice(0, FIGURE_CROP), slice(0, FIGURE_CROP))
    size = restored["truth"][crop].shape
    return {
        "dataset": name,
        "title": (
            f"{name} section {section} hidden (single case): each row's restoration and "
            f"the segmenter's 2D segmentation of it ({size[0]}x{size[1]} crop)"
        ),
        "planes": {k: {"xy": encode_png(to_uint8(v[crop]))} for k, v in restored.items()},
        "segmentations": {
            k: {"xy": encode_png(relabel_sequential(v[crop])[0].astype(np.uint16))}
            for k, v in labels.items()
        },
    }


def run_case(
    name: str,
    case: str,
    data: dict[str, Any],
    damaged: np.ndarray,
    damage: SliceDamageMap,
    rows: dict[str, Restorer],
    scorer: Callable[..., tuple[dict[str, Any], np.ndarray]] | None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Restore one case with every row: result rows, restored stacks, segmentations."""
    ids = list(damage.damaged)
    region = damage.region_mask(tuple(slice(0, n) for n in damaged.shape))[ids]  # type: ignore[arg-type]
    known = [z for z in range(len(damaged)) if z not in ids]
    results, restored_by, labels_by = [], {}, {}
    for label, restore in rows.items():
        start = time.perf_counter()
        restored = restore(damaged, damage)
        seconds = time.perf_counter() - start
        row = {
            "dataset": name,
            "case": case,
            "method": label,
            "sections": [z + data["first"] for z in ids],
            **image_scores(data["test"], restored, damage),
            "seconds_per_section": round(seconds / len(ids), 2),
        }
        if scorer is not None:
            structure, labels_by[label] = scorer(
                restored[ids], data["test"][known], data["membranes"][ids], region=region
            )
            row |= structure
        logging.info("%s", row)
        results.append(row)
        restored_by[label] = restored
    return results, restored_by, labels_by


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    steps = {"isbi": args.steps, "isbi_test": args.steps, "medulla": args.medulla_steps}
    if args.quick:
        steps = dict.fromkeys(steps, 20)
    stacks = datasets(args.datasets, args.quick)
    if any("membranes" in d for d in stacks.values()):
        load_segmenter()  # missing or damaged weights stop the run before the long training
    segmenter, results, training, figures, report = None, [], {}, {}, []
    for name, data in stacks.items():
        logging.info("%s: training diffusion for %d steps", name, steps[name])
        diffusion, info = train_diffusion(
            data["train"], steps[name], args.threads, args.estimate, args.prior
        )
        info["blur_sigma"] = choose_blur(data["train"])
        info["protocol"] = data["protocol"]
        training[name] = info
        rows = restorers(data, diffusion, info["blur_sigma"], args.strengths)
        scorer = None
        if "membranes" in data:
            # Loaded after training: the scores use the weights shipped when scoring starts.
            segmenter = segmenter or load_segmenter()
            scorer = partial(
                structure_scores,
                segmenter,
                normalization=PercentileNormalization.from_data(data["test"]),
            )
        for case, (damaged, damage) in cases(data, args.seed).items():
            rows_out, restored_by, labels_by = run_case(
                name, case, data, damaged, damage, rows, scorer
            )
            results += rows_out
            figures[(name, case)] = (data["test"], damage, restored_by)
            if case == "single" and labels_by:
                z = damage.missing[len(damage.missing) // 2]
                planes = {k: v[z] for k, v in restored_by.items()}
                segments = {k: v[list(damage.damaged).index(z)] for k, v in labels_by.items()}
                report.append(report_figure(name, str(z + data["first"]), planes, segments))
    segmenter_info = None
    if segmenter is not None:
        segmenter_info = {
            "sha256": segmenter.record.get("sha256"),
            "watershed": segmenter.watershed,
        }
    return {
        "results": results,
        "training": training,
        "segmenter": segmenter_info,
        "figures": figures,
        "report_figures": report,
    }


def format_table(results: list[dict[str, Any]]) -> str:
    columns = [
        ("PSNR (dB)", "psnr", ".2f"),
        ("SSIM", "ssim", ".3f"),
        ("membrane F1", "membrane_f1", ".3f"),
        ("VI split", "seg_vi_split", ".3f"),
        ("VI merge", "seg_vi_merge", ".3f"),
        ("VI", "seg_vi", ".3f"),
        ("ARAND", "seg_arand", ".3f"),
        ("KID", "feature_kid", ".4f"),
        ("s/section", "seconds_per_section", ".2f"),
    ]
    ids = [("dataset", "dataset"), ("case", "case"), ("method", "method")]
    return markdown_table(results, ids=ids, measures=columns)


def save_figure(figures: dict, path: Path, first: int, strengths: list[float]) -> None:
    """Rows: a single hidden section and a masked section; columns: neighbours, truth, methods.

    ``first`` is the id of the scored stack's first section (titles give stack ids).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    test, damage, restored = figures[("isbi", "single")]
    z = damage.missing[len(damage.missing) // 2]
    rows.append(("missing section", z, None, restored))
    _, damage, restored = figures[("isbi", "mask")]
    z = max(damage.partial, key=lambda k: damage.partial[k].sum())
    rows.append(("masked region", z, damage.partial[z], restored))
    labels = [
        "above",
        "below",
        "truth",
        "linear",
        "linear+blur",
        "flow",
        "diffusion-1step",
        *(sampled_label(strength) for strength in strengths),
    ]
    fig, axes = plt.subplots(len(rows), len(labels), figsize=(3 * len(labels), 3.2 * len(rows)))
    size = min(256, test.shape[1])
    crop = (slice(0, size), slice(0, size))
    for r, (title, z, mask, restored_by) in enumerate(rows):
        images = [test[z - 1], test[z + 1], test[z]] + [restored_by[k][z] for k in labels[3:]]
        for c, (label, image) in enumerate(zip(labels, images, strict=True)):
            ax = axes[r, c]
            ax.imshow(image[crop], cmap="gray", vmin=0, vmax=255)
            text = f"{label} (z={first + (z - 1 if c == 0 else z + 1 if c == 1 else z)})"
            if c >= 3:
                m = np.ones(test.shape[1:], bool) if mask is None else mask
                p = masked_psnr(test[z], image, m)
                text = f"{label}: {p:.2f} dB"
            if c == 2 and mask is not None:
                ax.contour(mask[crop], levels=[0.5], colors="r", linewidths=0.5)
            ax.set_title(text if c else f"{title}\n{text}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on small crops")
    parser.add_argument("--steps", type=int, default=3000, help="ISBI training steps")
    parser.add_argument("--medulla-steps", type=int, default=600, help="medulla training steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic masks")
    parser.add_argument(
        "--datasets",
        default="isbi,medulla",
        help=f"comma-separated subset of {','.join(DATASETS)} (see the module docstring)",
    )
    parser.add_argument(
        "--estimate",
        default="flow",
        choices=("linear", "flow"),
        help="the interpolation the diffusion model is conditioned on and corrects",
    )
    parser.add_argument(
        "--strengths",
        default="1,0.5",
        help=f"comma-separated start strengths of the {SAMPLED_STEPS}-step rows (1: pure noise; "
        "0.5: the default of slices-diffusion)",
    )
    parser.add_argument(
        "--prior",
        default=None,
        help="fine-tune this slices-diffusion prior ('shipped' or a .pt path) for --steps "
        "steps with early stopping, instead of training from scratch (sets --estimate)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args()
    args.strengths = [float(s) for s in args.strengths.split(",")]
    origin = provenance()  # taken before the run: the commit of the code that ran
    args.datasets = args.datasets.split(",")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    outcome = run(args)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "results": outcome["results"],
        "training": outcome["training"],
        "segmenter": outcome["segmenter"],
        "total_seconds": round(time.perf_counter() - start, 1),
        **origin,
    }
    out = args.out or RESULTS / f"slices{suffix}.json"
    if outcome["report_figures"]:
        record["figures"] = outcome["report_figures"]
    with atomic_output(out, overwrite=True) as written:
        written.write_text(json.dumps(record, indent=2))
    if "isbi" in args.datasets:
        save_figure(
            outcome["figures"],
            out.with_name(f"{out.stem}_isbi.png"),
            ISBI_SCORED_SECTIONS.start,
            args.strengths,
        )
    print(format_table(outcome["results"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
