"""A saved model as a tile-to-tile torch module, the sizes it takes, and a test tile.

``tile_model`` turns a loaded skeleton or lateral method into the module of
``_torchscript`` plus the keyword arguments that rebuild it; ``TileGeometry``
says which tile sizes the module takes and what it returns (the sizes
bioimage.io describes); ``test_tile`` cuts a tile from a real volume and
``reference_output`` restores it the way ``vemrestore predict`` does (the
method's ``predict_block`` on the whole tile, on the CPU in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.io import Volume
from vemrestore.methods import RESTORED, BlockRequest, Method

__all__ = ["TileGeometry", "TileModel", "reference_output", "test_tile", "tile_model"]

# Methods that can be exported, by registered name.
EXPORTABLE = ("skeleton", "lateral")
# Default tile: sections (skeleton) or slices (lateral) along z, pixels along y and x.
_DEFAULT_TILE = {"skeleton": (16, 64, 64), "lateral": (2, 64, 64)}


@dataclass(frozen=True)
class TileGeometry:
    """Tile sizes a module takes and the size of what it returns.

    Attributes
    ----------
    axial_factor : float
        Output slices per input section along z (1 for lateral models).
    lateral_factor : int
        Output pixels per input pixel along y and x (1 for axial models).
    minimum, step : tuple of int
        Input sizes (z, y, x) the module takes: ``minimum + n * step``.
    halo : tuple of int
        Output voxels (z, y, x) each side of a tile that lack context (0: none).
    """

    axial_factor: float
    lateral_factor: int
    minimum: tuple[int, int, int]
    step: tuple[int, int, int]
    halo: tuple[int, int, int]

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Output (Z, Y, X) of an input tile of ``shape``."""
        z, y, x = shape
        f = self.lateral_factor
        return (round(z * self.axial_factor), y * f, x * f)

    def check_tile(self, shape: tuple[int, int, int]) -> None:
        """Refuse a tile the module does not take (one line naming the sizes it takes)."""
        for axis, size, low, step in zip("zyx", shape, self.minimum, self.step, strict=True):
            if size < low or (size - low) % step:
                every = "" if step == 1 else f" in steps of {step}"
                raise UserInputError(
                    f"--tile {' '.join(map(str, shape))}: {axis} must be at least {low}{every} "
                    f"for this model, got {size}"
                )


@dataclass
class TileModel:
    """A method as a tile module.

    Attributes
    ----------
    kind : str
        ``"skeleton"`` or ``"lateral"``.
    module : torch.nn.Module
        ``SkeletonTile`` or ``LateralTile`` holding the trained network, eval mode.
    callable_name : str
        The class name, importable from ``vemrestore.export``.
    kwargs : dict
        JSON-ready arguments that rebuild ``module`` (then load its state dict).
    geometry : TileGeometry
    """

    kind: str
    module: Any
    callable_name: str
    kwargs: dict[str, Any]
    geometry: TileGeometry


def _denominator(scale_factor: float) -> int:
    """Smallest ``q`` with ``q * scale_factor`` whole, so tiles of ``q`` sections map exactly."""
    ratio = Fraction(scale_factor).limit_denominator(64)
    if not math.isclose(float(ratio), scale_factor, rel_tol=0.0, abs_tol=1e-9):
        raise UserInputError(
            f"a bioimage.io package needs an axial factor that is a fraction with a denominator "
            f"up to 64 (so whole tiles map to whole slices), got {scale_factor:g}"
        )
    return ratio.denominator


def _skeleton(method: Any) -> TileModel:
    from vemrestore.export._torchscript import SkeletonTile

    cfg = method.config
    norm = method.require_normalization()
    network = dict(method.model.config)
    kwargs = {
        "network": network,
        "scale_factor": float(cfg.scale_factor),
        "context_planes": cfg.context_planes,
        "factor_input": cfg.factor_input,
        "fusion": cfg.fusion,
        "low": norm.low,
        "high": norm.high,
        "batch_size": cfg.inference.batch_size,
    }
    k, halo = float(cfg.scale_factor), cfg.inference.halo
    q = _denominator(k)
    period = round(q * k)  # fine slices in q sections
    halo_z = period * math.ceil(halo / period) if halo else 0
    sections = max(4, math.ceil((2 * halo_z + 1) / k))
    side = max(2 * halo + 1, method.plane_multiple)
    geometry = TileGeometry(
        axial_factor=k,
        lateral_factor=1,
        minimum=(q * math.ceil(sections / q), side, side),
        step=(q, 1, 1),
        halo=(halo_z, halo, halo),
    )
    module = _loaded(SkeletonTile, kwargs, method.model)
    return TileModel("skeleton", module, "SkeletonTile", kwargs, geometry)


def _lateral(method: Any) -> TileModel:
    from vemrestore.export._torchscript import LateralTile

    cfg = method.config
    method.require_trained()
    input_norm, output_norm = method.input_norm, method.output_norm
    kwargs = {
        "network": dict(method.model.config),
        "input_low": input_norm.low,
        "input_high": input_norm.high,
        "output_low": output_norm.low,
        "output_high": output_norm.high,
        "batch_size": cfg.inference.batch_size,
    }
    f, halo = cfg.scale_factor, method.halo
    # The traced wavelet gate mirrors its borders by up to 2**levels pixels: longer planes.
    side = max(2 * halo + 1, 2**cfg.num_wavelet_levels + 1, cfg.window_size)
    geometry = TileGeometry(
        axial_factor=1.0,
        lateral_factor=f,
        minimum=(1, side, side),
        step=(1, 1, 1),
        halo=(0, f * halo, f * halo),
    )
    module = _loaded(LateralTile, kwargs, method.model)
    return TileModel("lateral", module, "LateralTile", kwargs, geometry)


def _loaded(cls: Any, kwargs: dict[str, Any], network: Any) -> Any:
    """``cls(**kwargs)`` holding a copy of the trained ``network``'s weights, in eval mode."""
    module = cls(**kwargs)
    module.net.load_state_dict(network.state_dict())
    return module.cpu().eval()


def tile_model(method: Method) -> TileModel:
    """The tile module of a trained skeleton or lateral method.

    Raises
    ------
    UserInputError
        For another method (only ``EXPORTABLE`` ones are).
    """
    name = getattr(method, "name", type(method).__name__)
    if name == "skeleton":
        return _skeleton(method)
    if name == "lateral":
        return _lateral(method)
    raise UserInputError(
        f"bioimage.io export supports {' and '.join(EXPORTABLE)} models, got a {name} model "
        "(train one with `vemrestore train skeleton` or `vemrestore train lateral`)"
    )


def test_tile(
    volume: Volume, model: TileModel, tile: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Cut a tile from the centre of ``volume`` (float32) and return it with its region.

    ``tile`` defaults to a small tile the module takes (grown to its minimum).

    Raises
    ------
    UserInputError
        If the tile is not one the module takes or does not fit in the volume.
    """
    geometry = model.geometry
    if tile is None:
        tile = tuple(  # type: ignore[assignment]
            low + step * max(0, math.ceil((want - low) / step))
            for want, low, step in zip(
                _DEFAULT_TILE[model.kind], geometry.minimum, geometry.step, strict=True
            )
        )
    assert tile is not None
    geometry.check_tile(tile)
    if any(t > s for t, s in zip(tile, volume.shape, strict=True)):
        raise UserInputError(
            f"the test tile {tuple(tile)} (z, y, x) does not fit in the test input of shape "
            f"{volume.shape} (pass a larger --test-input or a smaller --tile)"
        )
    region = tuple(
        slice((s - t) // 2, (s - t) // 2 + t) for t, s in zip(tile, volume.shape, strict=True)
    )
    return np.asarray(volume.data[region], dtype=np.float32), region  # type: ignore[return-value]


def reference_output(method: Any, tile: np.ndarray) -> np.ndarray:
    """What ``vemrestore predict`` writes for a volume that is ``tile``, as float32.

    One ``predict_block`` call on the whole tile (a tile within one engine
    block), on the CPU without mixed precision.
    """
    cpu = method.with_inference(device="cpu", amp=False)
    shape = cpu.output_shape(tile.shape)
    request = BlockRequest((0, 0, 0), tuple(slice(0, s) for s in shape))  # type: ignore[arg-type]
    return np.asarray(cpu.predict_block(tile, request)[RESTORED], dtype=np.float32)
