"""A synthetic EM-like phantom, used only when no real data is available.

It is clearly labelled as synthetic wherever it is used: quality claims are
made on real data only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["em_phantom"]


def em_phantom(
    shape: tuple[int, int, int] = (96, 96, 96),
    *,
    num_cells: int = 60,
    num_vesicles: int = 300,
    noise_sigma: float = 8.0,
    rng: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Neuropil-like volume: cells with dark membranes, dark organelles, noise.

    Parameters
    ----------
    shape : tuple of int
        (Z, Y, X) in isotropic voxels.
    num_cells : int
        Voronoi cells whose boundaries become membranes.
    num_vesicles : int
        Small dark spheres (vesicles, mitochondria cross-sections).
    noise_sigma : float
        Gaussian noise standard deviation in grey levels.
    rng : int or numpy.random.Generator, optional
        Seed or generator; the same seed gives the same phantom.

    Returns
    -------
    numpy.ndarray of uint8, shape (Z, Y, X)
    """
    rng = np.random.default_rng(rng)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    seeds = rng.random((num_cells, 3)) * np.array(shape)
    labels = cKDTree(seeds).query(grid.reshape(-1, 3))[1].reshape(shape)
    membranes = np.zeros(shape, dtype=bool)
    for axis in range(3):
        edge = np.diff(labels, axis=axis) != 0
        pad = [(0, 0)] * 3
        pad[axis] = (0, 1)
        membranes |= np.pad(edge, pad)
    membranes = ndimage.binary_dilation(membranes, iterations=1)
    cell_tone = rng.uniform(150, 200, num_cells)[labels]
    image = np.where(membranes, 60.0, cell_tone)
    centres = rng.random((num_vesicles, 3)) * np.array(shape)
    radii = rng.uniform(1.5, 4.0, num_vesicles)
    dist, idx = cKDTree(centres).query(grid.reshape(-1, 3))
    inside = (dist < radii[idx]).reshape(shape)
    image[inside] = 90.0
    image = ndimage.gaussian_filter(image, 1.0)
    image += rng.normal(0.0, noise_sigma, shape)
    return np.clip(image, 0, 255).astype(np.uint8)
