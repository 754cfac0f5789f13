"""Train the boundary segmenter the evaluation uses, and choose its watershed parameters.

Training data (never a volume the benchmarks score):

- FIB-SEM: ``medulla_fibsem_small/train_raw`` with boundaries from
  ``train_bodies`` (label 0 and the inner edge of every body), planes in all
  three orientations (the crop is isotropic);
- ssTEM: ISBI 2012 ``train_raw`` sections 0-14 with ``train_membranes``
  (0 = membrane). Sections 15-29 are left for the slices benchmark.

Augmentation: flips, 90 degree rotations, intensity gain/offset, Gaussian
noise and zoom. The gala crops show the medulla at a finer scale in pixels than
the 10 nm medulla cubes (their body boundaries cover 20-25 % of the voxels vs
13 % in ``sample2_bodies``, so cells are about 2x larger there): their patches
are zoomed by 1-3.5x, ISBI's by 0.75-1.5x, so the network meets both scales.
Validation loss: ``medulla_fibsem_small/test_raw`` XY planes. The seeded
watershed parameters are chosen on data the network did not train on and no
benchmark scores: the 3D ones on ``medulla_fibsem_small/test`` zoomed 2x (the
scale of the medulla cubes; boundary maps averaged over XY, XZ and YZ planes, as
the 3D segmentation does; lowest VI against ``test_bodies``), the 2D (per
section) ones on ISBI sections 0-14 (the training sections; the scored ones
stay unseen).

Writes ``segmenter.pt`` (state dict) and ``segmenter.json`` (record: data,
steps, wall time, machine, commit, SHA-256, watershed parameters) to ``--out``;
a killed run resumes from ``--work``. Retrain the shipped weights::

    python benchmarks/train_segmenter.py --out src/vemrestore/weights
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from skimage.segmentation import find_boundaries

from vemrestore._shipped import write_shipped
from vemrestore.bench import provenance
from vemrestore.bench.datasets import real_dataset
from vemrestore.metrics import seeded_watershed, variation_of_information
from vemrestore.metrics._segmenter import ALL_PLANES, RETRAIN_COMMAND, Segmenter
from vemrestore.models.segmenter import BoundaryNet
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainConfig, fit_model

ISBI_TRAIN_SECTIONS = range(0, 15)
NETWORK = {"in_channels": 1, "out_channels": 1, "base_channels": 16, "depth": 3}
THRESHOLDS = (0.7, 0.85, 0.95)
MIN_DISTANCES = (8, 14, 20)
FIBSEM_ZOOM = (1.0, 3.5)  # gala crops -> the scale of the 10 nm medulla cubes and beyond
SSTEM_ZOOM = (0.75, 1.5)
SELECTION_ZOOM_3D = 2.0


def _load(name: str) -> np.ndarray:
    path = real_dataset(name)
    if path is None:
        sys.exit(f"dataset {name} not found (set VEMRESTORE_DATA to the shared data folder)")
    return tifffile.imread(path)


def body_boundaries(bodies: np.ndarray) -> np.ndarray:
    """Boundary voxels of a body-id volume: unlabelled (0) or on the inner edge of a body."""
    return (bodies == 0) | find_boundaries(bodies, mode="inner")


def _scaled(raw: np.ndarray) -> np.ndarray:
    return PercentileNormalization.from_data(raw).apply(raw)


class PlanePatches:
    """Random 2D patches of (image, boundary) planes with augmentation.

    Each stack comes with its zoom range: a square of ``patch / zoom`` pixels
    is cut and resized to ``patch`` (linear for the image, nearest for the target).
    """

    def __init__(
        self, stacks: list[tuple[np.ndarray, np.ndarray, tuple[float, float]]], patch: int
    ) -> None:
        self.stacks = stacks
        self.patch = patch

    def __call__(self, rng: np.random.Generator, batch_size: int):
        from scipy import ndimage as ndi

        p = self.patch
        xs, ys = [], []
        for _ in range(batch_size):
            image, target, (low, high) = self.stacks[rng.integers(len(self.stacks))]
            zoom = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            side = min(round(p / zoom), *image.shape[1:])
            z = rng.integers(image.shape[0])
            y = rng.integers(image.shape[1] - side + 1)
            x = rng.integers(image.shape[2] - side + 1)
            img = image[z, y : y + side, x : x + side]
            tgt = target[z, y : y + side, x : x + side]
            if side != p:
                img = ndi.zoom(img, p / side, order=1, grid_mode=True, mode="reflect")[:p, :p]
                tgt = ndi.zoom(
                    tgt.astype(np.uint8), p / side, order=0, grid_mode=True, mode="nearest"
                )
                tgt = tgt[:p, :p]
            k = rng.integers(4)
            img, tgt = np.rot90(img, k), np.rot90(tgt, k)
            if rng.random() < 0.5:
                img, tgt = img[:, ::-1], tgt[:, ::-1]
            img = img * rng.uniform(0.8, 1.25) + rng.uniform(-0.1, 0.1)
            img = img + rng.normal(0.0, rng.uniform(0.0, 0.05), img.shape)
            xs.append(img.astype(np.float32))
            ys.append(tgt.astype(np.float32))
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


def training_stacks() -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
    raw = _scaled(_load("medulla_small_train"))
    edges = body_boundaries(_load_bodies())
    stacks = [
        (raw, edges, FIBSEM_ZOOM),
        (np.moveaxis(raw, 1, 0), np.moveaxis(edges, 1, 0), FIBSEM_ZOOM),
        (np.moveaxis(raw, 2, 0), np.moveaxis(edges, 2, 0), FIBSEM_ZOOM),
    ]
    sections = list(ISBI_TRAIN_SECTIONS)
    isbi = _scaled(_load("isbi_train")[sections])
    membranes = _load("isbi_membranes")[sections] == 0
    # As many ISBI entries as FIB-SEM ones (three orientations), so both modalities weigh the same.
    stacks += [(isbi, membranes, SSTEM_ZOOM)] * 3
    data = {
        "fibsem": "medulla_fibsem_small/train_raw.tif + train_bodies.tif (XY, XZ, YZ planes)",
        "sstem": f"isbi2012_sstem/train_raw.tif + train_membranes.tif, sections {sections}",
        "validation": "medulla_fibsem_small/test_raw.tif XY planes",
    }
    return stacks, data


def _load_bodies() -> np.ndarray:
    path = real_dataset("medulla_small_train")
    return tifffile.imread(path.with_name("train_bodies.tif"))


def validation_fn(patch: int):
    raw = _scaled(_load("medulla_small_test"))
    bodies = tifffile.imread(real_dataset("medulla_small_test").with_name("test_bodies.tif"))
    edges = body_boundaries(bodies)
    h, w = (raw.shape[1] // 8) * 8, (raw.shape[2] // 8) * 8
    x = torch.from_numpy(raw[::5, :h, :w].copy())[:, None]
    y = torch.from_numpy(edges[::5, :h, :w].astype(np.float32))[:, None]

    def validate(model: torch.nn.Module) -> float:
        device = next(model.parameters()).device
        return float(F.binary_cross_entropy_with_logits(model(x.to(device)), y.to(device)))

    return validate


def choose_watershed(net: BoundaryNet) -> tuple[dict, dict]:
    """Grid-search threshold and seed distance by lowest VI (3D and 2D separately)."""
    from scipy import ndimage as ndi

    net.eval()
    segmenter = Segmenter(kind="learned", network=net)
    medulla = ndi.zoom(_scaled(_load("medulla_small_test")), SELECTION_ZOOM_3D, order=1)
    bodies = tifffile.imread(real_dataset("medulla_small_test").with_name("test_bodies.tif"))
    bodies = ndi.zoom(bodies, SELECTION_ZOOM_3D, order=0)
    identity = PercentileNormalization(low=0.0, high=1.0)  # already scaled
    bmap3 = segmenter.boundary_map(medulla, normalization=identity, orientations=ALL_PLANES)
    sections = list(ISBI_TRAIN_SECTIONS)
    isbi = _scaled(_load("isbi_train")[sections])
    interiors = _load("isbi_membranes")[sections] > 0
    bmap2 = segmenter.boundary_map(isbi, normalization=identity)
    truth2 = [ndi.label(plane)[0] for plane in interiors]
    scores: dict[str, dict[str, float]] = {"3d": {}, "2d": {}}
    for threshold in THRESHOLDS:
        for distance in MIN_DISTANCES:
            key = f"threshold={threshold},min_distance={distance}"
            seg = seeded_watershed(bmap3, threshold=threshold, min_distance=distance)
            scores["3d"][key] = variation_of_information(seg, bodies, ignore_labels=(0,))["seg_vi"]
            vis = [
                variation_of_information(
                    seeded_watershed(b, threshold=threshold, min_distance=distance),
                    t,
                    ignore_labels=(0,),
                )["seg_vi"]
                for b, t in zip(bmap2, truth2, strict=True)
            ]
            scores["2d"][key] = float(np.mean(vis))
    chosen = {}
    for mode, table in scores.items():
        best = min(table, key=table.get)
        threshold, distance = (item.split("=")[1] for item in best.split(","))
        chosen[mode] = {"threshold": float(threshold), "min_distance": int(distance)}
    return chosen, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for segmenter.pt/.json")
    parser.add_argument("--work", type=Path, default=Path(".vemrestore-train/segmenter"))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace existing weights")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    weights = args.out / "segmenter.pt"
    if weights.exists() and not args.overwrite:
        sys.exit(f"{weights} exists; pass --overwrite to replace it")
    stacks, data = training_stacks()
    config = TrainConfig(
        num_steps=args.steps,
        batch_size=16,
        patch_size=64,
        learning_rate=2e-3,
        seed=0,
        num_threads=args.threads,
        validate_every=250,
        checkpoint_every=100,
    )
    net = BoundaryNet(**NETWORK)
    start = time.perf_counter()
    result = fit_model(
        net,
        sample_batch=PlanePatches(stacks, config.patch_size),
        loss_fn=F.binary_cross_entropy_with_logits,
        config=config,
        checkpoint_dir=args.work,
        resume=True,
        validate=validation_fn(config.patch_size),
        description="segmenter",
    )
    net.cpu().eval()
    watershed, selection = choose_watershed(net)
    record = {
        "network": NETWORK,
        "watershed": watershed,
        "watershed_selection_vi": selection,
        "data": data,
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),  # summed over resumed runs
        "wall_seconds": round(time.perf_counter() - start, 1),  # of this (last) run
        "val_losses": result.val_losses,
        # fit_model runs the loss given to it: binary cross-entropy, not the config's pixel loss.
        "train_config": config.model_dump() | {"loss": "binary_cross_entropy_with_logits"},
        "retrain": RETRAIN_COMMAND,
        **provenance(),
    }
    record = write_shipped(weights, net.state_dict(), record)
    print(json.dumps({k: record[k] for k in ("watershed", "steps", "wall_seconds")}, indent=2))


if __name__ == "__main__":
    main()
