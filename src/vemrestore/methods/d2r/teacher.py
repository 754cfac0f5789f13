"""D2R's stage I and II: a 2D diffusion model restores the XZ and YZ planes ("diffusion2d").

The model learns, from the volume's own XY sections degraded along one
lateral axis by the axial forward model, the residual between the sharp
section and its cubic upsample, as a conditional diffusion model (the cubic
upsample is the condition). Applied to every XZ and YZ plane of the
cubic-upsampled volume it gives two restorations that keep the fine lateral
sampling; D2R keeps them apart (``predict_orientations``), the method alone
returns their mean.

The pair sampler is the skeleton's, the denoiser, its training and its
position-keyed few-step sampler are SkelEM's refiner's, without a skeleton
in front.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar, Literal, Unpack

import numpy as np
from pydantic import Field, model_validator
from torch import nn

from vemrestore.diffusion import DiffusionConfig, load_scheduler_config, save_scheduler_config
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import RESTORED, XZ, YZ, AxialConfig, BlockRequest, register_method
from vemrestore.methods._trained import FitOptions, NormalizedMethod, SamplingConfig, TrainedConfig
from vemrestore.methods.skelem.config import check_sampling_levels
from vemrestore.methods.skelem.noise import Moments
from vemrestore.methods.skelem.refiner import (
    refine_planes,
    train_residual_denoiser,
    truncated_start,
)
from vemrestore.methods.skeleton import PairSampler, PlaneMethod, check_patch_fits_unet
from vemrestore.models.cond_unet import ConditionalUNet2D
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainConfig

__all__ = ["PlaneDiffusion", "PlaneDiffusionConfig", "PlaneSampling"]

_ORIENTATION_KEY = {XZ: 0, YZ: 1}


class PlaneSampling(SamplingConfig):
    """How the 2D diffusion model samples a plane.

    Attributes
    ----------
    mode : {"full", "truncated"}
        ``full``: sample the residual from pure noise (D2R's stage II);
        ``truncated``: start from the cubic upsample noised to ``strength``.
    num_inference_steps : int
        Network calls per plane and sample (DDIM).
    """

    mode: Literal["truncated", "full"] = "full"


class PlaneDiffusionConfig(TrainedConfig, AxialConfig):
    """Options of the 2D plane diffusion model.

    Attributes
    ----------
    profile : {"box", "gaussian"}
        Slice profile of the axial forward model that makes the training pairs.
    base_channels, depth : int
        Width and down-samplings of the conditional U-Net.
    diffusion : DiffusionConfig
        Noise schedule and prediction target.
    halo_sections : int
        Extra sections each side so the cubic spline is exact where read.
    pool_size : int
        Training pairs drawn once; batches draw from them with random flips,
        noise and timesteps.
    truncated_fraction : float
        Fraction of training timesteps drawn from the truncated range
        ``[0, t0]`` of ``inference`` (0 for a model sampled from pure noise).
    train : TrainConfig
        Training options (the diffusion loss is a mean squared error).
    inference : PlaneSampling
        Sampling options.
    """

    merge_partial_train: ClassVar[bool] = True

    method: Literal["diffusion2d"] = "diffusion2d"
    profile: Literal["box", "gaussian"] = "box"
    base_channels: int = Field(16, ge=1, le=512)
    depth: int = Field(3, ge=0, le=6)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    halo_sections: int = Field(8, ge=0, le=256)
    pool_size: int = Field(2048, ge=1, le=1_000_000)
    truncated_fraction: float = Field(0.0, ge=0.0, le=1.0)
    train: TrainConfig = Field(
        default_factory=partial(TrainConfig, num_steps=1000, learning_rate=5e-4, loss="l2")
    )
    inference: PlaneSampling = Field(default_factory=PlaneSampling)

    @model_validator(mode="after")
    def _check(self) -> PlaneDiffusionConfig:
        check_patch_fits_unet(self.train.patch_size, self.depth)
        check_sampling_levels(self.inference, self.diffusion)
        return self


@register_method("diffusion2d", PlaneDiffusionConfig)
class PlaneDiffusion(PlaneMethod, NormalizedMethod):
    """A 2D conditional diffusion model on the XZ and YZ planes of the cubic-upsampled volume.

    Parameters
    ----------
    config : PlaneDiffusionConfig

    Attributes
    ----------
    residual_scale : float or None
        RMS of the training residuals; the model works in its units.

    Examples
    --------
    >>> from vemrestore.methods import create_method
    >>> method = create_method("diffusion2d", scale_factor=4, base_channels=4, depth=2,
    ...                        pool_size=8, train={"num_steps": 2, "patch_size": 16,
    ...                                            "batch_size": 2})
    >>> vol = Volume(np.random.default_rng(0).random((12, 32, 32), dtype=np.float32))
    >>> method.fit(vol, progress=False).output_shape(vol.shape)
    (48, 32, 32)
    """

    name = "diffusion2d"
    state_files = ("normalization.json", "denoiser.json")
    config: PlaneDiffusionConfig

    def __init__(self, config: PlaneDiffusionConfig) -> None:
        super().__init__(config)
        self.residual_scale: float | None = None

    def build_networks(self) -> dict[str, nn.Module]:
        cfg = self.config
        return {"denoiser": ConditionalUNet2D(1, 1, 1, cfg.base_channels, cfg.depth)}

    @property
    def plane_multiple(self) -> int:
        return 2**self.config.depth

    def state_json(self) -> dict[str, Any]:
        record = {"residual_scale": self.residual_scale}
        return {**super().state_json(), "denoiser.json": record}

    def load_state_json(self, files: dict[str, Any]) -> None:
        super().load_state_json(files)
        self.residual_scale = float(files["denoiser.json"]["residual_scale"])

    # -- training ------------------------------------------------------------

    def fit(self, volume: Volume, **options: Unpack[FitOptions]) -> PlaneDiffusion:
        """Train the denoiser on the volume's own XY sections (``FitOptions``).

        Raises
        ------
        UserInputError
            If the volume has fewer than 2 sections or is too small for the patch size.
        """
        cfg = self.config
        if volume.shape[0] < 2:
            raise UserInputError(
                f"the diffusion2d method needs at least 2 sections to train, got shape "
                f"{volume.shape} (pass the whole anisotropic stack)"
            )
        normalization = PercentileNormalization.from_data(volume.data)
        sections = normalization.apply(volume.to_numpy())

        def pool(ids: np.ndarray, num: int, rng: np.random.Generator) -> Any:
            sampler = PairSampler(
                sections,
                ids,
                scale_factor=cfg.scale_factor,
                profile=cfg.profile,
                patch_size=cfg.train.patch_size,
                context_planes=0,
            )
            return sampler.draw(rng, num)

        denoiser = self.seeded_networks()["denoiser"]
        scale, _, result = train_residual_denoiser(
            denoiser,  # type: ignore[arg-type]
            pool,
            len(sections),
            diffusion=cfg.diffusion,
            pool_size=cfg.pool_size,
            truncated_start=truncated_start(cfg.diffusion, cfg.inference),
            truncated_fraction=cfg.truncated_fraction,
            seed=cfg.train.seed,
            batch_size=cfg.train.batch_size,
            train=partial(self.train_network, **options),
        )
        self.set_trained(
            {"denoiser": denoiser},
            normalization=normalization,
            residual_scale=scale,
            train_result=result,
        )
        return self

    # -- prediction ----------------------------------------------------------

    def _sample_planes(
        self, cubic: np.ndarray, name: str, origin: tuple[np.ndarray, int, int], index: int
    ) -> np.ndarray:
        """Restored planes (P, H, W): ``cubic`` plus one sampled residual, normalised units."""
        device = self.inference_device()
        residual = refine_planes(
            self.require_trained()["denoiser"],  # type: ignore[arg-type]
            cubic[:, None],
            sampling=self.config.inference,
            diffusion=self.config.diffusion,
            key=(index, _ORIENTATION_KEY[name]),
            origin=origin,
            device=device,
            context=lambda: self.inference_context(device),
        )
        return cubic + residual * np.float32(self.residual_scale)

    def predict_orientations(
        self, block: np.ndarray, request: BlockRequest
    ) -> dict[str, np.ndarray]:
        """The XZ and YZ restorations of the region, each the mean over ``num_samples``.

        In input intensity units; the starting noise is keyed by position,
        so blocks agree with the whole volume.
        """
        normalization = self.require_normalization()
        fine, (f_lo, y_lo, x_lo) = self.fine_block(block, request, normalization)
        zs, ys, xs = request.output_region
        z_out = slice(zs.start - f_lo, zs.stop - f_lo)
        oy, ox = slice(ys.start - y_lo, ys.stop - y_lo), slice(xs.start - x_lo, xs.stop - x_lo)
        xz_planes = np.ascontiguousarray(fine.transpose(1, 0, 2)[oy])  # (y, z, x)
        yz_planes = np.ascontiguousarray(fine.transpose(2, 0, 1)[ox])  # (x, z, y)
        xz_origin = (np.arange(ys.start, ys.stop), f_lo, x_lo)
        yz_origin = (np.arange(xs.start, xs.stop), f_lo, y_lo)
        xz, yz = Moments(), Moments()
        for index in range(self.config.inference.num_samples):
            xz.add(self._sample_planes(xz_planes, XZ, xz_origin, index))
            yz.add(self._sample_planes(yz_planes, YZ, yz_origin, index))
        assert xz.mean is not None and yz.mean is not None  # num_samples >= 1
        xz_out = xz.mean.transpose(1, 0, 2)[z_out, :, ox].astype(np.float32)
        yz_out = yz.mean.transpose(1, 2, 0)[z_out, oy, :].astype(np.float32)
        return {XZ: normalization.invert(xz_out), YZ: normalization.invert(yz_out)}

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        """``Method.predict_block``: the mean of the XZ and YZ restorations."""
        planes = self.predict_orientations(block, request)
        return {RESTORED: 0.5 * (planes[XZ] + planes[YZ])}

    # -- persistence ---------------------------------------------------------

    def save(self, path: Any) -> None:
        """``TrainedMethod.save`` plus ``scheduler_config.json`` (diffusers format)."""
        super().save(path)
        save_scheduler_config(self.config.diffusion, path)

    def load_state(self, path: Any) -> None:
        """Restore what ``save`` wrote; the schedule must match the config."""
        if load_scheduler_config(path) != self.config.diffusion:
            raise UserInputError(
                f"{path}/scheduler_config.json disagrees with the diffusion options in "
                f"{path}/config.json (save the method again)"
            )
        super().load_state(path)
