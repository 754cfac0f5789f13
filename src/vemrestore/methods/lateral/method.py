"""The lateral method: network, losses, training and blockwise prediction.

Prediction runs slice by slice on blocks in Y, X with a halo that covers the
network's reach (``EdgeAttentionSRNet.context``, unless ``inference.halo``
says otherwise), block starts on multiples of the attention window, so
blockwise results equal whole-slice results.
"""

from __future__ import annotations

import functools
from typing import Any, Unpack

import numpy as np
import torch
from torch import nn

from vemrestore.degrade import LateralDegradation, PoissonGaussianNoise
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import RESTORED, BlockRequest, register_method
from vemrestore.methods._trained import FitOptions, TrainedMethod
from vemrestore.methods.lateral.config import LateralConfig
from vemrestore.methods.lateral.pairs import (
    PairSampler,
    added_noise,
    as_stack,
    check_voxel_sizes,
    denoise_reference,
    estimate_noise,
    register_pair,
)
from vemrestore.models.edge_attention import EdgeAttentionSRNet
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import fixed_validation, holdout_sections, pixel_loss

__all__ = ["LateralMethod"]

# Name of the (only) network among ``TrainedMethod.networks``.
NETWORK = "srnet"
# The config fields that size the network (``EdgeAttentionSRNet`` options of the same name).
_NETWORK_OPTIONS = {
    "channels",
    "num_transformer_blocks",
    "num_residual_blocks",
    "window_size",
    "num_heads",
    "num_wavelet_levels",
}
# Stacks with fewer slices hold none out for validation.
_MIN_VALIDATION_SLICES = 4


class _TwoInputs(nn.Module):
    """Runs the network on both input channels (input, noisier input) in one batch."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = self.net(torch.cat([x[:, :1], x[:, 1:]], dim=0))
        return torch.cat([out[:n], out[n:]], dim=1)


def _noisier_noisy_loss(name: str, noisier_weight: float, consistency_weight: float) -> Any:
    loss = pixel_loss(name)

    def loss_fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        plain, noisier = prediction[:, :1], prediction[:, 1:]
        return (
            loss(plain, target)
            + noisier_weight * loss(noisier, target)
            + consistency_weight * loss(noisier, plain.detach())
        )

    return loss_fn


def _lateral_window(s: slice, f: int, halo: int, multiple: int, size: int) -> slice:
    """LR range an HR output range needs, widened by ``halo`` and aligned down to ``multiple``."""
    lo = max(s.start // f - halo, 0) // multiple * multiple
    hi = min(-(-s.stop // f) + halo, size)
    return slice(lo, hi)


@register_method("lateral", LateralConfig)
class LateralMethod(TrainedMethod):
    """Lateral super-resolution (x2, x3, x4) and denoising (x1) of XY slices.

    Parameters
    ----------
    config : LateralConfig

    Attributes
    ----------
    input_norm, output_norm : PercentileNormalization or None
        Normalisation of the LR inputs and of the HR outputs (None until
        trained or loaded); saved in ``normalization.json``.
    pair_record : dict
        What the last ``fit`` found about its pairs (noise models, registration
        shifts); part of ``training_record()`` and ``training.json``.

    Examples
    --------
    >>> import numpy as np
    >>> from vemrestore.io._volume import Volume
    >>> from vemrestore.methods import create_method
    >>> method = create_method("lateral", scale_factor=2, channels=8, num_heads=2,
    ...                        train={"num_steps": 2, "patch_size": 16, "batch_size": 2})
    >>> hr = Volume(np.random.default_rng(0).random((2, 64, 64), dtype=np.float32) * 100)
    >>> method = method.fit(hr, progress=False)
    >>> method.output_shape((2, 40, 40))
    (2, 80, 80)
    """

    name = "lateral"
    state_files = ("normalization.json",)
    config: LateralConfig

    def __init__(self, config: LateralConfig) -> None:
        super().__init__(config)
        self.pair_record: dict[str, Any] = {}
        self.input_norm: PercentileNormalization | None = None
        self.output_norm: PercentileNormalization | None = None

    # -- state ---------------------------------------------------------------

    def build_networks(self) -> dict[str, nn.Module]:
        cfg = self.config
        return {
            NETWORK: EdgeAttentionSRNet(
                cfg.scale_factor, **cfg.model_dump(include=_NETWORK_OPTIONS)
            )
        }

    @property
    def model(self) -> EdgeAttentionSRNet | None:
        """The trained network (None before ``fit`` or ``load_state``)."""
        return None if self.networks is None else self.networks[NETWORK]  # type: ignore[return-value]

    def state_json(self) -> dict[str, Any]:
        input_norm, output_norm = self._require_norms()
        return {
            "normalization.json": {"input": input_norm.to_dict(), "output": output_norm.to_dict()}
        }

    def load_state_json(self, files: dict[str, Any]) -> None:
        norms = files["normalization.json"]
        self.input_norm = PercentileNormalization.from_dict(norms["input"])
        self.output_norm = PercentileNormalization.from_dict(norms["output"])

    def training_record(self) -> dict[str, Any] | None:
        """Loss history, network config, noise models and registration of the last ``fit``."""
        record = super().training_record()
        return None if record is None else {**record, **self.pair_record}

    def _require_norms(self) -> tuple[PercentileNormalization, PercentileNormalization]:
        self.require_trained()
        assert self.input_norm is not None and self.output_norm is not None  # set with the net
        return self.input_norm, self.output_norm

    # -- training ------------------------------------------------------------

    def fit(
        self,
        volume: Volume | np.ndarray,
        *,
        lr: Volume | np.ndarray | None = None,
        **options: Unpack[FitOptions],
    ) -> LateralMethod:
        """Train on HR slices ``volume`` (and LR slices ``lr``).

        Parameters
        ----------
        volume : Volume or numpy.ndarray, shape (Z, Y, X) or (Y, X)
            The high-resolution slices (may be noisy), in input intensity units.
        lr : Volume or numpy.ndarray, optional
            ``pairs="real"``: the LR acquisitions of the same slices, shape
            (Z, Y // f, X // f) (registered here). ``pairs="synthetic"``: real
            LR data (any shape) from which the LR noise model is estimated.
        **options
            ``checkpoint_dir``, ``resume``, ``progress`` (``FitOptions``).

        Returns
        -------
        LateralMethod
            ``self``, trained; ``pair_record`` holds the noise models and
            registration shifts found.

        Raises
        ------
        UserInputError
            If ``pairs="real"`` without ``lr``, on mismatched shapes, or if the
            slices are smaller than the patch size.
        """
        cfg = self.config
        f = cfg.scale_factor
        hr = as_stack(volume, "hr")
        lr_stack = None if lr is None else as_stack(lr, "lr")
        if lr is not None:
            check_voxel_sizes(lr, volume, f)
        if cfg.pairs == "real" and lr_stack is None:
            raise UserInputError(
                "pairs='real' needs the LR acquisitions (pass lr=..., or use pairs='synthetic' "
                "to simulate them from the HR slices)"
            )
        record: dict[str, Any] = {}
        sampler_options: dict[str, Any] = {}
        # HR noise: to denoise the reference, and (synthetic pairs) to know how
        # much noise binning already carries.
        hr_noise = None
        if cfg.reference == "denoised" or cfg.pairs == "synthetic":
            hr_noise = estimate_noise(hr)
        lr_noise = None
        if cfg.noise_gain is not None:
            lr_noise = PoissonGaussianNoise(gain=cfg.noise_gain, sigma=cfg.noise_sigma)  # type: ignore[arg-type]
        elif cfg.pairs == "synthetic" or cfg.objective == "noisier-noisy":
            lr_noise = hr_noise if lr_stack is None else estimate_noise(lr_stack)
        if cfg.pairs == "real":
            registration = register_pair(
                lr_stack,  # type: ignore[arg-type]
                hr,
                f,
                tolerance=cfg.registration_tolerance,
            )
            lr_stack, hr = registration.lr, registration.hr
            record["registration_shifts_lr_px"] = registration.shifts.round(3).tolist()
            record["registration_margin_lr_px"] = registration.margin
            input_norm = PercentileNormalization.from_data(lr_stack)
            sampler_options["lr"] = lr_stack
        else:
            hr = LateralDegradation(f).crop(hr)
            added = added_noise(lr_noise, hr_noise, f)  # type: ignore[arg-type]
            sampler_options.update(
                source=hr,
                degradation=LateralDegradation(f, psf_sigma=cfg.psf_sigma),
                added_noise=added,
            )
            record["added_noise"] = None if added is None else vars(added)
        output_norm = PercentileNormalization.from_data(hr)
        if cfg.pairs == "synthetic":
            input_norm = output_norm
        target = hr
        if cfg.reference == "denoised":
            target = denoise_reference(hr, hr_noise.gain, hr_noise.sigma)  # type: ignore[union-attr]
        record["lr_noise"] = None if lr_noise is None else vars(lr_noise)
        record["hr_noise"] = None if hr_noise is None else vars(hr_noise)

        train_ids, val_ids = holdout_sections(hr.shape[0], minimum=_MIN_VALIDATION_SLICES)
        common = {
            "target": target,
            "scale_factor": f,
            "patch_size": cfg.train.patch_size,
            "input_norm": input_norm,
            "output_norm": output_norm,
            **sampler_options,
        }
        networks = self.seeded_networks()
        net = networks[NETWORK]
        loss = pixel_loss(cfg.train.loss)
        validate = None
        if val_ids.size:
            val_batches = PairSampler(slice_ids=val_ids, **common).validation_batches(cfg.train)
            # The trained model may wrap ``net`` (noisier-noisy); the score is ``net``'s own.
            validate = fixed_validation(val_batches, loss, network=net)
        if cfg.objective == "noisier-noisy":
            common["noisier"] = PoissonGaussianNoise(
                gain=lr_noise.gain * cfg.noisier_strength**2,  # type: ignore[union-attr]
                sigma=lr_noise.sigma * cfg.noisier_strength,  # type: ignore[union-attr]
            )
        sampler = PairSampler(slice_ids=train_ids, **common)
        if cfg.objective == "noisier-noisy":
            trained: nn.Module = _TwoInputs(net)
            loss_fn = _noisier_noisy_loss(
                cfg.train.loss, cfg.noisier_weight, cfg.consistency_weight
            )
        else:
            trained, loss_fn = net, loss
        self.train_result = self.train_network(trained, sampler, loss_fn, validate, **options)
        self.set_trained(
            networks, input_norm=input_norm, output_norm=output_norm, pair_record=record
        )
        return self

    # -- geometry ------------------------------------------------------------

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        z, y, x = input_shape
        f = self.config.scale_factor
        return (z, f * y, f * x)

    def output_voxel_size(
        self, voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        z, y, x = voxel_size
        f = self.config.scale_factor
        return (z, y / f, x / f)

    def output_translation(
        self, translation: tuple[float, float, float], voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        """``Method.output_translation``: an input pixel covers ``f`` x ``f`` output pixels,
        so output pixel 0's centre sits ``(f - 1) / (2 f)`` input pixels before it."""
        z, y, x = translation
        shift = (self.config.scale_factor - 1) / (2 * self.config.scale_factor)
        return (z, y - shift * voxel_size[1], x - shift * voxel_size[2])

    @functools.cached_property
    def network_context(self) -> int:
        """LR pixels each side that can change an output pixel (the network's reach)."""
        return self.seeded_networks()[NETWORK].context  # type: ignore[return-value]

    @property
    def halo(self) -> int:
        """LR pixels of context each side of an output region: ``inference.halo``,
        or the network's reach when that is None."""
        halo = self.config.inference.halo
        return self.network_context if halo is None else halo

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        zs, ys, xs = output_region
        _, height, width = input_shape
        f, multiple, halo = self.config.scale_factor, self.config.window_size, self.halo
        return (
            slice(zs.start, zs.stop),
            _lateral_window(ys, f, halo, multiple, height),
            _lateral_window(xs, f, halo, multiple, width),
        )

    # -- prediction ----------------------------------------------------------

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        """``Method.predict_block`` from a block of LR slices: the restored HR slices."""
        input_norm, output_norm = self._require_norms()
        model = self.require_trained()[NETWORK]
        device = self.inference_device()
        f = self.config.scale_factor
        zs, ys, xs = request.output_region
        z0, y0, x0 = request.input_start
        _, height, width = block.shape
        y_win = _lateral_window(ys, f, self.halo, self.config.window_size, y0 + height)
        x_win = _lateral_window(xs, f, self.halo, self.config.window_size, x0 + width)
        if y_win.start < y0 or x_win.start < x0:
            raise ValueError(
                f"block starting at {request.input_start} lacks the context of output region "
                f"{request.output_region} (use input_region to read blocks)"
            )
        planes = input_norm.apply(
            block[
                zs.start - z0 : zs.stop - z0,
                y_win.start - y0 : y_win.stop - y0,
                x_win.start - x0 : x_win.stop - x0,
            ]
        )
        rows = slice(ys.start - f * y_win.start, ys.stop - f * y_win.start)
        cols = slice(xs.start - f * x_win.start, xs.stop - f * x_win.start)
        out = np.empty(request.output_shape, np.float32)
        step = self.config.inference.batch_size
        for start in range(0, planes.shape[0], step):
            x = torch.from_numpy(np.ascontiguousarray(planes[start : start + step, None]))
            with self.inference_context(device):
                restored = model(x.to(device))
            out[start : start + step] = restored[:, 0, rows, cols].float().cpu().numpy()
        return {RESTORED: output_norm.invert(out)}
