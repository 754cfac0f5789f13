"""The geometry every slice restorer shares: output = input, damaged voxels replaced."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.methods._base import RESTORED, BlockRequest
from vemrestore.methods.slices.config import SliceConfig
from vemrestore.methods.slices.damage import SliceDamageMap

__all__ = ["SliceMethod"]


class SliceMethod:
    """Output = input, with the damaged voxels replaced by ``_restore``.

    A subclass gives the lateral context (``halo``) and ``_restore``. The
    damage (which voxels to restore) is attached with ``set_damage`` before
    prediction; it travels with the method when pickled.

    Attributes
    ----------
    damage : SliceDamageMap or None
        The voxels to restore (None until ``set_damage``).
    context : int
        Sections of context each side of a run (beyond its bounding sections).
    """

    name: ClassVar[str]
    config: SliceConfig
    damage: SliceDamageMap | None = None
    context: int = 1

    @property
    def halo(self) -> int:
        """Pixels of context each side of a block in y and x."""
        raise NotImplementedError

    @property
    def lateral_multiple(self) -> int:
        """Blocks start in y and x on multiples of this (a network's pooling grid)."""
        return 1

    @property
    def outputs(self) -> tuple[str, ...]:
        """The restoration only."""
        return (RESTORED,)

    def set_damage(self, damage: SliceDamageMap) -> None:
        """Attach the map of voxels to restore (absolute indices of the whole stack)."""
        self.damage = damage

    def run_fingerprint(self) -> dict[str, str | None]:
        """The damage map's digest, so a resumed engine run restores the same voxels."""
        return {"damage": None if self.damage is None else self.damage.digest()}

    def _require_damage(self, input_shape: tuple[int, ...]) -> SliceDamageMap:
        if self.damage is None:
            raise UserInputError(
                f"{self.name} has no damage map (call set_damage(SliceDamageMap.build(...)) "
                "or use prepare_slices)"
            )
        if tuple(input_shape) != self.damage.shape:
            raise UserInputError(
                f"the damage map is for shape {self.damage.shape}, the input has shape "
                f"{tuple(input_shape)} (build the map for this volume)"
            )
        return self.damage

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(int(n) for n in input_shape)  # type: ignore[return-value]

    def output_voxel_size(
        self, voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        return tuple(voxel_size)  # type: ignore[return-value]

    def output_translation(
        self, translation: tuple[float, float, float], voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        """Sections are restored in place: the input's own position."""
        return tuple(translation)  # type: ignore[return-value]

    def _lateral_start(self, start: int) -> int:
        multiple = self.lateral_multiple
        return max(start - self.halo, 0) // multiple * multiple

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        """The output region, the sections its damaged runs need, and the XY halo."""
        damage = self._require_damage(input_shape)
        zs, ys, xs = output_region
        z_lo, z_hi = damage.z_extent(zs.start, zs.stop, self.context)
        halo = self.halo
        return (
            slice(z_lo, z_hi),
            slice(self._lateral_start(ys.start), min(input_shape[1], ys.stop + halo)),
            slice(self._lateral_start(xs.start), min(input_shape[2], xs.stop + halo)),
        )

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        """Copy the output region of ``block``, restoring its damaged voxels.

        Parameters
        ----------
        block : numpy.ndarray, shape (Z, Y, X)
            Input covering ``input_region(request.output_region, ...)``,
            starting at ``request.input_start``.
        request : BlockRequest

        Returns
        -------
        dict
            ``"restored"``: numpy.ndarray of float32, shape
            ``request.output_shape``; undamaged voxels equal the input exactly.
        """
        if self.damage is None:
            self._require_damage(block.shape)
        origin = request.input_start
        region = tuple(slice(o, o + n) for o, n in zip(origin, block.shape, strict=True))
        mask = self.damage.region_mask(region)  # type: ignore[union-attr, arg-type]
        crop = tuple(
            slice(s.start - o, s.stop - o)
            for s, o in zip(request.output_region, origin, strict=True)
        )
        out = np.array(block[crop], dtype=np.float32)
        out_mask = mask[crop]
        if out_mask.any():
            block = np.asarray(block, dtype=np.float32)
            restored = self._restore(block, mask, origin, crop[0])
            out[out_mask] = restored[crop][out_mask]
        return {RESTORED: out}

    def _restore(
        self, block: np.ndarray, mask: np.ndarray, origin: tuple[int, ...], z_out: slice
    ) -> np.ndarray:
        """``block`` with the masked voxels of the runs meeting ``z_out`` restored."""
        raise NotImplementedError
