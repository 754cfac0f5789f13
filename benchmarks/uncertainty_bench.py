"""Which uncertainty map tells where an axial restoration is wrong? Real FIB-SEM, with truth.

The isotropic medulla cube (sample2) is sectioned by ``--factor`` (box
profile); SkelEM is configured and trained as ``vemrestore iso --method
skelem`` does (shipped priors, fine-tuned on the sections only). On a central
region (whole sections in z), each map is scored by its Spearman rank
correlation with the absolute error of an output
(``uncertainty_error_correlation``, the measure of the issue's 0.3 target).
The outputs (``against`` in each row): ``skelem``, SkelEM's mean over
``--samples`` seeds with its default sampler (the output the target is
about); ``skelem full``, the same sampling from pure noise; ``skeleton``, the
skeleton SkelEM froze (``predict_block``). The maps:

- ``skelem std``: SkelEM's own ``std`` output over the seeds, default
  sampler, against ``skelem``; ``skelem std, full 4 steps`` against
  ``skelem full``;
- ``skeleton view disagreement``: |XZ - YZ| of the skeleton's two
  orientations (no sampling at all);
- ``section distance``: distance of each output plane from the centre of its
  section (the geometry alone);
- ``learned error scale``: a small U-Net trained (Laplace negative
  log-likelihood) to predict the skeleton's absolute error from [skeleton,
  cubic, skeleton - cubic] on XY pairs of the input's training sections (the
  skeleton's own, so it learns in-sample residuals; ``--errnet-steps``
  steps), applied to the XZ and YZ planes and averaged: what a map trained
  for the job reaches without the truth; its Spearman on the held-out
  sections' XY pairs is reported beside it;
- ``oracle`` rows (``"oracle": true``): the output's absolute error itself,
  Gaussian-smoothed (sigma 1 and 2 voxels). They use the truth: not methods,
  only the scale of what a per-voxel rank correlation can reach against a
  noisy truth.

Reproduce (about 20 minutes on one core of the 2-core machine)::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/uncertainty_bench.py --factor 8 \\
        --out benchmarks/results/uncertainty_x8.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skelem_bench import central_region, predict  # a sibling: benchmarks/ is on sys.path

from vemrestore import api
from vemrestore.bench import provenance, save_record
from vemrestore.bench.datasets import scoring_cube
from vemrestore.degrade import AxialSectioning
from vemrestore.io import Volume
from vemrestore.methods import BlockRequest
from vemrestore.methods.skelem.refiner import skeleton_pairs
from vemrestore.methods.skeleton import Skeleton
from vemrestore.metrics import peak_signal_noise_ratio, uncertainty_error_correlation
from vemrestore.models.unet2d import UNet2D, pad_to_multiple
from vemrestore.train import TrainConfig, fit_model, holdout_sections

POOL, VAL, PATCH = 4096, 512, 64


def request_for(method, region, shape, outputs=("restored",)):
    where = method.input_region(region, shape)
    return where, BlockRequest(tuple(s.start for s in where), region, outputs)


def error_features(cond: np.ndarray) -> np.ndarray:
    """[skeleton, cubic] (N, 2, H, W) -> [skeleton, cubic, skeleton - cubic]."""
    return np.concatenate([cond, cond[:, :1] - cond[:, 1:2]], axis=1)


def laplace_nll(out: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of |residual| under a Laplace of scale softplus(out)."""
    scale = F.softplus(out) + 1e-3
    return (error / scale + torch.log(scale)).mean()


def train_error_net(skeleton: Skeleton, normalized: np.ndarray, steps: int):
    """The learned error scale, trained on the input's own XY pairs; its held-out Spearman."""
    train_ids, val_ids = holdout_sections(len(normalized))
    rng = np.random.default_rng(0)
    cond, residual = skeleton_pairs(
        skeleton, normalized, train_ids, num=POOL, patch_size=PATCH, rng=rng
    )
    vcond, vresidual = skeleton_pairs(
        skeleton, normalized, val_ids, num=VAL, patch_size=PATCH, rng=rng
    )
    inputs = torch.from_numpy(error_features(cond))
    errors = torch.from_numpy(np.abs(residual))

    def sample_batch(gen: np.random.Generator, size: int):
        idx = torch.from_numpy(gen.integers(0, len(inputs), size))
        return inputs[idx], errors[idx]

    torch.manual_seed(0)
    net = UNet2D(3, 1, base_channels=16, depth=2)
    config = TrainConfig(
        num_steps=steps, batch_size=16, learning_rate=2e-3, lr_schedule="cosine", device="cpu"
    )
    fit_model(net, sample_batch=sample_batch, loss_fn=laplace_nll, config=config, progress=False)
    with torch.no_grad():
        scale = F.softplus(net(torch.from_numpy(error_features(vcond))))[:, 0].numpy()
    truth = vresidual[:, 0]
    held_out = uncertainty_error_correlation(scale, np.zeros_like(truth), truth)
    return net.eval(), held_out


def plane_error_scale(net: UNet2D, skeleton_planes: np.ndarray, cubic_planes: np.ndarray):
    """The error net on planes (P, H, W) -> (P, H, W)."""
    x = torch.from_numpy(error_features(np.stack([skeleton_planes, cubic_planes], axis=1)))
    height, width = x.shape[-2:]
    out = []
    with torch.no_grad():
        for start in range(0, len(x), 16):
            batch = pad_to_multiple(x[start : start + 16], net.size_multiple)
            out.append(F.softplus(net(batch))[:, 0, :height, :width])
    return torch.cat(out).numpy()


def skeleton_maps(skeleton: Skeleton, sections, region, net):
    """The skeleton's view disagreement |XZ - YZ| and the learned error scale on ``region``."""
    normalization = skeleton.normalization
    where, request = request_for(skeleton, region, sections.shape)
    views = skeleton.predict_orientations(sections[where], request)
    disagreement = np.abs(views["xz"] - views["yz"])
    fine, (f_lo, y_lo, x_lo) = skeleton.fine_block(sections[where], request, normalization)
    zs, ys, xs = region
    oz = slice(zs.start - f_lo, zs.stop - f_lo)
    oy, ox = slice(ys.start - y_lo, ys.stop - y_lo), slice(xs.start - x_lo, xs.stop - x_lo)
    xz_stack, yz_stack = fine.transpose(1, 0, 2), fine.transpose(2, 0, 1)
    scale_xz = plane_error_scale(
        net, skeleton.predict_planes(xz_stack, range(oy.start, oy.stop)), xz_stack[oy]
    )
    scale_yz = plane_error_scale(
        net, skeleton.predict_planes(yz_stack, range(ox.start, ox.stop)), yz_stack[ox]
    )
    scale = 0.5 * (
        scale_xz.transpose(1, 0, 2)[oz][:, :, ox] + scale_yz.transpose(1, 2, 0)[oz][:, oy, :]
    )
    return disagreement, scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument(
        "--region", type=int, nargs=3, default=[248, 64, 64], metavar=("Z", "Y", "X")
    )
    parser.add_argument("--errnet-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=None, help="SkelEM's budget (smoke runs)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    cube = scoring_cube(quick=False)
    if cube is None:
        print("skipped: real data medulla_sample2 not found (set VEMRESTORE_DATA)", file=sys.stderr)
        return 0
    truth = cube[0]
    factor = args.factor
    sections = AxialSectioning(factor).apply(truth)[0].astype(np.float32)
    observed = Volume(sections, voxel_size=(10.0 * factor, 10.0, 10.0))
    region = central_region(truth.shape, tuple(args.region), factor)
    true = truth[region]
    start = time.perf_counter()
    method = api.configure("skelem", factor=factor, steps=args.steps)
    method.fit(observed, progress=False)
    fit_seconds = time.perf_counter() - start
    outputs: dict[str, np.ndarray] = {}
    scores: dict[str, dict[str, float]] = {}
    rows: dict[str, dict] = {}

    def row(name: str, uncertainty: np.ndarray, against: list[str], **extra) -> None:
        rho = {o: uncertainty_error_correlation(uncertainty, outputs[o], true) for o in against}
        rows[name] = {"spearman": rho, **extra}
        print(f"{name}: {json.dumps({k: round(v, 3) for k, v in rho.items()})}", flush=True)

    for output, name, options in (
        ("skelem", "skelem std", {}),
        ("skelem full", "skelem std, full 4 steps", {"mode": "full", "num_inference_steps": 4}),
    ):
        sampler = method.with_inference(num_samples=args.samples, **options)
        where, request = request_for(sampler, region, sections.shape, ("restored", "std"))
        start = time.perf_counter()
        out = sampler.predict_block(sections[where], request)
        outputs[output] = out["restored"]
        scores[output] = {
            "psnr": peak_signal_noise_ratio(true, out["restored"], data_range=255.0),
            "seconds": time.perf_counter() - start,
        }
        row(name, out["std"], [output], oracle=False)

    skeleton = method.skeleton
    outputs["skeleton"] = predict(skeleton, sections, region)
    scores["skeleton"] = {
        "psnr": peak_signal_noise_ratio(true, outputs["skeleton"], data_range=255.0)
    }
    start = time.perf_counter()
    net, held_out = train_error_net(
        skeleton, skeleton.normalization.apply(sections), args.errnet_steps
    )
    errnet_seconds = time.perf_counter() - start
    disagreement, scale = skeleton_maps(skeleton, sections, region, net)
    both = ["skelem", "skeleton"]
    row("skeleton view disagreement", disagreement, both, oracle=False)
    plane = np.arange(region[0].start, region[0].stop) % factor
    distance = np.broadcast_to(np.abs(plane - (factor - 1) / 2)[:, None, None], true.shape)
    row("section distance", distance, both, oracle=False)
    row("learned error scale", scale, both, oracle=False, held_out_xy=held_out,
        seconds=errnet_seconds)  # fmt: skip
    for sigma in (1, 2):
        for output in both:
            smoothed = ndi.gaussian_filter(np.abs(outputs[output] - true), sigma)
            row(f"oracle: smoothed {output} error, sigma {sigma}", smoothed, [output], oracle=True)
    record = {
        **provenance(sys.argv if argv is None else ["benchmarks/uncertainty_bench.py", *argv]),
        "factor": factor,
        "samples": args.samples,
        "region": [[s.start, s.stop] for s in region],
        "fit_seconds": fit_seconds,
        "errnet_steps": args.errnet_steps,
        "outputs": scores,
        "rows": rows,
    }
    save_record(record, args.out, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
