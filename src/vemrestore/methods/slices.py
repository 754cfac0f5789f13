"""Restore missing and partially damaged serial sections from their neighbours.

Three registered methods share one geometry (output = input; only damaged
voxels change, every other voxel is copied bit for bit):

- ``slices-linear``: linear interpolation along z between the nearest known
  voxels above and below.
- ``slices-flow``: optical-flow interpolation: TV-L1 flow between the two
  sections bounding a gap (scikit-image), both warped part way and blended.
- ``slices-diffusion``: a conditional diffusion model with anisotropic 3D
  convolutions (``vemrestore.models.anisotropic3d``) trained
  self-supervised on the user's own stack by hiding known-good sections and
  random regions; DDIM sampling with the known pixels re-imposed at every
  step, so masks of any shape are restored without retraining. One step
  (the default) gives the network's estimate of the mean given the
  neighbours; a few more steps give a sample with sharper texture, at a
  PSNR cost (see ``DiffusionSlicesConfig.num_steps``).

The damage (which sections and pixels to restore) is attached to a method
with ``set_damage`` before prediction; ``prepare_slices`` builds it from
indices, a mask and/or automatic detection, and ``restore_slices`` runs the
whole restoration in memory. For large stacks, pass the prepared method to
``vemrestore.engine.predict_volume``: each block reads the XY halo and the
neighbouring sections it needs.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from vemrestore.diffusion import DiffusionConfig, make_scheduler, sample, save_scheduler_config
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import BlockRequest, MethodConfig, create_method, register_method
from vemrestore.methods._persist import (
    apply_weights,
    cpu_state,
    load_method,
    load_normalization,
    load_weights,
    require_files,
    save_trained,
    train_record,
    weights_digest,
)
from vemrestore.methods._slices_damage import SliceDamageMap, SliceReport, parse_indices
from vemrestore.methods._slices_detect import DetectionResult, detect_damage
from vemrestore.methods._slices_interp import (
    FlowOptions,
    damaged_runs,
    fill_linear,
    interpolate_flow,
)
from vemrestore.methods._slices_train import (
    PackedDenoiser,
    WindowSampler,
    gap_positions,
    joint_and_heads_loss,
)
from vemrestore.models.anisotropic3d import AnisotropicDenoiser3D
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainConfig, TrainResult, fit_model, resolve_device

__all__ = [
    "DetectionResult",
    "DiffusionSlices",
    "DiffusionSlicesConfig",
    "FlowSlices",
    "FlowSlicesConfig",
    "LinearSlices",
    "LinearSlicesConfig",
    "SliceDamageMap",
    "SliceReport",
    "detect_damage",
    "parse_indices",
    "prepare_slices",
    "restore_slices",
]

logger = logging.getLogger(__name__)

METHODS = {"linear": "slices-linear", "flow": "slices-flow", "diffusion": "slices-diffusion"}
# Every VALIDATION_EVERY-th section (offset VALIDATION_OFFSET) is hidden only for validation.
VALIDATION_EVERY = 10
VALIDATION_OFFSET = 5
_VALIDATION_BATCHES = 4
# Side of the square tiles from which the sampling noise is drawn, seeded by position.
_NOISE_TILE = 64


class SliceConfig(MethodConfig):
    """Options shared by the slice methods.

    Attributes
    ----------
    scale_factor : float
        Always 1: sections are restored in place, the grid is unchanged.
    halo_yx : int
        Pixels of context each side of a block in y and x.
    """

    scale_factor: float = Field(1.0, ge=1.0, le=1.0, description="Always 1 (restored in place)")
    halo_yx: int = Field(0, ge=0, le=4096)


class LinearSlicesConfig(SliceConfig):
    """Linear interpolation along z (no options)."""

    method: Literal["slices-linear"] = "slices-linear"


class FlowSlicesConfig(SliceConfig):
    """Optical-flow interpolation; TV-L1 options of ``skimage.registration.optical_flow_tvl1``."""

    method: Literal["slices-flow"] = "slices-flow"
    halo_yx: int = Field(32, ge=0, le=4096)
    attachment: float = Field(15.0, gt=0)
    tightness: float = Field(0.3, gt=0)
    num_warp: int = Field(5, ge=1, le=100)
    num_iter: int = Field(10, ge=1, le=1000)
    tol: float = Field(1e-4, gt=0)
    prefilter: bool = False


def _default_diffusion() -> DiffusionConfig:
    return DiffusionConfig(prediction_type="sample")


def _default_train() -> TrainConfig:
    return TrainConfig(
        num_steps=1200,
        batch_size=4,
        patch_size=64,
        learning_rate=1e-3,
        lr_schedule="one-cycle",
        loss="l2",
        validate_every=200,
        checkpoint_every=200,
    )


class DiffusionSlicesConfig(SliceConfig):
    """Options of the diffusion restorer.

    Attributes
    ----------
    halo_yx : int
        Context each side of a block; at least the network's receptive field
        (72 px at the default size), so that blocks give the same result as
        whole sections.
    num_context : int
        Given sections used on each side of a gap.
    base_channels, depth, stem_patch, num_heads, attention_heads : int
        Network size (see ``AnisotropicDenoiser3D``: channels after the
        stem, in-plane down-samplings, stem patch, output heads, heads of the
        boundary attention).
    max_gap : int
        Longest run of consecutive sections hidden during training; longer
        runs are restored too, with less accuracy.
    region_probability : float
        Share of single-section training samples that hide random regions
        rather than the whole section.
    num_steps : int
        DDIM sampling steps (network calls) per restored run. 1 returns the
        network's estimate of the mean given the neighbours (highest PSNR and
        SSIM on held-out sections of the training stacks, ISBI 2012); more
        steps draw a sample with sharper, more realistic texture whose
        unpredictable detail costs PSNR (the perception-distortion trade-off).
    strength : float
        1: sample from pure noise; below 1: start from the linear estimate
        noised to about ``strength * T`` (truncated sampling).
    num_samples : int
        Samples averaged per run (more: closer to the mean, smoother, slower).
    seed : int
        Seed of the sampling noise (drawn per position, so blocks agree).
    diffusion : DiffusionConfig
        Noise schedule and prediction type (``sample``: the network predicts
        the correction to linear interpolation).
    train : TrainConfig
        Training options.
    """

    method: Literal["slices-diffusion"] = "slices-diffusion"
    halo_yx: int = Field(72, ge=0, le=4096)
    num_context: int = Field(1, ge=1, le=4)
    base_channels: int = Field(16, ge=4, le=256)
    depth: int = Field(2, ge=0, le=4)
    stem_patch: int = Field(2, ge=1, le=8)
    num_heads: int = Field(3, ge=1, le=8)
    attention_heads: int = Field(4, ge=1, le=32)
    max_gap: int = Field(2, ge=1, le=8)
    region_probability: float = Field(0.3, ge=0.0, le=1.0)
    num_steps: int = Field(1, ge=1, le=1000)
    strength: float = Field(1.0, gt=0.0, le=1.0)
    num_samples: int = Field(1, ge=1, le=64)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    diffusion: DiffusionConfig = Field(default_factory=_default_diffusion)
    train: TrainConfig = Field(default_factory=_default_train)

    @model_validator(mode="after")
    def _check_sizes(self) -> DiffusionSlicesConfig:
        multiple = self.stem_patch * 2**self.depth
        if self.train.patch_size % multiple:
            raise ValueError(
                f"train.patch_size={self.train.patch_size} must be a multiple of "
                f"stem_patch * 2**depth = {multiple} (change patch_size, stem_patch or depth)"
            )
        if self.base_channels % self.attention_heads:
            raise ValueError(
                f"base_channels={self.base_channels} must be a multiple of "
                f"attention_heads={self.attention_heads}"
            )
        if self.num_steps > self.diffusion.num_train_timesteps:
            raise ValueError(
                f"num_steps={self.num_steps} exceeds diffusion.num_train_timesteps="
                f"{self.diffusion.num_train_timesteps}"
            )
        return self


class _SliceMethod:
    """Shared geometry: output = input, damaged voxels replaced by ``_restore``."""

    name: ClassVar[str]
    config: SliceConfig
    # Sections of context each side of a run (beyond its bounding sections).
    context: int = 1

    def __init__(self, config: SliceConfig) -> None:
        self.config = config
        self.damage: SliceDamageMap | None = None

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

    def fit(self, volume: Volume) -> _SliceMethod:
        """Interpolation needs no training."""
        return self

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(int(n) for n in input_shape)  # type: ignore[return-value]

    def output_voxel_size(
        self, voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        return tuple(voxel_size)  # type: ignore[return-value]

    def _lateral_start(self, start: int) -> int:
        return max(start - self.config.halo_yx, 0)

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        """The output region, the sections its damaged runs need, and the XY halo."""
        damage = self._require_damage(input_shape)
        zs, ys, xs = output_region
        z_lo, z_hi = damage.z_extent(zs.start, zs.stop, self.context)
        halo = self.config.halo_yx
        return (
            slice(z_lo, z_hi),
            slice(self._lateral_start(ys.start), min(input_shape[1], ys.stop + halo)),
            slice(self._lateral_start(xs.start), min(input_shape[2], xs.stop + halo)),
        )

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> np.ndarray:
        """Copy the output region of ``block``, restoring its damaged voxels.

        Parameters
        ----------
        block : numpy.ndarray, shape (Z, Y, X)
            Input covering ``input_region(request.output_region, ...)``,
            starting at ``request.input_start``.
        request : BlockRequest

        Returns
        -------
        numpy.ndarray of float32, shape ``request.output_shape``
            Undamaged voxels equal the input exactly.
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
        if not out_mask.any():
            return out
        block = np.asarray(block, dtype=np.float32)
        restored = self._restore(block, mask, origin, crop[0])
        out[out_mask] = restored[crop][out_mask]
        return out

    def _restore(
        self, block: np.ndarray, mask: np.ndarray, origin: tuple[int, ...], z_out: slice
    ) -> np.ndarray:
        """``block`` with the masked voxels of the runs meeting ``z_out`` restored."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Write ``config.json`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(self.config.model_dump_json(indent=2))


def _runs_meeting(mask: np.ndarray, z_out: slice) -> list[tuple[int, int]]:
    return [(a, b) for a, b in damaged_runs(mask) if a < z_out.stop and b > z_out.start]


@register_method("slices-linear", LinearSlicesConfig)
class LinearSlices(_SliceMethod):
    """Linear interpolation along z of the damaged voxels.

    Examples
    --------
    >>> from vemrestore.engine import predict_array
    >>> method = LinearSlices(LinearSlicesConfig())
    >>> stack = np.stack([np.zeros((4, 4)), np.full((4, 4), 9.0), np.full((4, 4), 2.0)])
    >>> method.set_damage(SliceDamageMap.build(stack.shape, missing=[1]))
    >>> float(predict_array(method, stack)[1, 0, 0])
    1.0
    """

    name = "slices-linear"

    def _restore(
        self, block: np.ndarray, mask: np.ndarray, origin: tuple[int, ...], z_out: slice
    ) -> np.ndarray:
        return fill_linear(block, mask)


@register_method("slices-flow", FlowSlicesConfig)
class FlowSlices(_SliceMethod):
    """Optical-flow interpolation between the sections bounding each gap.

    Runs at the top or bottom of the stack (one neighbour only) fall back to
    copying the nearest section (as linear interpolation does).
    """

    name = "slices-flow"

    def _restore(
        self, block: np.ndarray, mask: np.ndarray, origin: tuple[int, ...], z_out: slice
    ) -> np.ndarray:
        cfg = self.config
        options = FlowOptions(
            attachment=cfg.attachment,  # type: ignore[attr-defined]
            tightness=cfg.tightness,  # type: ignore[attr-defined]
            num_warp=cfg.num_warp,  # type: ignore[attr-defined]
            num_iter=cfg.num_iter,  # type: ignore[attr-defined]
            tol=cfg.tol,  # type: ignore[attr-defined]
            prefilter=cfg.prefilter,  # type: ignore[attr-defined]
        )
        out = fill_linear(block, mask)
        for a, b in _runs_meeting(mask, z_out):
            if a == 0 or b == block.shape[0]:
                continue
            positions = (np.arange(a, b) - (a - 1)) / (b - a + 1)
            frames = interpolate_flow(out[a - 1], out[b], positions, options=options)
            out[a:b] = np.where(mask[a:b], frames, out[a:b])
        return out


def _position_noise(
    seed: int, draw: int, z_index: np.ndarray, y0: int, x0: int, height: int, width: int
) -> np.ndarray:
    """Standard normal noise (Z, H, W) that depends only on absolute position and ``draw``."""
    tile = _NOISE_TILE
    ty0, tx0 = y0 // tile, x0 // tile
    ty1, tx1 = -(-(y0 + height) // tile), -(-(x0 + width) // tile)
    out = np.empty((len(z_index), (ty1 - ty0) * tile, (tx1 - tx0) * tile), np.float32)
    for i, z in enumerate(z_index.tolist()):
        for ty in range(ty0, ty1):
            for tx in range(tx0, tx1):
                rng = np.random.default_rng([seed, draw, z, ty, tx])
                out[
                    i,
                    (ty - ty0) * tile : (ty - ty0 + 1) * tile,
                    (tx - tx0) * tile : (tx - tx0 + 1) * tile,
                ] = rng.standard_normal((tile, tile), dtype=np.float32)
    oy, ox = y0 - ty0 * tile, x0 - tx0 * tile
    return out[:, oy : oy + height, ox : ox + width]


@register_method("slices-diffusion", DiffusionSlicesConfig)
class DiffusionSlices(_SliceMethod):
    """Conditional diffusion restorer of missing sections and masked regions.

    Parameters
    ----------
    config : DiffusionSlicesConfig

    Examples
    --------
    >>> config = DiffusionSlicesConfig(base_channels=4, attention_heads=2, depth=1, num_steps=2,
    ...                                train={"num_steps": 2, "patch_size": 16, "batch_size": 2,
    ...                                       "device": "cpu"})
    >>> method = DiffusionSlices(config)
    >>> stack = np.random.default_rng(0).random((8, 16, 16), dtype=np.float32)
    >>> method = method.fit(Volume(stack), progress=False)
    >>> method.set_damage(SliceDamageMap.build(stack.shape, missing=[3]))
    >>> from vemrestore.engine import predict_array
    >>> out = predict_array(method, stack)
    >>> bool((out[:3] == stack[:3]).all()), out.shape
    (True, (8, 16, 16))
    """

    name = "slices-diffusion"

    def __init__(self, config: DiffusionSlicesConfig) -> None:
        super().__init__(config)
        self.context = config.num_context
        self.model: PackedDenoiser | None = None
        self.normalization: PercentileNormalization | None = None
        self.train_result: TrainResult | None = None
        self._scheduler: Any = None
        self._lock = threading.Lock()
        self._device: torch.device | None = None

    # -- state ---------------------------------------------------------------

    def _build_model(self) -> PackedDenoiser:
        cfg: DiffusionSlicesConfig = self.config  # type: ignore[assignment]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            net = AnisotropicDenoiser3D(
                4,
                num_context=cfg.num_context,
                base_channels=cfg.base_channels,
                depth=cfg.depth,
                patch_size=cfg.stem_patch,
                num_heads=cfg.num_heads,
                attention_heads=cfg.attention_heads,
            )
        return PackedDenoiser(net, residual=cfg.diffusion.prediction_type == "sample")

    def run_fingerprint(self) -> dict[str, str | None]:
        """The damage map's and the weights' digests (see ``_SliceMethod.run_fingerprint``)."""
        model, _ = self._require_trained()
        return {**super().run_fingerprint(), "weights": weights_digest(model)}

    def _require_trained(self) -> tuple[PackedDenoiser, PercentileNormalization]:
        if self.model is None or self.normalization is None:
            raise UserInputError(
                "the slices-diffusion method is not trained (call fit(volume) or "
                "load_method(path) first)"
            )
        return self.model, self.normalization

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for dask.distributed: config, damage, weights and statistics only.
        weights = None
        if self.model is not None:
            weights = cpu_state(self.model.net.state_dict())
        return {
            "config": self.config.model_dump(),
            "damage": self.damage,
            "weights": weights,
            "normalization": None if self.normalization is None else self.normalization.to_dict(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(DiffusionSlicesConfig.model_validate(state["config"]))  # type: ignore[misc]
        self.damage = state["damage"]
        if state["weights"] is not None:
            self.model = self._build_model()
            self.model.net.load_state_dict(state["weights"])
            self.model.eval()
        if state["normalization"] is not None:
            self.normalization = PercentileNormalization.from_dict(state["normalization"])

    @property
    def scheduler(self) -> Any:
        """The DDIM scheduler of ``config.diffusion`` (made once)."""
        if self._scheduler is None:
            self._scheduler = make_scheduler(self.config.diffusion)  # type: ignore[attr-defined]
        return self._scheduler

    # -- training ------------------------------------------------------------

    def fit(
        self,
        volume: Volume,
        *,
        damage: SliceDamageMap | None = None,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> DiffusionSlices:
        """Train on the volume's own undamaged sections (self-supervised).

        Sections in ``damage`` (default: the attached damage map, if any)
        are never used, neither as hidden targets nor as context. Every
        tenth section (5, 15, ...) is hidden only for validation.

        Parameters
        ----------
        volume : Volume
            The stack, shape (Z, Y, X) (loaded into memory).
        damage : SliceDamageMap, optional
            Sections to leave out.
        checkpoint_dir : pathlib.Path, optional
            Where training checkpoints go (see ``vemrestore.train.fit_model``).
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir``.
        progress : bool
            Show a progress bar.

        Returns
        -------
        DiffusionSlices
            ``self``, trained.

        Raises
        ------
        UserInputError
            If there are too few undamaged sections or they are smaller than the patch.
        """
        cfg: DiffusionSlicesConfig = self.config  # type: ignore[assignment]
        damage = damage if damage is not None else self.damage
        num = volume.shape[0]
        usable = np.ones(num, bool)
        if damage is not None:
            usable[list(damage.damaged)] = False
        if usable.sum() < 2 * cfg.num_context + 1:
            raise UserInputError(
                f"only {int(usable.sum())} undamaged sections of {num}: too few to train "
                "slices-diffusion (load a model trained on another stack with model_dir)"
            )
        is_val = np.arange(num) % VALIDATION_EVERY == VALIDATION_OFFSET
        stack = volume.to_numpy()
        normalization = PercentileNormalization.from_data(stack[usable])
        sections = 2.0 * normalization.apply(stack) - 1.0
        scheduler = self.scheduler
        options = {
            "usable": usable,
            "num_context": cfg.num_context,
            "max_gap": cfg.max_gap,
            "patch_size": cfg.train.patch_size,
            "region_probability": cfg.region_probability,
            "scheduler": scheduler,
        }
        sampler = WindowSampler(sections, targets=usable & ~is_val, **options)
        try:
            val_sampler = WindowSampler(sections, targets=usable & is_val, **options)
        except UserInputError:
            val_sampler = None
            logger.warning("no validation sections available; training without validation")
        model = self._build_model()
        validate = None
        if val_sampler is not None:
            val_rng = np.random.default_rng([cfg.train.seed, 1])
            val_batches = [
                val_sampler.sample_batch(val_rng, cfg.train.batch_size)
                for _ in range(_VALIDATION_BATCHES)
            ]

            def validate(net: torch.nn.Module) -> float:
                device = next(net.parameters()).device
                losses = [
                    float(joint_and_heads_loss(net(x.to(device)).float(), y.to(device)))
                    for x, y in val_batches
                ]
                return float(np.mean(losses))

        result = fit_model(
            model,
            sample_batch=sampler.sample_batch,
            loss_fn=joint_and_heads_loss,
            config=cfg.train,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            validate=validate,
            progress=progress,
        )
        with self._lock:
            self.model, self.normalization, self.train_result = model, normalization, result
            self._device = None
        return self

    # -- prediction ----------------------------------------------------------

    def _lateral_start(self, start: int) -> int:
        # Keep the network's pooling grid aligned with the whole stack's.
        multiple = self.config.stem_patch * 2**self.config.depth  # type: ignore[attr-defined]
        return max(start - self.config.halo_yx, 0) // multiple * multiple

    def _inference_model(self) -> tuple[PackedDenoiser, torch.device]:
        model, _ = self._require_trained()
        with self._lock:
            if self._device is None:
                self._device = resolve_device(self.config.train.device)  # type: ignore[attr-defined]
                if self._device.type == "cpu":
                    torch.set_flush_denormal(True)
                model.to(self._device).eval()
            return model, self._device

    def _restore(
        self, block: np.ndarray, mask: np.ndarray, origin: tuple[int, ...], z_out: slice
    ) -> np.ndarray:
        _, normalization = self._require_trained()
        filled = fill_linear(block, mask)
        x = 2.0 * normalization.apply(filled) - 1.0
        c = self.context
        for a, b in _runs_meeting(mask, z_out):
            index = np.clip(np.arange(a - c, b + c), 0, block.shape[0] - 1)
            unknown = np.zeros((len(index), *block.shape[1:]), bool)
            unknown[c : c + b - a] = mask[a:b]
            restored = self._sample_run(x[index], unknown, origin[0] + index, origin[1:])
            x[a:b] = np.where(mask[a:b], restored[c : c + b - a], x[a:b])
        return normalization.invert((x + 1.0) / 2.0)

    def _sample_run(
        self,
        estimate: np.ndarray,
        unknown: np.ndarray,
        z_index: np.ndarray,
        yx_origin: tuple[int, ...],
    ) -> np.ndarray:
        """Sample the unknown voxels of one stack (D, H, W) in normalised units."""
        cfg: DiffusionSlicesConfig = self.config  # type: ignore[assignment]
        model, device = self._inference_model()
        multiple = model.net.size_multiple
        depth, height, width = estimate.shape
        pad = ((0, 0), (0, -height % multiple), (0, -width % multiple))
        mode = "reflect" if height > pad[1][1] and width > pad[2][1] else "edge"
        est = np.pad(estimate, pad, mode=mode)
        unk = np.pad(unknown, pad, mode="constant")
        shape = (1, 1, *est.shape)
        gap = depth - 2 * self.context
        position = np.broadcast_to(
            gap_positions(self.context, gap).astype(np.float32)[:, None, None], est.shape
        )
        cond = torch.from_numpy(np.stack([est, unk.astype(np.float32), position])[None].copy()).to(
            device
        )
        est_t, unk_t = cond[:, :1], cond[:, 1:2] > 0.5

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            inputs = torch.cat([x_t, cond], dim=1)
            with torch.inference_mode():
                joint, _ = model.denoise(inputs, t)
            return joint

        total = torch.zeros(shape, device=device)
        for k in range(cfg.num_samples):

            def noise_fn(draw: int, size: tuple[int, ...], k: int = k) -> torch.Tensor:
                noise = _position_noise(
                    cfg.seed + k, draw, z_index, yx_origin[0], yx_origin[1], *est.shape[1:]
                )
                return torch.from_numpy(noise).reshape(size)

            total += sample(
                denoise,
                scheduler=self.scheduler,
                num_steps=cfg.num_steps,
                init=est_t,
                strength=cfg.strength,
                known=est_t,
                known_mask=~unk_t,
                noise_fn=noise_fn,
                device=device,
            )
        result = (total / cfg.num_samples)[0, 0].cpu().numpy()
        return result[:, :height, :width]

    # -- persistence ---------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``config.json``, ``weights.pt``, ``normalization.json``, ``scheduler_config.json``.

        ``training.json`` (loss history) is added when the method was trained
        in this session.
        """
        model, normalization = self._require_trained()
        training = None
        if self.train_result is not None:
            training = train_record(self.train_result, model=model.net.config)
        save_trained(
            path,
            self.config,
            model.net.state_dict(),
            normalization=normalization.to_dict(),
            training=training,
        )
        save_scheduler_config(self.config.diffusion, Path(path))  # type: ignore[attr-defined]

    def load_state(self, path: Path) -> None:
        """Restore weights and normalisation written by ``save`` (see ``load_method``)."""
        require_files(path, ("weights.pt", "normalization.json"), "DiffusionSlices")
        weights = load_weights(path)
        model = self._build_model()
        apply_weights(model.net, weights, path)
        model.eval()
        normalization = PercentileNormalization.from_dict(load_normalization(path))
        with self._lock:
            self.model, self.normalization, self._device = model, normalization, None


# -- the Python entry points -------------------------------------------------


def _check_known_voxels_finite(volume: Volume, damage: SliceDamageMap) -> None:
    """Raise if a voxel that is not to be restored is NaN or infinite."""
    for z in range(volume.shape[0]):
        if z in damage.missing:
            continue
        bad = ~np.isfinite(np.asarray(volume.data[z], dtype=np.float32))
        if z in damage.partial:
            bad &= ~damage.partial[z]
        if bad.any():
            raise UserInputError(
                f"section {z} has {int(bad.sum())} NaN/inf voxels outside the damage to restore "
                "(pass detect=True / --detect, add the section to missing, or mask them)"
            )


def _build_damage(
    volume: Volume,
    missing: Sequence[int] | None,
    mask: Any,
    detect: bool,
    detect_options: dict[str, Any] | None,
) -> tuple[SliceDamageMap, dict[int, str], dict[int, str]]:
    damage = SliceDamageMap.build(volume.shape, missing=missing, mask=mask)
    sources = {z: "given" for z in damage.missing}
    sources.update({z: "mask" for z in damage.partial})
    reasons: dict[int, str] = {}
    if detect:
        found = detect_damage(volume.to_numpy(), **(detect_options or {}))
        damage = damage.merged(found.missing, found.partial)
        for z in set(found.missing) | set(found.partial):
            sources[z] = f"{sources[z]}+detected" if z in sources else "detected"
        reasons.update(found.reasons)
    return damage, sources, reasons


def prepare_slices(
    volume: Volume,
    *,
    missing: Sequence[int] | None = None,
    mask: Any = None,
    detect: bool = False,
    method: Literal["linear", "flow", "diffusion"] = "diffusion",
    model_dir: Path | None = None,
    train_steps: int | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    detect_options: dict[str, Any] | None = None,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
) -> tuple[_SliceMethod, SliceReport]:
    """Build the damage map, and the method ready to restore it (trained if needed).

    Use the method with ``vemrestore.engine.predict_volume`` (blockwise, any
    size) or ``predict_array``; ``restore_slices`` does the latter.

    Parameters
    ----------
    volume : Volume
        The stack, shape (Z, Y, X).
    missing : sequence of int, optional
        Sections to restore whole.
    mask : array-like, shape (Z, Y, X), optional
        Nonzero on damaged voxels (only those are restored).
    detect : bool
        Also detect blank, outlying and locally damaged sections (``detect_damage``).
    method : {"linear", "flow", "diffusion"}
        Restoration method.
    model_dir : pathlib.Path, optional
        For ``diffusion``: a saved model to load if the folder holds one,
        else where the model trained on ``volume`` is saved.
    train_steps : int, optional
        For ``diffusion``: training steps (default: the config's).
    seed : int
        Seeds training and the sampling noise.
    options : dict, optional
        Further config options of the method (e.g. ``{"num_steps": 8}``).
    detect_options : dict, optional
        Keyword options of ``detect_damage``.
    progress : bool
        Show training progress.
    checkpoint_dir : pathlib.Path, optional
        For ``diffusion`` training: write checkpoints there and resume from
        the one it holds (a killed run continues where it stopped). Unused
        when no training is needed.

    Returns
    -------
    method : LinearSlices, FlowSlices or DiffusionSlices
        With the damage map attached.
    report : SliceReport
        The sections and pixels that will be restored, with reasons.

    Raises
    ------
    UserInputError
        For an unknown method, indices outside the stack, or a mask whose
        shape differs from the volume's.
    """
    if method not in METHODS:
        raise UserInputError(
            f"unknown slice method {method!r} (choose one of: {', '.join(METHODS)})"
        )
    damage, sources, reasons = _build_damage(volume, missing, mask, detect, detect_options)
    if damage.is_empty:
        warnings.warn(
            "nothing to restore: no missing sections, mask or detected damage "
            "(the output will equal the input)",
            stacklevel=2,
        )
    if np.issubdtype(volume.dtype, np.floating):
        _check_known_voxels_finite(volume, damage)
    name = METHODS[method]
    report = SliceReport.from_damage(damage, method=name, sources=sources, reasons=reasons)
    options = dict(options or {})
    if method != "diffusion":
        restorer = create_method(name, **options)
    elif model_dir is not None and (Path(model_dir) / "config.json").is_file():
        restorer = load_method(Path(model_dir))
        if not isinstance(restorer, DiffusionSlices):
            raise UserInputError(
                f"{model_dir} holds a {restorer.config.method!r} model, not slices-diffusion "
                "(pass another --model-dir)"
            )
    else:
        train = dict(options.pop("train", {}))
        train.setdefault("seed", seed)
        if train_steps is not None:
            train["num_steps"] = train_steps
        options.setdefault("seed", seed)
        restorer = create_method(name, train=train, **options)
        if not damage.is_empty or model_dir is not None:
            restorer.fit(  # type: ignore[call-arg]
                volume,
                damage=damage,
                progress=progress,
                checkpoint_dir=checkpoint_dir,
                resume=checkpoint_dir is not None,
            )
            r = restorer.train_result  # type: ignore[attr-defined]
            report.training = {
                "steps": r.steps,
                "seconds": round(r.seconds, 1),
                "final_loss": float(np.mean(r.history[-50:])),
                "val_losses": r.val_losses,
            }
            if model_dir is not None:
                restorer.save(Path(model_dir))
    restorer.set_damage(damage)
    return restorer, report  # type: ignore[return-value]


def restore_slices(
    volume: Volume,
    *,
    missing: Sequence[int] | None = None,
    mask: Any = None,
    detect: bool = False,
    method: Literal["linear", "flow", "diffusion"] = "diffusion",
    model_dir: Path | None = None,
    train_steps: int | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    detect_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, SliceReport]:
    """Restore missing and damaged sections of a stack held in memory.

    Parameters are those of ``prepare_slices``.

    Returns
    -------
    restored : numpy.ndarray of float32, shape (Z, Y, X)
        Equal to the input (as float32) on every voxel not restored.
    report : SliceReport
        What was restored and why, with the prediction time in ``seconds``.

    Raises
    ------
    UserInputError
        See ``prepare_slices``.

    Examples
    --------
    >>> stack = np.random.default_rng(0).random((6, 16, 16), dtype=np.float32)
    >>> out, report = restore_slices(Volume(stack), missing=[2], method="linear")
    >>> report.restored_sections, bool(np.allclose(out[2], (stack[1] + stack[3]) / 2))
    ([2], True)
    """
    from vemrestore.engine import predict_array

    restorer, report = prepare_slices(
        volume,
        missing=missing,
        mask=mask,
        detect=detect,
        method=method,
        model_dir=model_dir,
        train_steps=train_steps,
        seed=seed,
        options=options,
        detect_options=detect_options,
        progress=progress,
    )
    start = time.perf_counter()
    restored = predict_array(restorer, volume.data)
    report.seconds = time.perf_counter() - start
    return restored, report
