"""The diffusion slice restorer, trained self-supervised on the user's own stack.

A conditional diffusion model with anisotropic 3D convolutions
(``vemrestore.models.anisotropic3d``) learns to restore known-good sections
and random regions hidden from it (see ``pairs``), as a correction to linear
or optical-flow interpolation (``DiffusionSlicesConfig.estimate``). At prediction, DDIM
sampling re-imposes the known pixels at every step, so masks of any shape
are restored without retraining. By default four steps start from the
estimate half-noised (``SlicesInference.strength``): a sample with the sharp
texture of a real section that keeps the estimate's structure; one step
from pure noise gives the network's estimate of the mean given the
neighbours, smooth and membrane-less (highest PSNR, lowest F1).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
from torch import nn

from vemrestore.diffusion import make_scheduler, sample, save_scheduler_config
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import register_method
from vemrestore.methods._trained import VALIDATION_BATCHES, FitOptions, NormalizedMethod
from vemrestore.methods.priors import apply_prior
from vemrestore.methods.slices.base import SliceMethod
from vemrestore.methods.slices.config import DiffusionSlicesConfig
from vemrestore.methods.slices.damage import SliceDamageMap
from vemrestore.methods.slices.interp import fill_flow, fill_linear, runs_meeting
from vemrestore.methods.slices.pairs import (
    NUM_INPUTS,
    PackedDenoiser,
    WindowSampler,
    gap_positions,
    joint_and_heads_loss,
)
from vemrestore.models.anisotropic3d import AnisotropicDenoiser3D
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import fixed_validation, holdout_sections

__all__ = ["DiffusionSlices"]

logger = logging.getLogger(__name__)

# Stacks shorter than this have no section 5 and train without validation.
_MIN_HOLDOUT = 6
# Side of the square tiles from which the sampling noise is drawn, seeded by position.
_NOISE_TILE = 64
# The config fields that size the network (``AnisotropicDenoiser3D`` options of the same name).
_NETWORK_OPTIONS = {"num_context", "base_channels", "depth", "num_heads", "attention_heads"}


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
class DiffusionSlices(SliceMethod, NormalizedMethod):
    """Conditional diffusion restorer of missing sections and masked regions.

    Parameters
    ----------
    config : DiffusionSlicesConfig
        Network, training (``train``) and sampling (``inference``) options.

    Attributes
    ----------
    damage : SliceDamageMap or None
        The voxels to restore (``set_damage``); it travels with the pickled method.
    normalization : PercentileNormalization or None
        Of the undamaged sections trained on (None until trained or loaded).

    Examples
    --------
    >>> from vemrestore.methods import BlockRequest
    >>> config = DiffusionSlicesConfig(base_channels=4, attention_heads=2, depth=1,
    ...                                inference={"num_inference_steps": 2},
    ...                                train={"num_steps": 2, "patch_size": 16, "batch_size": 2,
    ...                                       "device": "cpu"})
    >>> method = DiffusionSlices(config)
    >>> stack = np.random.default_rng(0).random((8, 16, 16), dtype=np.float32)
    >>> method = method.fit(Volume(stack), progress=False)
    >>> method.set_damage(SliceDamageMap.build(stack.shape, missing=[3]))
    >>> request = BlockRequest((0, 0, 0), tuple(slice(0, n) for n in stack.shape))
    >>> out = method.predict_block(stack, request)["restored"]
    >>> bool((out[:3] == stack[:3]).all()), out.shape
    (True, (8, 16, 16))
    """

    name = "slices-diffusion"
    # The damage map travels with the method (dask.distributed workers need it).
    pickled_attributes = ("damage",)
    config: DiffusionSlicesConfig

    def __init__(self, config: DiffusionSlicesConfig) -> None:
        super().__init__(config)
        self.context = config.num_context
        self._scheduler: Any = None

    # -- state ---------------------------------------------------------------

    @property
    def halo(self) -> int:
        return self.config.inference.halo

    @property
    def lateral_multiple(self) -> int:
        # Keep the network's pooling grid aligned with the whole stack's.
        return self.config.size_multiple

    def build_networks(self) -> dict[str, nn.Module]:
        cfg = self.config
        size = cfg.model_dump(include=_NETWORK_OPTIONS)
        return {"net": AnisotropicDenoiser3D(NUM_INPUTS, patch_size=cfg.stem_patch, **size)}

    def _packed(self, networks: dict[str, nn.Module]) -> PackedDenoiser:
        residual = self.config.diffusion.prediction_type == "sample"
        return PackedDenoiser(networks["net"], residual=residual)  # type: ignore[arg-type]

    @property
    def model(self) -> PackedDenoiser | None:
        """The trained network wrapped for training and sampling (None before ``fit``/load)."""
        return None if self.networks is None else self._packed(self.networks)

    @property
    def scheduler(self) -> Any:
        """The DDIM scheduler of ``config.diffusion`` (made once)."""
        if self._scheduler is None:
            self._scheduler = make_scheduler(self.config.diffusion)
        return self._scheduler

    def run_fingerprint(self) -> dict[str, Any]:
        """The damage map's and the weights' digests: a resumed run restores alike."""
        return {**SliceMethod.run_fingerprint(self), **NormalizedMethod.run_fingerprint(self)}

    # -- training ------------------------------------------------------------

    def fit(
        self, volume: Volume, *, damage: SliceDamageMap | None = None, **options: Unpack[FitOptions]
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
        **options
            ``checkpoint_dir``, ``resume``, ``progress`` (``FitOptions``).

        Returns
        -------
        DiffusionSlices
            ``self``, trained; ``train_result.val_losses`` score the held-out
            sections (empty when none could be held out).

        Raises
        ------
        UserInputError
            If there are too few undamaged sections or they are smaller than the patch.
        """
        cfg = self.config
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
        # Before the samplers: a wrong prior is reported before minutes of flow estimates.
        networks = self.seeded_networks()
        if cfg.prior is not None:
            self.prior_record = apply_prior(networks["net"], cfg.prior, self.name)
            trained_on = self.prior_record.get("config", {}).get("estimate", "linear")
            if trained_on != cfg.estimate:
                raise UserInputError(
                    f"the slices-diffusion prior {cfg.prior!r} corrects estimate="
                    f"{trained_on!r}, not {cfg.estimate!r}; set estimate={trained_on!r} or "
                    "train from scratch (no prior)"
                )
        is_val = np.zeros(num, bool)
        is_val[holdout_sections(num, minimum=_MIN_HOLDOUT)[1]] = True
        stack = volume.to_numpy()
        normalization = PercentileNormalization.from_data(stack[usable])
        sections = 2.0 * normalization.apply(stack) - 1.0
        windows = {
            "usable": usable,
            "num_context": cfg.num_context,
            "max_gap": cfg.max_gap,
            "patch_size": cfg.train.patch_size,
            "region_probability": cfg.region_probability,
            "scheduler": self.scheduler,
            "estimate": cfg.estimate,
            "progress": options.get("progress", True),
        }
        sampler = WindowSampler(sections, targets=usable & ~is_val, **windows)
        train = cfg.train
        try:
            val_sampler = WindowSampler(sections, targets=usable & is_val, **windows)
        except UserInputError:
            val_sampler = None
            # A fine-tune's early stopping needs held-out sections: train all its steps instead.
            train = train.model_copy(update={"patience": None})
            logger.warning(
                "no validation sections available; training %d steps without validation",
                train.num_steps,
            )
        validate = None
        if val_sampler is not None:
            val_rng = np.random.default_rng([cfg.train.seed, 1])
            batches = [
                val_sampler.sample_batch(val_rng, cfg.train.batch_size)
                for _ in range(VALIDATION_BATCHES)
            ]
            validate = fixed_validation(batches, joint_and_heads_loss)
        self.train_result = self.train_network(
            self._packed(networks), sampler, joint_and_heads_loss, validate, config=train, **options
        )
        self.set_trained(networks, normalization=normalization)
        return self

    # -- prediction ----------------------------------------------------------

    def _restore(
        self, block: np.ndarray, mask: np.ndarray, origin: tuple[int, ...], z_out: slice
    ) -> np.ndarray:
        normalization = self.require_normalization()
        if self.config.estimate == "flow":
            filled = fill_flow(block, mask, z_out)
        else:
            filled = fill_linear(block, mask)
        x = 2.0 * normalization.apply(filled) - 1.0
        c = self.context
        for a, b in runs_meeting(mask, z_out):
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
        options = self.config.inference
        device = self.inference_device()
        model = self._packed(self.require_trained())
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
            with self.inference_context(device):
                joint, _ = model.denoise(inputs, t)
            return joint

        total = torch.zeros(shape, device=device)
        for k in range(options.num_samples):

            def noise_fn(draw: int, size: tuple[int, ...], k: int = k) -> torch.Tensor:
                noise = _position_noise(
                    options.seed + k, draw, z_index, yx_origin[0], yx_origin[1], *est.shape[1:]
                )
                return torch.from_numpy(noise).reshape(size)

            total += sample(
                denoise,
                scheduler=self.scheduler,
                num_steps=options.num_inference_steps,
                init=est_t,
                strength=options.strength,
                known=est_t,
                known_mask=~unk_t,
                noise_fn=noise_fn,
                device=device,
            )
        result = (total / options.num_samples)[0, 0].cpu().numpy()
        return result[:, :height, :width]

    # -- persistence ---------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``config.json``, ``weights.pt``, ``normalization.json``, ``scheduler_config.json``.

        ``training.json`` (loss history) is added when the method was trained
        in this session.
        """
        super().save(path)
        save_scheduler_config(self.config.diffusion, Path(path))
