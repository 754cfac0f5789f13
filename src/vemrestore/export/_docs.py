"""What a person reads and sees of an exported package: the README and the cover image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import zoom

from vemrestore.export._tile import TileModel
from vemrestore.methods.interpolate import upsample_axial

__all__ = ["CITATIONS", "describe", "write_cover", "write_readme"]

# Citations of the methods, by model kind (text, DOI).
CITATIONS = {
    "skeleton": [
        (
            "Weigert M, Royer L, Jug F, Myers G. Isotropic reconstruction of 3D fluorescence "
            "microscopy images using convolutional neural networks. MICCAI 2017.",
            "10.1007/978-3-319-66179-7_15",
        ),
        (
            "Weigert M, Schmidt U, Boothe T, et al. Content-aware image restoration: pushing "
            "the limits of fluorescence microscopy. Nature Methods 15, 1090-1097 (2018).",
            "10.1038/s41592-018-0216-7",
        ),
    ],
    "lateral": [
        (
            "Lehtinen J, Munkberg J, Hasselgren J, et al. Noise2Noise: learning image "
            "restoration without clean data. ICML 2018.",
            "10.48550/arXiv.1803.04189",
        ),
    ],
}
_PANEL = 256  # cover panels are _PANEL x _PANEL pixels, side by side (2:1)


def describe(model: TileModel) -> tuple[str, str]:
    """A package name and a one-paragraph description."""
    geometry = model.geometry
    if model.kind == "skeleton":
        k = f"{geometry.axial_factor:g}"
        geometric = model.kwargs.get("fusion") == "geometric"
        fused = "combined by their geometric mean" if geometric else "averaged"
        name = f"vemrestore skeleton axial super-resolution x{k.replace('.', '_')}"
        text = (
            f"Isotropic reconstruction of volume EM: restores thick sections along z to {k}x "
            "finer slices. A 2D U-Net, trained self-supervised on the volume's own XY "
            "sections degraded by the axial forward model, restores every XZ and YZ plane of "
            f"the cubic-spline upsampled stack; the two are {fused}. Made with vemrestore."
        )
    else:
        f = geometry.lateral_factor
        what = "denoising" if f == 1 else f"x{f} lateral super-resolution and denoising"
        name = f"vemrestore lateral {what}"
        text = (
            f"{what[0].upper()}{what[1:]} of volume EM XY slices: an edge-attention network "
            "(windowed self-attention gated by wavelet detail bands) restores each slice, "
            "trained without clean references. Made with vemrestore."
        )
    return name, text


def write_cover(path: Path, tile: np.ndarray, output: np.ndarray, model: TileModel) -> None:
    """A 2:1 PNG: the input tile (left) and its restoration (right), same plane and contrast.

    Axial models show the central XZ plane (sections stretched to the fine
    grid, nearest neighbour); lateral models the first XY slice.
    """
    import matplotlib.image

    if model.kind == "skeleton":
        y = tile.shape[1] // 2
        before = upsample_axial(tile[:, y, :], model.geometry.axial_factor, kind="nearest")
        after = output[:, y, :]
    else:
        before, after = tile[0], output[0]
    low, high = np.percentile(after, [0.5, 99.5])
    canvas = np.concatenate([_panel(before, 0, low), _panel(after, 1, low)], axis=1)
    matplotlib.image.imsave(path, canvas, cmap="gray", vmin=low, vmax=max(high, low + 1e-6))


def _panel(plane: np.ndarray, order: int, fill: float) -> np.ndarray:
    """``plane`` scaled to fit a _PANEL square (aspect kept), centred on ``fill``."""
    scale = _PANEL / max(plane.shape)
    shape = [max(1, min(_PANEL, round(s * scale))) for s in plane.shape]
    fitted = zoom(plane, (shape[0] / plane.shape[0], shape[1] / plane.shape[1]), order=order)
    panel = np.full((_PANEL, _PANEL), fill, np.float32)
    top, left = (_PANEL - fitted.shape[0]) // 2, (_PANEL - fitted.shape[1]) // 2
    panel[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    return panel


def write_readme(
    path: Path,
    model: TileModel,
    *,
    name: str,
    description: str,
    test: dict[str, Any],
    training: dict[str, Any] | None,
    version: str,
    url: str | None = None,
) -> None:
    """The package's documentation: what it does, how to run it, how it was checked."""
    geometry = model.geometry
    sizes = ", ".join(
        f"{axis} = {low} + n*{step}"
        for axis, low, step in zip("zyx", geometry.minimum, geometry.step, strict=True)
    )
    citations = "\n".join(f"- {text} doi:{doi}" for text, doi in CITATIONS[model.kind])
    trained = "not recorded (no training.json in the model folder)"
    if training:
        trained = f"{training.get('steps', '?')} steps"
        if training.get("seconds") is not None:
            trained += f" in {training['seconds']:.0f} s"
        val = training.get("val_losses") or []
        if val and isinstance(val[-1], list | tuple) and len(val[-1]) == 2:
            trained += f"; validation loss {val[0][1]:.4g} at step 0, {val[-1][1]:.4g} at the end"
    lines = [
        f"# {name}",
        "",
        description,
        "",
        "## What the network does to a tile",
        "",
        _steps(model),
        "",
        f"Input `raw`: (batch, channel, z, y, x) float32 in the intensity units of the data the "
        f"model was trained on (no normalisation needed: it is inside the model). Valid tile "
        f"sizes: {sizes}. Output `restored`: same units, float32, shape "
        f"{_output_text(model)}. Axis scales give the voxel size in nm of the test tile's "
        f"volume ({test['voxel_size']} in, {test['output_voxel_size']} out).",
        "",
        "Weights: `pytorch_state_dict` (architecture `vemrestore.export."
        f"{model.callable_name}`, needs `pip install vemrestore=={version}`) and "
        "`torchscript` (standalone: `torch.jit.load`, then call it on the tile).",
        "",
        "## Validation",
        "",
        f"The test tile is a real crop, {test['source']} region {test['region']} "
        f"(z, y, x), shape {test['shape']}. Its test output is what `vemrestore predict` "
        "writes for a volume that is this tile (one block, on the CPU in float32; the "
        "command rounds to the input's integer type when the input is integer). The packaged "
        f"modules reproduce it within {test['max_abs_difference']:.3g} grey levels (max abs "
        f"difference; tolerance {test['tolerance']:.3g}), run on the tile as it is (as "
        "`bioimageio test` does). The output halo is the network context `vemrestore "
        "predict` uses between blocks; bioimage.io tools pad a whole image by it (symmetric "
        "padding) before predicting and crop it after, so voxels within the halo of the "
        "image's border differ from `vemrestore predict`, which does not pad.",
        "",
        "To check the package: `bioimageio test model.zip` (bioimageio.core). To validate "
        "the restoration on your own data, degrade an isotropic volume with `vemrestore "
        "degrade` (same factor), restore it and score it against the original with "
        "`vemrestore bench`.",
        "",
        "## Training",
        "",
        f"Self-supervised on the user's volume with vemrestore {version}: {trained}. The model "
        "config is in the package's `config.vemrestore` section of rdf.yaml.",
        "",
        "## Limitations",
        "",
        "Trained on one volume: it restores data of the same microscope, sample preparation "
        "and voxel size. Check restored structures against the raw data before analysis.",
        "",
        "## Citation",
        "",
        citations,
        f"- vemrestore {version}, the software that trained and exported this model"
        + (f": {url}" if url else "."),
        "",
    ]
    path.write_text("\n".join(lines))


def _steps(model: TileModel) -> str:
    if model.kind == "skeleton":
        return (
            "1. normalise: `(x - low) / (high - low)` with the training volume's 1st and "
            "99.8th percentiles;\n"
            f"2. upsample along z by {model.geometry.axial_factor:g} with a not-a-knot cubic "
            "spline through the section centres;\n"
            "3. run the U-Net on every XZ and every YZ plane (it predicts the residual to the "
            "spline);\n"
            "4. fuse the two predictions and undo the normalisation."
        )
    return (
        "1. normalise each slice with the LR percentiles;\n"
        f"2. run the network on every XY slice (x{model.geometry.lateral_factor} in y and x);\n"
        "3. undo the HR normalisation."
    )


def _output_text(model: TileModel) -> str:
    geometry = model.geometry
    if model.kind == "skeleton":
        return f"(batch, 1, round(z * {geometry.axial_factor:g}), y, x)"
    f = geometry.lateral_factor
    return f"(batch, 1, z, {f} y, {f} x)"


def training_record(model_dir: Path) -> dict[str, Any] | None:
    """``training.json`` of a model folder, or None when absent or unreadable."""
    try:
        return json.loads((Path(model_dir) / "training.json").read_text())
    except (OSError, ValueError):
        return None
