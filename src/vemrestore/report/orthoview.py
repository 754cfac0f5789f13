"""Orthogonal views (XY, XZ, YZ) of several volumes side by side, as a PNG."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["save_orthoview"]


def save_orthoview(
    panels: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    position: tuple[int, int, int] | None = None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Save a grid of XY / XZ / YZ planes (rows) for each named volume (columns).

    All volumes must be on the same (isotropic) grid, shape (Z, Y, X); show an
    anisotropic input by first upsampling it (e.g. nearest) so geometry matches.

    Parameters
    ----------
    panels : mapping of str to numpy.ndarray
        Column title -> volume.
    path : str or Path
        PNG to write.
    position : tuple of int, optional
        (z, y, x) of the planes; default the centre.
    vmin, vmax : float, optional
        Shared grey range; default the 0.5 and 99.5 percentiles of the first panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = list(panels.values())
    shape = volumes[0].shape
    if any(v.shape != shape for v in volumes):
        raise ValueError(f"orthoview panels differ in shape: {[v.shape for v in volumes]}")
    z, y, x = position or tuple(s // 2 for s in shape)
    if vmin is None or vmax is None:
        lo, hi = np.percentile(volumes[0], [0.5, 99.5])
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    rows = {"XY": lambda v: v[z], "XZ": lambda v: v[:, y, :], "YZ": lambda v: v[:, :, x]}
    fig, axes = plt.subplots(
        3, len(panels), figsize=(2.6 * len(panels), 7.8), squeeze=False, constrained_layout=True
    )
    for col, (name, vol) in enumerate(panels.items()):
        for row, (plane, cut) in enumerate(rows.items()):
            ax = axes[row, col]
            ax.imshow(cut(vol), cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(plane)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
