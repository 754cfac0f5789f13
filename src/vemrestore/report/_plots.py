"""Pictures of a benchmark figure entry: line plots, error maps, segmentation overlays."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "ERROR_COLOURMAP",
    "boundary_overlay",
    "colour_bar",
    "error_maps",
    "line_plot",
    "name_colours",
]

ERROR_COLOURMAP = "inferno"
# Fixed colours for the references, so every plot reads the same way.
_REFERENCE_COLOURS = {"truth": "#111111", "input": "#9a9a9a"}
# Overlay colours (RGB 0-1): truth boundaries green, the column's own magenta.
_TRUTH_EDGE = np.array([0.0, 1.0, 0.0])
_OWN_EDGE = np.array([1.0, 0.0, 1.0])


def name_colours(names: Sequence[str]) -> dict[str, str]:
    """One hex colour per name: truth black, input grey, the others tab10 in order."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cycle = colormaps["tab10"].colors
    methods = [n for n in names if n not in _REFERENCE_COLOURS]
    colours = {n: to_hex(cycle[i % len(cycle)]) for i, n in enumerate(methods)}
    return {n: _REFERENCE_COLOURS.get(n) or colours[n] for n in names}


def line_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    colours: Mapping[str, str],
    title: str,
    xlabel: str,
    ylabel: str,
    threshold: float | None = None,
) -> str:
    """A line per named (x, y) curve on one axis, as base64 PNG text.

    Parameters
    ----------
    curves : mapping of str to (x, y)
        Name -> its curve; drawn in ``colours[name]``, the references
        (truth, input) thicker and dashed respectively.
    title, xlabel, ylabel : str
        Labels of the axis.
    threshold : float, optional
        A dotted horizontal line (e.g. the FRC 1/7 criterion).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.5), dpi=120, constrained_layout=True)
    try:
        for name, (x, y) in curves.items():
            ax.plot(
                x,
                y,
                color=colours[name],
                label=name,
                linewidth=2.2 if name == "truth" else 1.4,
                linestyle="--" if name == "input" else "-",
            )
        if threshold is not None:
            ax.axhline(threshold, color="#777777", linestyle=":", linewidth=1)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.25)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8, frameon=False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _colourise(values: np.ndarray, vmax: float) -> np.ndarray:
    from matplotlib import colormaps

    scaled = np.clip(values / vmax, 0.0, 1.0)
    return (colormaps[ERROR_COLOURMAP](scaled)[..., :3] * 255).round().astype(np.uint8)


def error_maps(
    planes: Mapping[str, np.ndarray], truth: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
    """``|plane - truth|`` of each plane as RGB on one shared colour scale.

    Parameters
    ----------
    planes : mapping of str to numpy.ndarray
        Name -> 2D plane, each the shape of ``truth``.
    truth : numpy.ndarray
        The reference plane.

    Returns
    -------
    images : dict of str to numpy.ndarray
        Name -> (H, W, 3) uint8 error map.
    mean_errors : dict of str to float
        Name -> mean absolute error.
    vmax : float
        The error shown brightest (the 99.5th percentile over all maps, so a
        few outliers do not darken the rest); at least 1.
    """
    errors = {n: np.abs(p.astype(np.float64) - truth.astype(np.float64)) for n, p in planes.items()}
    if not errors:
        return {}, {}, 1.0
    pooled = np.concatenate([e.ravel() for e in errors.values()])
    vmax = max(1.0, float(np.percentile(pooled, 99.5)))
    images = {n: _colourise(e, vmax) for n, e in errors.items()}
    return images, {n: float(e.mean()) for n, e in errors.items()}, vmax


def colour_bar(width: int = 256, height: int = 10) -> np.ndarray:
    """The error colour scale, low to high left to right, as (height, width, 3) uint8."""
    return np.repeat(_colourise(np.linspace(0.0, 1.0, width), 1.0)[None], height, axis=0)


def boundary_overlay(
    grey: np.ndarray, labels: np.ndarray | None, truth_labels: np.ndarray | None
) -> np.ndarray:
    """Segment boundaries drawn over a dimmed grey plane, as (H, W, 3) uint8.

    ``labels``' boundaries are magenta, ``truth_labels``' green, and where
    both fall on the same pixel it is white; either may be None (not drawn).
    """
    from skimage.segmentation import find_boundaries

    grey = grey.astype(np.float64)
    lo, hi = float(grey.min()), float(grey.max())
    # Dimmed, so that the coloured boundaries stand out on bright membranes too.
    rgb = np.repeat((0.7 * (grey - lo) / max(hi - lo, 1e-12))[..., None], 3, axis=-1)
    none = np.zeros(grey.shape, dtype=bool)
    own = none if labels is None else find_boundaries(labels, mode="inner")
    truth = none if truth_labels is None else find_boundaries(truth_labels, mode="inner")
    rgb[own] = _OWN_EDGE
    rgb[truth] = _TRUTH_EDGE
    rgb[own & truth] = 1.0
    return (rgb * 255).round().astype(np.uint8)
