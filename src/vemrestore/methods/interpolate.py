"""Classical axial upsampling baselines: nearest, linear, cubic spline, Lanczos.

All four place section ``i`` at its true centre ``(i + 0.5) k - 0.5`` on the
fine grid (see ``vemrestore.degrade.AxialGrid``), so they are exact for
integer and non-integer factors and agree with the forward model. Beyond the
first and last centres the edge value is held.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from scipy.interpolate import make_interp_spline

from vemrestore.degrade._grid import AxialGrid
from vemrestore.io._volume import Volume
from vemrestore.methods._base import (
    RESTORED,
    AxialConfig,
    AxialMethod,
    BlockRequest,
    register_method,
)

__all__ = ["AxialInterpolation", "InterpolationConfig", "upsample_axial"]

Kind = Literal["nearest", "linear", "cubic", "lanczos"]
LANCZOS_LOBES = 3
# Sections of context each side of a block: the cubic spline's influence decays
# by ~0.27 per knot, so 10 knots leave < 1e-5 of a boundary effect.
_HALO_SECTIONS = {"nearest": 1, "linear": 1, "cubic": 10, "lanczos": LANCZOS_LOBES}


def upsample_axial(
    sections: np.ndarray,
    scale_factor: float,
    *,
    kind: Kind = "cubic",
    axis: int = 0,
    fine_start: int = 0,
    num_fine: int | None = None,
    section_start: int = 0,
) -> np.ndarray:
    """Interpolate thick sections onto the fine grid along ``axis``.

    Parameters
    ----------
    sections : numpy.ndarray
        Sections stacked along ``axis`` (any number of other axes).
    scale_factor : float
        Section thickness in fine slices (> 1, may be non-integer).
    kind : {"nearest", "linear", "cubic", "lanczos"}
        Interpolation kernel (cubic = not-a-knot cubic spline, Lanczos a=3).
    axis : int
        Axis along which the sections are stacked.
    fine_start, num_fine : int
        Fine slices ``fine_start .. fine_start + num_fine - 1`` of the whole
        volume are produced; default: all ``round(m * scale_factor)``.
    section_start : int
        Index, in the whole volume, of ``sections``'s first section (blocks).

    Returns
    -------
    numpy.ndarray of float32
    """
    moved = np.moveaxis(np.asarray(sections, dtype=np.float32), axis, 0)
    m = moved.shape[0]
    grid = AxialGrid(scale_factor)
    if num_fine is None:
        num_fine = grid.num_fine(section_start + m) - fine_start
    u = grid.to_section(np.arange(fine_start, fine_start + num_fine))
    u = np.clip(u - section_start, 0.0, m - 1.0)
    if kind == "nearest":
        out = moved[np.floor(u + 0.5).astype(np.intp)]
    elif kind == "linear":
        lo = np.minimum(np.floor(u).astype(np.intp), m - 1)
        hi = np.minimum(lo + 1, m - 1)
        w = (u - lo).astype(np.float32).reshape((-1,) + (1,) * (moved.ndim - 1))
        out = moved[lo] * (1 - w) + moved[hi] * w
    elif kind == "cubic":
        if m < 4:
            return upsample_axial(
                sections,
                scale_factor,
                kind="linear",
                axis=axis,
                fine_start=fine_start,
                num_fine=num_fine,
                section_start=section_start,
            )
        spline = make_interp_spline(np.arange(m), moved, k=3, axis=0)
        out = spline(u)
    elif kind == "lanczos":
        out = _lanczos(moved, u)
    else:
        raise ValueError(f"unknown interpolation kind {kind!r}")
    return np.moveaxis(out.astype(np.float32, copy=False), 0, axis)


def _lanczos(moved: np.ndarray, u: np.ndarray) -> np.ndarray:
    m = moved.shape[0]
    a = LANCZOS_LOBES
    base = np.floor(u).astype(np.intp)
    taps = base[:, None] + np.arange(-a + 1, a + 1)[None, :]
    d = u[:, None] - taps
    weights = np.sinc(d) * np.sinc(d / a)
    weights /= weights.sum(axis=1, keepdims=True)
    taps = np.clip(taps, 0, m - 1)  # hold edge values
    out = np.zeros((u.size, *moved.shape[1:]), dtype=np.float32)
    for t in range(taps.shape[1]):
        w = weights[:, t].astype(np.float32).reshape((-1,) + (1,) * (moved.ndim - 1))
        out += w * moved[taps[:, t]]
    return out


class InterpolationConfig(AxialConfig):
    """Config of the classical baselines; ``method`` is the kernel name."""

    method: Kind


class AxialInterpolation(AxialMethod):
    """Upsample along z by interpolation between section centres (no training)."""

    name = "interpolation"
    config: InterpolationConfig

    def __init__(self, config: InterpolationConfig) -> None:
        self.config = config

    def fit(self, volume: Volume) -> AxialInterpolation:
        return self

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        zs, ys, xs = output_region
        sections = self.grid.sections_for(
            zs.start,
            zs.stop,
            halo_sections=_HALO_SECTIONS[self.config.method],
            num_sections=input_shape[0],
        )
        return (sections, ys, xs)

    outputs = (RESTORED,)

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        zs, ys, xs = request.output_region
        z0, y0, x0 = request.input_start
        out = upsample_axial(
            block,
            self.config.scale_factor,
            kind=self.config.method,
            fine_start=zs.start,
            num_fine=zs.stop - zs.start,
            section_start=z0,
        )
        return {RESTORED: out[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(self.config.model_dump_json(indent=2))


for _kind in ("nearest", "linear", "cubic", "lanczos"):
    register_method(_kind, InterpolationConfig)(AxialInterpolation)
