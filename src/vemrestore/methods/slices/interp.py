"""Classical slice restoration: linear interpolation along z and optical-flow interpolation.

Both fill only the pixels marked in a mask and work on a block (Z, Y, X)
that contains the slices bounding every run of damaged slices (see
``SliceDamageMap.z_extent``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.registration import optical_flow_tvl1
from skimage.transform import warp

__all__ = [
    "FLOW_MARGIN",
    "MIN_FLOW_WINDOW",
    "FlowOptions",
    "damaged_runs",
    "fill_flow",
    "fill_linear",
    "interpolate_flow",
    "runs_meeting",
]


def damaged_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each maximal run of consecutive slices with a masked pixel.

    Parameters
    ----------
    mask : numpy.ndarray of bool, shape (Z, Y, X)

    Returns
    -------
    list of (int, int)
        Half-open ranges, in increasing order.
    """
    flags = np.asarray(mask).reshape(mask.shape[0], -1).any(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def runs_meeting(mask: np.ndarray, z_out: slice) -> list[tuple[int, int]]:
    """The ``damaged_runs`` of ``mask`` with a slice in ``z_out`` (indices into ``mask``)."""
    return [(a, b) for a, b in damaged_runs(mask) if a < z_out.stop and b > z_out.start]


def fill_linear(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace masked voxels by linear interpolation along z between the nearest known voxels.

    Each masked voxel takes the distance-weighted mean of the nearest known
    voxel above and below it in its (y, x) column; with a known voxel on one
    side only it takes that value. A column with no known voxel takes the
    mean of all known voxels (0 if there are none).

    Parameters
    ----------
    block : numpy.ndarray, shape (Z, Y, X)
    mask : numpy.ndarray of bool, shape (Z, Y, X)
        True where a voxel is to be replaced.

    Returns
    -------
    numpy.ndarray of float32, shape (Z, Y, X)
        Known voxels are copied unchanged.

    Examples
    --------
    >>> block = np.stack([np.zeros((2, 2)), np.full((2, 2), 7.0), np.full((2, 2), 4.0)])
    >>> mask = np.zeros(block.shape, bool); mask[1] = True
    >>> fill_linear(block, mask)[1]
    array([[2., 2.],
           [2., 2.]], dtype=float32)
    """
    out = np.array(block, dtype=np.float32, copy=True)
    masked_slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if masked_slices.size == 0:
        return out
    known = ~mask
    fallback = np.float32(out[known].mean()) if known.any() else np.float32(0.0)
    plane = out.shape[1:]
    # Sweep down, then up, remembering the last known value and its slice per column.
    sweeps = {}
    for direction, order in (("above", range(out.shape[0])), ("below", range(out.shape[0])[::-1])):
        value = np.zeros(plane, np.float32)
        where = np.full(plane, -1, np.int64)
        found = {}
        for z in order:
            if mask[z].any():
                found[z] = (value.copy(), where.copy())
            value = np.where(known[z], out[z], value)
            where = np.where(known[z], z, where)
        sweeps[direction] = found
    for z in masked_slices.tolist():
        va, za = sweeps["above"][z]
        vb, zb = sweeps["below"][z]
        has_a, has_b = za >= 0, zb >= 0
        span = np.where(has_a & has_b, zb - za, 1).astype(np.float32)
        w_b = np.where(has_a & has_b, (z - za) / span, np.where(has_b, 1.0, 0.0)).astype(np.float32)
        estimate = (1 - w_b) * va + w_b * vb
        estimate = np.where(has_a | has_b, estimate, fallback)
        out[z] = np.where(mask[z], estimate, out[z])
    return out


# Pixels of context around a damaged region that its flow is estimated on.
FLOW_MARGIN = 32
# The least side of a flow window. TV-L1 works coarse to fine on a pyramid
# halved down to about 32 px, so its reach grows with the image: windows of
# 64-100 px lost motions of 9 px that whole sections follow, and on ISBI's
# 512 px sections 256 px windows cost 0.1 dB (benchmarks/flow_windows_bench.py).
# Sections up to this size are thus never split.
MIN_FLOW_WINDOW = 512


@dataclass(frozen=True)
class FlowOptions:
    """Keyword options of scikit-image's TV-L1 flow (``skimage.registration.optical_flow_tvl1``).

    Intensities are scaled to [0, 1] by the 1st and 99th percentiles of the
    two images before the flow is estimated, so the defaults suit any input range.
    """

    attachment: float = 15.0
    tightness: float = 0.3
    num_warp: int = 5
    num_iter: int = 10
    tol: float = 1e-4
    prefilter: bool = False


def interpolate_flow(
    above: np.ndarray,
    below: np.ndarray,
    positions: np.ndarray,
    *,
    options: FlowOptions = FlowOptions(),
) -> np.ndarray:
    """Motion-compensated interpolation between two sections.

    The TV-L1 flow ``v`` from ``above`` (reference) to ``below`` (moving),
    ``above(p) ~ below(p + v(p))``, is estimated once; the section at
    fraction ``s`` of the way is ``(1 - s) above(x - s v) + s below(x + (1 - s) v)``.

    Parameters
    ----------
    above, below : numpy.ndarray, shape (Y, X)
        The known sections bounding the gap.
    positions : numpy.ndarray of float, shape (G,)
        Fractions in (0, 1) of the sections to produce (1/2 for a single
        missing section; 1/3 and 2/3 for two).
    options : FlowOptions

    Returns
    -------
    numpy.ndarray of float32, shape (G, Y, X)

    References
    ----------
    Zach, C., Pock, T. & Bischof, H. A duality based approach for realtime
    TV-L1 optical flow. DAGM (2007). :doi:`10.1007/978-3-540-74936-3_22`
    """
    above = np.asarray(above, dtype=np.float32)
    below = np.asarray(below, dtype=np.float32)
    low, high = np.percentile(np.stack([above, below]), [1, 99])
    scale = np.float32(1.0 / (high - low)) if high > low else np.float32(1.0)
    flow = optical_flow_tvl1(
        (above - low) * scale, (below - low) * scale, **asdict(options), dtype=np.float32
    )
    grid = np.stack(
        np.meshgrid(*(np.arange(n, dtype=np.float32) for n in above.shape), indexing="ij")
    )
    out = np.empty((len(positions), *above.shape), np.float32)
    for i, s in enumerate(np.asarray(positions, dtype=np.float32)):
        from_above = warp(above, grid - s * flow, order=1, mode="edge", preserve_range=True)
        from_below = warp(below, grid + (1 - s) * flow, order=1, mode="edge", preserve_range=True)
        out[i] = (1 - s) * from_above + s * from_below
    return out


def _nearest_known(mask: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The nearest known section above and below each voxel of sections ``start:stop``.

    ``start - 1`` and ``stop`` must be known sections (a ``damaged_runs`` run).

    Returns
    -------
    above, below : numpy.ndarray of int, shape (stop - start, Y, X)
        Section indices into ``mask``; meaningful where ``mask`` is True.
    """
    run = mask[start:stop]
    above = np.empty(run.shape, np.int64)
    below = np.empty(run.shape, np.int64)
    last = np.full(run.shape[1:], start - 1)
    for i, section in enumerate(run):
        above[i] = last
        last = np.where(section, last, start + i)
    last = np.full(run.shape[1:], stop)
    for i in range(len(run) - 1, -1, -1):
        below[i] = last
        last = np.where(run[i], last, start + i)
    return above, below


def _at_least(span: slice, size: int, length: int) -> slice:
    """``span`` of ``range(length)`` widened about its centre to ``size`` (at most ``length``)."""
    size = min(size, length)
    if span.stop - span.start >= size:
        return span
    start = min(max(0, (span.start + span.stop - size) // 2), length - size)
    return slice(start, start + size)


def _flow_windows(
    footprint: np.ndarray, margin: int | None, min_size: int
) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """Windows (y, x) whose flows cover ``footprint`` (Y, X), each with its part of it.

    A window is the bounding box of one connected part of ``footprint`` grown
    by ``margin`` pixels on every side (parts at most ``2 * margin`` pixels
    apart share one), then widened to ``min_size`` pixels where it is
    smaller; ``None``: one window, the whole section. Windows may overlap;
    their parts do not.
    """
    if margin is None:
        return [((slice(None), slice(None)), footprint)]
    if margin < 0:
        raise ValueError(f"margin={margin}: give a non-negative number of pixels, or None")
    labels, _ = ndi.label(ndi.maximum_filter(footprint, size=2 * margin + 1))
    windows = []
    for part, box in enumerate(ndi.find_objects(labels), start=1):
        window = tuple(_at_least(s, min_size, n) for s, n in zip(box, footprint.shape, strict=True))
        windows.append((window, footprint[window] & (labels[window] == part)))
    return windows


def fill_flow(
    block: np.ndarray,
    mask: np.ndarray,
    z_out: slice,
    *,
    options: FlowOptions = FlowOptions(),
    margin: int | None = FLOW_MARGIN,
    min_window: int = MIN_FLOW_WINDOW,
) -> np.ndarray:
    """Replace masked voxels by optical-flow interpolation between the nearest known sections.

    Each masked voxel of a run of ``runs_meeting(mask, z_out)`` with a known
    section on both sides is interpolated along the flow between the nearest
    sections in which its own (y, x) is known (``interpolate_flow``, one flow
    per pair of sections, estimated on ``fill_linear``'s output so that the
    order of the pairs does not matter): a missing section takes the sections
    bounding the run, a damaged region the sections next to it, as
    ``fill_linear`` does. A flow is estimated on a window around each damaged
    region, ``margin`` pixels wider on every side and at least
    ``min_window`` pixels wide, so on large sections its cost follows the
    damaged area, not the section's (a missing section's window is the whole
    section, and so is any window of a section up to ``min_window`` wide).
    The other masked voxels (runs at the top or bottom of the block, or
    outside ``z_out``) take ``fill_linear``'s values.

    Parameters
    ----------
    block : numpy.ndarray, shape (Z, Y, X)
    mask : numpy.ndarray of bool, shape (Z, Y, X)
        True where a voxel is to be replaced.
    z_out : slice
        The sections whose runs are interpolated along the flow.
    options : FlowOptions
    margin : int or None
        Context around each damaged region, in pixels; ``None`` estimates
        every flow on whole sections.
    min_window : int
        The least side of a window, in pixels.

    Returns
    -------
    numpy.ndarray of float32, shape (Z, Y, X)
        Known voxels are copied unchanged.
    """
    linear = fill_linear(block, mask)
    out = linear.copy()
    for a, b in runs_meeting(mask, z_out):
        if a == 0 or b == block.shape[0]:
            continue
        above, below = _nearest_known(mask, a, b)
        run = mask[a:b]
        for p, q in np.unique(np.stack([above[run], below[run]], axis=1), axis=0):
            pair = run & (above == p) & (below == q)
            for window, part in _flow_windows(pair.any(axis=0), margin, min_window):
                here = pair[(slice(None), *window)] & part
                sections = np.flatnonzero(here.reshape(len(run), -1).any(axis=1))
                positions = (sections + a - p) / (q - p)
                frames = interpolate_flow(
                    linear[p][window], linear[q][window], positions, options=options
                )
                for i, frame in zip(sections, frames, strict=True):
                    out[a + i][window][here[i]] = frame[here[i]]
    return out
