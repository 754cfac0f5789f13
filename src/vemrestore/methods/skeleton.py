"""Self-supervised isotropic reconstruction with a 2D U-Net ("skeleton").

The lateral (XY) sections of an anisotropic stack are sharp along y and x.
Degrading their rows with the axial forward model (``AxialSectioning``, same
factor and slice profile) and upsampling back with cubic interpolation gives
pairs (cubic, sharp) whose geometry matches an XZ or YZ plane of the
cubic-upsampled volume. A U-Net learns the residual ``sharp - cubic`` on
random XY patches (with flips and 90-degree rotations applied before the
degradation, so the degraded axis is either lateral axis) and is then applied
to every XZ and every YZ plane; the two predictions are fused.

The idea follows isotropic CARE (Weigert et al. 2017, doi:10.1007/978-3-319-66179-7_15;
Weigert et al. 2018, doi:10.1038/s41592-018-0216-7).
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal, Unpack

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from vemrestore.degrade._axial import AxialSectioning
from vemrestore.degrade._grid import AxialGrid
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import (
    RESTORED,
    XZ,
    YZ,
    AxialConfig,
    AxialMethod,
    BlockRequest,
    register_method,
)
from vemrestore.methods._trained import ArraySampler, FitOptions, NormalizedMethod, TrainedConfig
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.methods.priors import apply_prior, warn_outside_factors
from vemrestore.models.unet2d import UNet2D, pad_to_multiple
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import fixed_validation, holdout_sections, pixel_loss

__all__ = [
    "PairSampler",
    "PlaneMethod",
    "Skeleton",
    "SkeletonConfig",
    "check_patch_fits_unet",
    "context_range",
    "factor_code",
    "fine_block",
    "fine_window",
    "with_factor_channel",
]


class SkeletonConfig(TrainedConfig, AxialConfig):
    """Options of the skeleton method.

    Attributes
    ----------
    base_channels, depth : int
        U-Net width (channels at its first level) and number of down-samplings.
    space_to_depth : int
        Pixels folded into channels each way before the U-Net (``UNet2D``):
        2 runs every level at half resolution, about 3x faster.
    factor_input : bool
        Feed ``factor_code(scale_factor)`` as one more, constant input channel,
        so that one network restores any factor (the shipped prior does).
    prior : str or None
        Start training from these weights instead of random ones: ``"shipped"``
        (the prior inside the package) or the path of a prior's ``.pt`` file
        with its ``.json`` record beside it. Its architecture options must
        match this config's.
    context_planes : int
        0 gives a 2D network; ``n`` feeds ``2n + 1`` planes as channels: the
        neighbouring XY sections at training time, and the neighbouring XZ/YZ
        planes ``round(scale_factor)`` pixels apart (the section spacing) at
        prediction time.
    fusion : {"mean", "geometric"}
        How the XZ and YZ predictions are combined. The geometric mean is
        taken in intensity units with negative values clipped to 0.
    profile : {"box", "gaussian"}
        Slice profile of the axial forward model used to make training pairs.
    halo_sections : int
        Extra sections each side so the cubic spline is exact where the
        network reads it.
    train : TrainConfig
        Training options.
    inference : InferenceConfig
        Prediction options; ``inference.halo`` is the network context in fine
        voxels each side of an output region, along y, x and the upsampled z.
    """

    method: Literal["skeleton"] = "skeleton"
    base_channels: int = Field(24, ge=1, le=512)
    depth: int = Field(3, ge=0, le=6)
    space_to_depth: int = Field(1, ge=1, le=4)
    factor_input: bool = False
    prior: str | None = None
    context_planes: int = Field(0, ge=0, le=8)
    fusion: Literal["mean", "geometric"] = "mean"
    profile: Literal["box", "gaussian"] = "box"
    halo_sections: int = Field(8, ge=0, le=256)

    @model_validator(mode="after")
    def _patch_fits_unet(self) -> SkeletonConfig:
        check_patch_fits_unet(self.train.patch_size, self.depth, self.space_to_depth)
        return self


def check_patch_fits_unet(patch_size: int, depth: int, space_to_depth: int = 1) -> None:
    """Raise ``ValueError`` unless ``patch_size`` is a multiple of a U-Net's pooling size."""
    multiple = space_to_depth * 2**depth
    if patch_size % multiple:
        raise ValueError(
            f"train.patch_size={patch_size} must be a multiple of "
            f"space_to_depth * 2**depth={multiple} (change patch_size, depth or space_to_depth)"
        )


def factor_code(scale_factor: float) -> float:
    """The value of the factor channel (``factor_input``): ``log2(scale_factor) / 3``.

    Logarithmic, because the blur a factor leaves grows with it in ratio;
    1.0 at x8.
    """
    return math.log2(scale_factor) / 3.0


@dataclass(eq=False)
class PairSampler(ArraySampler):
    """Draw (cubic input, residual target) training patches from XY sections.

    A patch of ``patch_size + 2 * margin`` rows by ``patch_size`` columns is cut
    (rotated/flipped at random), its rows are sectioned by the forward model
    and cubic-upsampled back; the central ``patch_size`` rows are kept, away
    from the spline's held edges.
    """

    sections: np.ndarray
    section_ids: np.ndarray
    _: KW_ONLY
    scale_factor: float
    profile: str
    patch_size: int
    context_planes: int
    factor_input: bool = False

    def __post_init__(self) -> None:
        n = self.context_planes
        self.margin = math.ceil(2 * self.scale_factor)
        self.rows = self.patch_size + 2 * self.margin
        self.offsets = np.arange(-n, n + 1)
        self.sectioning = AxialSectioning(self.scale_factor, axis=-2, profile=self.profile)  # type: ignore[arg-type]
        _, height, width = self.sections.shape
        if min(height, width) < self.rows:
            raise UserInputError(
                f"train.patch_size={self.patch_size} at scale factor {self.scale_factor:g} "
                f"needs XY sections of at least {self.rows}x{self.rows} pixels (patch plus "
                f"{self.margin} context rows each side), got {height}x{width} "
                "(use a smaller train.patch_size)"
            )

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (N, C, P, P) and residual targets (N, 1, P, P), float32.

        C is ``2 context_planes + 1``, plus the factor channel (last) with ``factor_input``.
        """
        num, height, width = self.sections.shape
        channels = self.offsets.size
        patches = np.empty((batch_size, channels, self.rows, self.patch_size), np.float32)
        for i in range(batch_size):
            z = rng.choice(self.section_ids)
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            h, w = (self.rows, self.patch_size) if turns % 2 == 0 else (self.patch_size, self.rows)
            y, x = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
            crop = self.sections[np.clip(z + self.offsets, 0, num - 1), y : y + h, x : x + w]
            crop = np.rot90(crop, turns, axes=(1, 2))
            patches[i] = crop[:, :, ::-1] if flip else crop
        degraded, _ = self.sectioning.apply(patches)
        cubic = upsample_axial(degraded, self.scale_factor, kind="cubic", axis=-2)
        rows = slice(self.margin, self.margin + self.patch_size)
        centre = slice(channels // 2, channels // 2 + 1)
        inputs = np.ascontiguousarray(cubic[:, :, rows])
        targets = patches[:, centre, rows] - inputs[:, centre]
        if self.factor_input:
            inputs = with_factor_channel(inputs, self.scale_factor)
        return inputs, targets


def with_factor_channel(planes: np.ndarray, scale_factor: float) -> np.ndarray:
    """``planes`` (N, C, H, W) with one more channel holding ``factor_code(scale_factor)``."""
    code = np.full((planes.shape[0], 1, *planes.shape[2:]), factor_code(scale_factor), np.float32)
    return np.concatenate([planes, code], axis=1)


def context_range(
    out: slice, block_start: int, block_stop: int, halo: int, multiple: int
) -> tuple[int, int]:
    """[lo, hi) to run the network on: ``out`` plus ``halo`` inside the block.

    ``lo`` sits on a multiple of the U-Net's pooling size where possible, so
    blocks see the same pooling grid as the whole volume.
    """
    if out.start < block_start or out.stop > block_stop:
        raise ValueError(
            f"output range {out.start}:{out.stop} is not inside the block "
            f"{block_start}:{block_stop}"
        )
    lo = max(out.start - halo, 0) // multiple * multiple
    if lo < block_start:
        aligned = -(-block_start // multiple) * multiple
        lo = aligned if aligned <= out.start else block_start
    return lo, min(out.stop + halo, block_stop)


def fine_window(
    grid: AxialGrid,
    output_region: tuple[slice, slice, slice],
    input_shape: tuple[int, int, int],
    *,
    halo: int,
    multiple: int,
    halo_sections: int,
) -> tuple[slice, slice, slice]:
    """Input region a 2D network on XZ/YZ planes of the cubic-upsampled volume needs.

    ``halo`` fine voxels of context each side along y, x and the fine z
    (aligned down to ``multiple``, the network's pooling size), and the
    sections the cubic spline needs for those fine slices.
    """
    zs, ys, xs = output_region
    num, height, width = input_shape
    fine_lo = max(zs.start - halo, 0) // multiple * multiple
    fine_hi = min(zs.stop + halo, grid.num_fine(num))
    sections = grid.sections_for(fine_lo, fine_hi, halo_sections=halo_sections, num_sections=num)

    def lateral(s: slice, size: int) -> slice:
        return slice(max(s.start - halo, 0) // multiple * multiple, min(size, s.stop + halo))

    return (sections, lateral(ys, height), lateral(xs, width))


def fine_block(
    grid: AxialGrid,
    block: np.ndarray,
    request: BlockRequest,
    normalization: PercentileNormalization,
    *,
    halo: int,
    multiple: int,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The cubic-upsampled, normalised part of ``block`` a block's planes are read from.

    Returns the fine stack (F, Y, X) and the absolute (fine z, y, x) index
    of its first voxel.
    """
    zs, ys, xs = request.output_region
    z0, y0, x0 = request.input_start
    num, height, width = block.shape
    y_lo, y_hi = context_range(ys, y0, y0 + height, halo, multiple)
    x_lo, x_hi = context_range(xs, x0, x0 + width, halo, multiple)
    f_lo, f_hi = context_range(zs, grid.first_fine(z0), grid.num_fine(z0 + num), halo, multiple)
    sections = normalization.apply(block[:, y_lo - y0 : y_hi - y0, x_lo - x0 : x_hi - x0])
    fine = upsample_axial(
        sections,
        grid.scale_factor,
        kind="cubic",
        fine_start=f_lo,
        num_fine=f_hi - f_lo,
        section_start=z0,
    )
    return fine, (f_lo, y_lo, x_lo)


class PlaneMethod(AxialMethod):
    """Geometry of 2D networks run on the XZ and YZ planes of the cubic-upsampled volume.

    See ``fine_window`` and ``fine_block``. A subclass gives ``plane_multiple``
    and a config with ``halo_sections`` and ``inference.halo`` (fine voxels of
    network context).
    """

    config: Any

    @property
    def plane_multiple(self) -> int:
        """Pooling size the networks need the planes aligned to (a power of two)."""
        raise NotImplementedError

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        return fine_window(
            self.grid,
            output_region,
            input_shape,
            halo=self.config.inference.halo,
            multiple=self.plane_multiple,
            halo_sections=self.config.halo_sections,
        )

    def fine_block(
        self, block: np.ndarray, request: BlockRequest, normalization: PercentileNormalization
    ) -> tuple[np.ndarray, tuple[int, int, int]]:
        """``fine_block`` of this method's grid, halo and pooling size."""
        halo, multiple = self.config.inference.halo, self.plane_multiple
        return fine_block(self.grid, block, request, normalization, halo=halo, multiple=multiple)


@register_method("skeleton", SkeletonConfig)
class Skeleton(PlaneMethod, NormalizedMethod):
    """Self-supervised isotropic reconstruction with a 2D U-Net on XZ and YZ planes.

    Parameters
    ----------
    config : SkeletonConfig

    Examples
    --------
    >>> from vemrestore.methods import create_method
    >>> method = create_method("skeleton", scale_factor=4, base_channels=4, depth=2,
    ...                        train={"num_steps": 2, "patch_size": 16, "batch_size": 2})
    >>> vol = Volume(np.random.default_rng(0).random((12, 32, 32), dtype=np.float32))
    >>> method = method.fit(vol, progress=False)
    >>> method.output_shape(vol.shape)
    (48, 32, 32)
    """

    name = "skeleton"
    config: SkeletonConfig

    # -- state ---------------------------------------------------------------

    def build_networks(self) -> dict[str, nn.Module]:
        cfg = self.config
        channels = 2 * cfg.context_planes + 1 + int(cfg.factor_input)
        unet = UNet2D(
            channels,
            1,
            base_channels=cfg.base_channels,
            depth=cfg.depth,
            space_to_depth=cfg.space_to_depth,
        )
        return {"unet": unet}

    @property
    def model(self) -> UNet2D | None:
        """The trained U-Net (None before ``fit`` or ``load_state``)."""
        return None if self.networks is None else self.networks["unet"]  # type: ignore[return-value]

    @property
    def plane_multiple(self) -> int:
        return self.config.space_to_depth * 2**self.config.depth

    # -- training ------------------------------------------------------------

    def fit(self, volume: Volume, **options: Unpack[FitOptions]) -> Skeleton:
        """Train the U-Net on the volume's own XY sections.

        Parameters
        ----------
        volume : Volume
            The anisotropic stack, shape (Z, Y, X) with Z sections of
            ``scale_factor`` fine slices each (loaded into memory).
        **options
            ``checkpoint_dir``, ``resume``, ``progress`` (``FitOptions``).

        Returns
        -------
        Skeleton
            ``self``, trained; ``train_result.val_losses`` starts with the
            validation loss at step 0: cubic interpolation's from scratch (the
            network's output layer starts at zero), the prior's with ``prior``.

        Raises
        ------
        UserInputError
            If the volume has fewer than 2 sections or is too small for the
            patch size, or the prior cannot be read or does not fit the config.
        """
        cfg = self.config
        num = volume.shape[0]
        if num < 2:
            raise UserInputError(
                f"the skeleton method needs at least 2 sections to train, got shape {volume.shape} "
                "(pass the whole anisotropic stack)"
            )
        normalization = PercentileNormalization.from_data(volume.data)
        sections = normalization.apply(volume.to_numpy())
        train_ids, val_ids = holdout_sections(num)
        sampler = self.pair_sampler(sections, train_ids)
        val_batches = self.pair_sampler(sections, val_ids).validation_batches(cfg.train)
        loss_fn = pixel_loss(cfg.train.loss)
        networks = self.seeded_networks()
        if cfg.prior is not None:
            self.prior_record = apply_prior(networks["unet"], cfg.prior, self.name)
            warn_outside_factors(self.prior_record, cfg.scale_factor)
        self.train_result = self.train_network(
            networks["unet"], sampler, loss_fn, fixed_validation(val_batches, loss_fn), **options
        )
        self.set_trained(networks, normalization=normalization)
        return self

    def pair_sampler(
        self, sections: np.ndarray, section_ids: np.ndarray, *, patch_size: int | None = None
    ) -> PairSampler:
        """The training pairs of this skeleton's network (its factor, profile, context
        planes and factor channel), ``patch_size`` default ``train.patch_size``."""
        cfg = self.config
        return PairSampler(
            sections,
            section_ids,
            scale_factor=cfg.scale_factor,
            profile=cfg.profile,
            patch_size=cfg.train.patch_size if patch_size is None else patch_size,
            context_planes=cfg.context_planes,
            factor_input=cfg.factor_input,
        )

    # -- prediction ----------------------------------------------------------

    def predict_planes(self, stack: np.ndarray, plane_ids: range) -> np.ndarray:
        """Restore planes ``stack[plane_ids]`` (each (F, W), z along rows)."""
        model = self.require_trained()["unet"]
        device = self.inference_device()
        n = self.config.context_planes
        offsets = np.arange(-n, n + 1) * max(1, round(self.config.scale_factor))
        ids = np.asarray(plane_ids)
        height, width = stack.shape[1:]
        out = np.empty((ids.size, height, width), np.float32)
        step = self.config.inference.batch_size
        for start in range(0, ids.size, step):
            chosen = np.clip(ids[start : start + step, None] + offsets, 0, stack.shape[0] - 1)
            planes = np.ascontiguousarray(stack[chosen])
            if self.config.factor_input:
                planes = with_factor_channel(planes, self.config.scale_factor)
            x = torch.from_numpy(planes).to(device)
            with self.inference_context(device):
                residual = model(pad_to_multiple(x, model.size_multiple))
            restored = x[:, n] + residual[:, 0, :height, :width].float()
            out[start : start + step] = restored.cpu().numpy()
        return out

    def predict_orientations(
        self, block: np.ndarray, request: BlockRequest
    ) -> dict[str, np.ndarray]:
        """The XZ and YZ predictions of a region, before they are fused.

        Parameters
        ----------
        block : numpy.ndarray, shape (Z, Y, X)
            Input voxels of ``input_region(request.output_region, ...)``.
        request : BlockRequest
            The output region and the block's position (``request.outputs`` is ignored).

        Returns
        -------
        dict of str to numpy.ndarray
            ``{XZ: ..., YZ: ...}``: the restorations from the XZ planes (one
            per output y) and from the YZ planes (one per output x), float32
            of ``request.output_shape``, in input intensity units.
        """
        normalization = self.require_normalization()
        fine, (f_lo, y_lo, x_lo) = self.fine_block(block, request, normalization)
        zs, ys, xs = request.output_region
        z_out = slice(zs.start - f_lo, zs.stop - f_lo)
        # XZ planes: one per output y, z along rows, x across the block.
        xz = self.predict_planes(fine.transpose(1, 0, 2), range(ys.start - y_lo, ys.stop - y_lo))
        xz = xz.transpose(1, 0, 2)[z_out, :, xs.start - x_lo : xs.stop - x_lo]
        # YZ planes: one per output x, z along rows, y across the block.
        yz = self.predict_planes(fine.transpose(2, 0, 1), range(xs.start - x_lo, xs.stop - x_lo))
        yz = yz.transpose(1, 2, 0)[z_out, ys.start - y_lo : ys.stop - y_lo, :]
        return {XZ: normalization.invert(xz), YZ: normalization.invert(yz)}

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        """``Method.predict_block``: ``predict_orientations`` of the region, fused."""
        planes = self.predict_orientations(block, request)
        xz, yz = planes[XZ], planes[YZ]
        if self.config.fusion == "mean":
            return {RESTORED: 0.5 * (xz + yz)}
        return {RESTORED: np.sqrt(np.maximum(xz, 0.0) * np.maximum(yz, 0.0), dtype=np.float32)}
